//! Intake over real HTTP: every route and auth form, limits and bad input answered item by item,
//! and a hundred concurrent identifies for one email making one lead.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_auth_form_is_accepted() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(dir.path(), &sim.api(), &["wk_web", "wk_server"], "test_key");
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let http = reqwest::Client::new();
    let routes = [
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "u1@a.io"}}),
        ),
        ("/v1/track", json!({"userId": "u1", "event": "Viewed"})),
        ("/v1/page", json!({"userId": "u1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Home"})),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "c9", "traits": {"name": "Nine"}}),
        ),
        ("/v1/alias", json!({"userId": "u1", "previousId": "anon"})),
        (
            "/v1/i",
            json!({"userId": "u2", "traits": {"email": "u2@a.io"}}),
        ),
        ("/v1/t", json!({"userId": "u2", "event": "Viewed"})),
        ("/v1/p", json!({"userId": "u2"})),
        ("/v1/s", json!({"userId": "u2"})),
        ("/v1/g", json!({"userId": "u2", "groupId": "c8"})),
        ("/v1/a", json!({"userId": "u2", "previousId": "anon2"})),
        (
            "/v1/batch",
            json!({"batch": [{"type": "track", "userId": "u3", "event": "x"}]}),
        ),
        (
            "/v1/b",
            json!({"batch": [{"type": "track", "userId": "u3", "event": "y"}]}),
        ),
        (
            "/v1/import",
            json!({"batch": [{"type": "identify", "userId": "u4", "traits": {"email": "u4@a.io"}}]}),
        ),
    ];
    for (i, (path, body)) in routes.iter().enumerate() {
        let key = if i % 2 == 0 { "wk_web" } else { "wk_server" };
        // Alternate the three auth forms and both content types.
        let mut body = body.clone();
        let mut req = http.post(format!("{}{path}", s.base()));
        match i % 3 {
            0 => req = req.basic_auth(key, Some("")),
            1 => body["writeKey"] = json!(key),
            _ => {
                req = req.basic_auth(key, Some(""));
                body["writeKey"] = json!(key);
            }
        }
        let ct = if i % 2 == 0 {
            "application/json"
        } else {
            "text/plain"
        };
        let r = req
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {reply}");
        assert_eq!(reply["accepted"], 1, "{path}: {reply}");
    }
    // Unauthenticated: 401 with a named reason, never echoing the key.
    let (st, reply) = post(&s.base(), "/v1/track", None, &json!({"event": "x"})).await;
    assert_eq!(
        (st, reply["code"].as_str()),
        (401, Some("missing_write_key"))
    );
    let (st, reply) = post(
        &s.base(),
        "/v1/track",
        Some("wk_guess"),
        &json!({"event": "x"}),
    )
    .await;
    assert_eq!(
        (st, reply["code"].as_str()),
        (401, Some("unknown_write_key"))
    );
    assert!(!reply.to_string().contains("wk_guess"));
    // A single-event route refuses a body whose type contradicts it.
    let (st, reply) = post(
        &s.base(),
        "/v1/identify",
        Some("wk_web"),
        &json!({"type": "track", "event": "x"}),
    )
    .await;
    assert_eq!((st, reply["code"].as_str()), (400, Some("type_mismatch")));

    wait_for("the queue to drain", LONG, || queue_drained(&s, "acme")).await;
    let state = sim.state().await;
    let emails: Vec<String> = contacts(&state)
        .iter()
        .flat_map(|c| c["emails"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["email"].as_str().map(str::to_string))
        .collect();
    for e in ["u1@a.io", "u2@a.io", "u4@a.io"] {
        assert!(emails.contains(&e.to_string()), "{e} in {emails:?}");
    }
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_events_accepted_total", "instance=\"acme\""),
        15.0
    );
    assert!(
        metric(
            &m,
            "closeflow_events_skipped_total",
            "reason=\"not_matched\""
        ) >= 8.0,
        "{m}"
    );
    assert_balanced(&m, "acme");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_bad_input_are_answered_precisely_and_good_items_are_kept() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let http = reqwest::Client::new();
    let send = |path: &'static str, body: Vec<u8>, gz: bool| {
        let mut r = http
            .post(format!("{}{path}", s.base()))
            .basic_auth("wk", Some(""))
            .header("content-type", "application/json");
        if gz {
            r = r.header("content-encoding", "gzip");
        }
        let r = r.body(body);
        async move {
            let resp = r.send().await.unwrap();
            let st = resp.status().as_u16();
            (st, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A good request in flight beside every bad one below must still be answered 200.
    let good = |n: usize| {
        serde_json::to_vec(&identify(
            &format!("g{n}"),
            &format!("g{n}@ok.io"),
            "c_ok",
            "Ok",
        ))
        .unwrap()
    };

    let big_event =
        json!({"type": "track", "event": "x", "properties": {"s": "x".repeat(33 * 1024)}});
    let (a, b) = tokio::join!(
        send("/v1/track", serde_json::to_vec(&big_event).unwrap(), false),
        send("/v1/identify", good(1), false)
    );
    assert_eq!(
        (a.0, a.1["code"].as_str()),
        (400, Some("event_too_large")),
        "{}",
        a.1
    );
    assert!(a.1["error"].as_str().unwrap().contains("32 KB"));
    assert_eq!(b.0, 200);

    let many: Vec<Value> = (0..400).map(|i| json!({"type": "track", "event": "x", "properties": {"pad": "y".repeat(1500), "i": i}})).collect();
    let (a, b) = tokio::join!(
        send(
            "/v1/batch",
            serde_json::to_vec(&json!({"batch": many})).unwrap(),
            false
        ),
        send("/v1/identify", good(2), false)
    );
    assert_eq!(
        (a.0, a.1["code"].as_str()),
        (400, Some("batch_too_large")),
        "{}",
        a.1
    );
    assert!(a.1["error"].as_str().unwrap().contains("500 KB"));
    assert_eq!(b.0, 200);

    let too_many: Vec<Value> = (0..2501)
        .map(|_| json!({"type": "track", "event": "x"}))
        .collect();
    let a = send(
        "/v1/batch",
        serde_json::to_vec(&json!({"batch": too_many})).unwrap(),
        false,
    )
    .await;
    assert_eq!(
        (a.0, a.1["code"].as_str()),
        (400, Some("too_many_events")),
        "{}",
        a.1
    );

    // A gzip bomb: 64 MB of zeros inside a small body is refused at the 500 KB limit.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1 << 20];
        e.write_all(b"{\"batch\": [").unwrap();
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    let (a, b) = tokio::join!(
        send("/v1/batch", bomb, true),
        send("/v1/identify", good(3), false)
    );
    assert_eq!(
        (a.0, a.1["code"].as_str()),
        (400, Some("batch_too_large")),
        "{}",
        a.1
    );
    assert_eq!(b.0, 200);

    let (st, r) = send("/v1/batch", b"{\"batch\": [".to_vec(), false).await;
    assert_eq!((st, r["code"].as_str()), (400, Some("invalid_json")), "{r}");
    assert!(r["error"].as_str().unwrap().contains("line 1"), "{r}");
    let (st, r) = send("/v1/batch", b"not gzip".to_vec(), true).await;
    assert_eq!((st, r["code"].as_str()), (400, Some("invalid_gzip")), "{r}");

    // gzip within the limit; a batch with bad items keeps the good ones and names the bad.
    let batch = json!({"batch": [
        identify("b1", "b1@ok.io", "c_ok", "One"),
        {"userId": "no-type"},
        "not an object",
        identify("b2", "b2@ok.io", "c_ok", "Two"),
        {"type": "track", "event": "x", "properties": {"s": "z".repeat(33 * 1024)}},
    ]});
    let (st, r) = send(
        "/v1/batch",
        gzip(&serde_json::to_vec(&batch).unwrap()),
        true,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["accepted"], 2);
    let rejected: Vec<(u64, &str)> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["index"].as_u64().unwrap(), x["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "invalid_event"),
            (2, "invalid_event"),
            (4, "event_too_large")
        ]
    );
    let (st, r) = send(
        "/v1/batch",
        serde_json::to_vec(&json!({"batch": [{"x": 1}]})).unwrap(),
        false,
    )
    .await;
    assert_eq!(
        (st, r["code"].as_str()),
        (400, Some("invalid_events")),
        "all bad: {r}"
    );

    wait_for("the good events to be applied", LONG, || async {
        let st = sim.state().await;
        contacts(&st).len() == 5
    })
    .await;
    let m = s.metrics().await;
    assert!(
        metric(
            &m,
            "closeflow_requests_rejected_total",
            "reason=\"batch_too_large\""
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "closeflow_events_rejected_total",
            "reason=\"event_too_large\""
        ),
        1.0
    );
    assert_balanced(&m, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_identifies_for_one_new_email_make_one_lead_and_one_contact() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let s = ServerProc::start(dir.path(), &["--concurrency", "16"], &[]).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let base = s.base();
        tasks.push(tokio::spawn(async move {
            let ev = json!({"type": "identify", "messageId": format!("same-{i}"),
                            "traits": {"email": "New.Person@Example.com", "name": "New Person", "title": format!("t{i}")}});
            post(&base, "/v1/identify", Some("wk"), &ev).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    wait_for("100 events delivered", LONG, || async {
        let m = s.metrics().await;
        metric(&m, "closeflow_events_applied_total", "instance=\"acme\"") == 100.0
    })
    .await;
    let st = sim.state().await;
    assert_eq!(leads(&st).len(), 1, "{st}");
    assert_eq!(contacts(&st).len(), 1, "{st}");
}
