//! Queue damage, end to end with the real server: a damaged queue file or record is set aside
//! and counted at startup and the server serves; a full queue answers 503 with Retry-After,
//! keeps running and loses no acknowledged event.

use closeflow_e2e::procs::{ServerProc, SimProc, contacts, empty_org, metric, post, wait_for};
use closeflow_e2e::soak::workload::{WRITE_KEY, instance_yaml};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn config(dir: &Path, sim: &SimProc) {
    let c = dir.join("config");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("soak.yaml"), instance_yaml(&sim.api())).unwrap();
}

fn person(i: usize) -> Value {
    json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("dm-{i}"),
           "traits": {"email": format!("u{i}@damage.example"), "title": "T",
                      "company": {"id": "c1", "name": "Company 1"}}})
}

async fn delivered(s: &ServerProc) -> bool {
    let m = s.metrics().await;
    metric(&m, "closeflow_events_accepted_total", "instance=\"soak\"") > 0.0
        && metric(&m, "closeflow_queue_depth", "instance=\"soak\"") == 0.0
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_records_and_a_damaged_file_are_set_aside_counted_and_the_server_serves() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &sim);
    // Close fails, so the events stay queued; then the server stops.
    sim.faults(json!({"error_rate": 1.0})).await;
    let mut s = ServerProc::start(dir.path(), &["--close-attempts", "1"], &[]).await;
    for i in 0..4 {
        assert_eq!(
            post(&s.base(), "/v1/identify", Some(WRITE_KEY), &person(i))
                .await
                .0,
            200
        );
    }
    assert_eq!(s.terminate(), Some(0));
    // One record's body is damaged on disk.
    let db = dir.path().join("data/queue.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(
        c.execute(
            "UPDATE events SET body = x'7b2274797065223affff' WHERE message_id = 'dm-2'",
            []
        )
        .unwrap(),
        1
    );
    drop(c);
    sim.faults(json!({})).await;
    s.restart().await;
    wait_for("the three good events delivered", LONG, || delivered(&s)).await;
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_queue_quarantined_total", "instance=\"soak\""),
        1.0,
        "{m}"
    );
    assert!(s.log().contains("unreadable queue records were set aside"));
    assert_eq!(contacts(&sim.state().await).len(), 3);
    // Counted as an outcome, so the totals still balance.
    let l = "instance=\"soak\"";
    assert_eq!(
        metric(&m, "closeflow_events_accepted_total", l),
        metric(&m, "closeflow_events_applied_total", l)
            + metric(&m, "closeflow_events_dead_lettered_total", l)
    );

    // Now the whole file: overwritten with garbage while the server is down.
    assert_eq!(s.terminate(), Some(0));
    std::fs::write(&db, b"definitely not a SQLite file ".repeat(300)).unwrap();
    s.restart().await;
    let log = s.log();
    assert!(
        log.contains("the queue file was unreadable: moved aside"),
        "{log}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for inspection");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_queue_quarantined_total", "instance=\"\""),
        1.0,
        "the file set aside is counted: {m}"
    );
    // And the fresh queue takes and delivers events.
    assert_eq!(
        post(&s.base(), "/v1/identify", Some(WRITE_KEY), &person(10))
            .await
            .0,
        200
    );
    wait_for("the new event delivered", LONG, || delivered(&s)).await;
    assert_eq!(contacts(&sim.state().await).len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after_and_loses_no_acknowledged_event() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &sim);
    let mut s = ServerProc::start(dir.path(), &["--max-queue-mib", "1"], &[]).await;
    let http = reqwest::Client::new();
    let mut acked = 0usize;
    let mut refusal = None;
    for b in 0..200 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                let mut p = person(b * 20 + i);
                p["traits"]["bio"] = json!("x".repeat(4000));
                p
            })
            .collect();
        let r = http
            .post(format!("{}/v1/batch", s.base()))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            acked += 20;
            continue;
        }
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        refusal = Some((status, retry_after, r.json::<Value>().await.unwrap()));
        break;
    }
    let (status, retry_after, body) = refusal.expect("the 1 MiB queue fills up");
    assert_eq!(status, 503, "{body}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().unwrap() > 0),
        "Retry-After"
    );
    assert_eq!(body["code"], "queue_full", "{body}");
    assert!(acked >= 60, "{acked} events fit before the limit");
    // Still up and answering, and every acknowledged event gets delivered.
    let ready = http
        .get(format!("{}/readyz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    wait_for("every acknowledged event delivered", LONG, || async {
        let m = s.metrics().await;
        metric(&m, "closeflow_events_applied_total", "instance=\"soak\"") == acked as f64
            && metric(&m, "closeflow_queue_depth", "instance=\"soak\"") == 0.0
    })
    .await;
    assert_eq!(contacts(&sim.state().await).len(), acked);
    assert!(!s.log().contains("panicked"));
    // Drained, the same limit takes events again: what was applied waits on nobody.
    let (st, _) = post(&s.base(), "/v1/identify", Some(WRITE_KEY), &person(99_999)).await;
    assert_eq!(st, 200);
    s.restart_with(&["--max-queue-mib", "8"]).await;
    let (st, _) = post(&s.base(), "/v1/identify", Some(WRITE_KEY), &person(99_998)).await;
    assert_eq!(st, 200);
}
