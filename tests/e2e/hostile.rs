//! Hostile input at the edge, against the real server: every bad request gets a clear 4xx or a
//! closed connection, odd-but-valid events are settled without hurting anything, slow and
//! idle connections are cut. (A flood of unauthenticated requests has its own test binary,
//! `tests/flood`, so that nothing else runs beside it while it measures latency.)

use closeflow_e2e::procs::{ServerProc, SimProc, empty_org, metric, wait_for};
use closeflow_e2e::soak::workload::{self, WRITE_KEY, instance_yaml};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LONG: Duration = Duration::from_secs(90);

fn config(dir: &Path, sim: &SimProc) {
    let c = dir.join("config");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("soak.yaml"), instance_yaml(&sim.api())).unwrap();
}

async fn raw_post(base: &str, path: &str, body: Vec<u8>, auth: bool) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if auth {
        r = r.basic_auth(WRITE_KEY, Some(""));
    }
    let resp = r.send().await.expect("the server answers");
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

/// A valid identify with one field replaced by `value`.
fn with_field(field: &str, value: Value) -> Value {
    let mut e = json!({"type": "identify", "userId": "u_types", "messageId": format!("types-{field}-{value}"),
                       "timestamp": "2026-01-01T00:00:00Z", "sentAt": "2026-01-01T00:00:01Z",
                       "anonymousId": "a1", "context": {"ip": "1.2.3.4"}, "integrations": {},
                       "traits": {"email": "types@x.example", "title": "T", "company": {"id": "c_t", "name": "T"}},
                       "properties": {}, "event": "x"});
    let path: Vec<&str> = field.split('.').collect();
    let mut at = &mut e;
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = value;
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bodies_get_a_clear_4xx_and_odd_types_are_settled_without_harm() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &sim);
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let deep = |n: usize| {
        let mut b = "[".repeat(n).into_bytes();
        b.extend("]".repeat(n).bytes());
        b
    };
    let deep_object = {
        let mut t = String::from("{\"type\":\"identify\",\"traits\":");
        t.push_str(&"{\"a\":".repeat(5_000));
        t.push('1');
        t.push_str(&"}".repeat(5_001));
        t.into_bytes()
    };
    let mut bad_utf8 = b"{\"type\":\"identify\",\"userId\":\"".to_vec();
    bad_utf8.extend([0xff, 0xfe, 0xc3]);
    bad_utf8.extend(b"\"}");
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "deeply nested array",
            "/v1/batch",
            deep(100_000),
            400,
            "invalid_json",
        ),
        (
            "deeply nested event",
            "/v1/identify",
            deep_object,
            400,
            "invalid_json",
        ),
        (
            "a huge string",
            "/v1/track",
            serde_json::to_vec(&json!({"event": "x".repeat(400_000)})).unwrap(),
            400,
            "event_too_large",
        ),
        (
            "a huge number",
            "/v1/track",
            format!(
                "{{\"event\":\"x\",\"properties\":{{\"n\":1{}}}}}",
                "0".repeat(400)
            )
            .into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "an exponent out of range",
            "/v1/track",
            b"{\"event\":\"x\",\"n\":1e999999}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            "/v1/identify",
            bad_utf8,
            400,
            "invalid_json",
        ),
        (
            "a lone surrogate",
            "/v1/identify",
            b"{\"userId\":\"\\ud800\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "not JSON",
            "/v1/batch",
            b"\x00\x01\x02garbage".to_vec(),
            400,
            "invalid_json",
        ),
        ("empty", "/v1/identify", Vec::new(), 400, "invalid_json"),
        (
            "a batch that is a list",
            "/v1/batch",
            b"[1,2,3]".to_vec(),
            400,
            "not_a_batch",
        ),
        (
            "a batch of non-objects",
            "/v1/batch",
            b"{\"batch\":[1,\"x\",null]}".to_vec(),
            400,
            "invalid_events",
        ),
        (
            "batch is not a list",
            "/v1/batch",
            b"{\"batch\":{\"type\":\"track\"}}".to_vec(),
            400,
            "not_a_batch",
        ),
        (
            "type is a number",
            "/v1/batch",
            b"{\"batch\":[{\"type\":1}]}".to_vec(),
            400,
            "invalid_events",
        ),
        (
            "unknown type",
            "/v1/batch",
            b"{\"batch\":[{\"type\":\"evil\"}]}".to_vec(),
            400,
            "invalid_events",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let (st, reply) = raw_post(&s.base(), path, body, true).await;
        assert_eq!(
            (st, reply["code"].as_str()),
            (status, Some(code)),
            "{what}: {reply}"
        );
        assert!(
            reply["error"].as_str().is_some_and(|e| e.len() < 400),
            "{what}: a short sentence, not an echo: {reply}"
        );
    }
    // Unknown routes and methods: plain 4xx.
    let r = reqwest::get(format!("{}/v1/batch", s.base()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let (st, _) = raw_post(&s.base(), "/v2/../../etc/passwd", b"{}".to_vec(), true).await;
    assert_eq!(st, 404);
    // A writeKey of the wrong type, an Authorization header that is not Basic or not base64.
    let (st, r) = raw_post(
        &s.base(),
        "/v1/track",
        b"{\"event\":\"x\",\"writeKey\":42}".to_vec(),
        false,
    )
    .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (401, Some("unknown_write_key")),
        "{r}"
    );
    for auth in ["Basic !!!notbase64", "Bearer x", "Basic", "Basic //79/w=="] {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/track", s.base()))
            .header("authorization", auth)
            .body("{\"event\":\"x\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth}");
    }

    // Wrong types in every field of an otherwise valid event: accepted or refused by name,
    // then settled (applied, skipped or dead-lettered), never a crash.
    let odd = [
        json!(42),
        json!(true),
        json!(null),
        json!([1, 2]),
        json!({"x": {"y": 1}}),
        json!("a\u{0000}b"),
        json!(1e300),
        json!(-0.0),
    ];
    let fields = [
        "type",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "sentAt",
        "context",
        "integrations",
        "traits",
        "traits.email",
        "traits.title",
        "traits.company",
        "traits.company.id",
        "traits.company.name",
        "properties",
        "event",
    ];
    let mut accepted = 0;
    let mut batch = Vec::new();
    for f in fields {
        for v in &odd {
            batch.push(with_field(f, v.clone()));
        }
    }
    let (st, reply) = raw_post(
        &s.base(),
        "/v1/batch",
        serde_json::to_vec(&json!({"batch": batch})).unwrap(),
        true,
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    accepted += reply["accepted"].as_u64().unwrap();
    let rejected = reply["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(accepted as usize + rejected.len(), batch.len(), "{reply}");
    for r in &rejected {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(
            i / odd.len(),
            0,
            "only a wrong `type` is refused at intake: {r}"
        );
        assert_eq!(r["code"], "invalid_event");
    }
    wait_for("every odd event settled", LONG, || async {
        let m = s.metrics().await;
        metric(&m, "closeflow_events_accepted_total", "instance=\"soak\"") == accepted as f64
            && metric(&m, "closeflow_queue_depth", "instance=\"soak\"") == 0.0
    })
    .await;
    let m = s.metrics().await;
    let l = "instance=\"soak\"";
    assert_eq!(
        metric(&m, "closeflow_events_accepted_total", l),
        metric(&m, "closeflow_events_applied_total", l)
            + metric(&m, "closeflow_events_skipped_total", l)
            + metric(&m, "closeflow_events_dead_lettered_total", l),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "closeflow_events_dead_lettered_total",
            "reason=\"invalid_payload\""
        ) >= 1.0,
        "an object where a title should be is dead-lettered by name: {m}"
    );
    let log = s.log();
    assert!(!log.contains("panicked"), "{log}");
    let ready = reqwest::get(format!("{}/readyz", s.base())).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

/// Reads until the server answers or closes; `None` when it did neither within `limit`.
async fn read_until_closed(c: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).to_string()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn good_request(base: &str, n: usize) -> (u16, Duration) {
    workload::good_request(&reqwest::Client::new(), base, n).await
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_cut_and_the_limit_closes_the_excess_at_once() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &sim);
    let s = ServerProc::start(
        dir.path(),
        &[
            "--body-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--max-connections",
            "40",
        ],
        &[],
    )
    .await;
    let addr = format!("127.0.0.1:{}", s.port);

    // A body that trickles: 408 after the body timeout.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d2tfc29hazo=\r\nContent-Length: 200\r\n\r\n{\"event\":").await.unwrap();
    let t = Instant::now();
    let reply = read_until_closed(&mut c, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );

    // Headers that trickle: the connection is closed.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = read_until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a slow header is cut");

    // Idle connections: 60 open, none sending. The 20 past the limit of 40 are closed at once;
    // the other 40 when the header timeout passes; then a good request is served.
    let t = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..60 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        idle.push(tokio::spawn(async move {
            read_until_closed(&mut c, Duration::from_secs(10))
                .await
                .map(|_| t.elapsed())
        }));
    }
    let mut closed_after = Vec::new();
    for h in idle {
        closed_after.push(h.await.unwrap().expect("every idle connection is closed"));
    }
    let quick = closed_after
        .iter()
        .filter(|d| **d < Duration::from_millis(700))
        .count();
    assert!(
        quick >= 20,
        "the excess is closed at once: {closed_after:?}"
    );
    assert!(
        quick < 60,
        "connections within the limit wait for the timeout: {closed_after:?}"
    );
    let (st, _) = good_request(&s.base(), 0).await;
    assert_eq!(st, 200);
    let m = s.metrics().await;
    assert!(
        metric(&m, "closeflow_connections_refused_total", "") >= 20.0,
        "{m}"
    );
}
