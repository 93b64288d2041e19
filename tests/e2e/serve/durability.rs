//! Nothing lost, nothing doubled: `kill -9` under load, SIGTERM with events in flight, and
//! back-pressure's 503s with `Retry-After`.

use super::*;

/// A client that retries a refused or failed request with the same body (and so the same
/// messageId), as Segment's libraries do — for [`LONG`] at most: a server that never comes back
/// fails the test instead of hanging it.
async fn send_until_accepted(base: &str, ev: &Value) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let last = match reqwest::Client::new()
            .post(format!("{base}/v1/identify"))
            .basic_auth("wk", Some(""))
            .json(ev)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("failed: {e}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ev} not accepted within {LONG:?}; the last attempt {last}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_mid_load_loses_nothing_and_doubles_nothing() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let mut s = ServerProc::start(dir.path(), &[], &[]).await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (people, updates) = (40, 5);
    let mut tasks = Vec::new();
    for p in 0..people {
        let (base, acked) = (s.base(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for u in 0..updates {
                // Ten companies, so people share leads; each person's title changes each time.
                let ev = identify(
                    &format!("u{p}"),
                    &format!("p{p}@corp.io"),
                    &format!("c{}", p % 10),
                    &format!("title {u}"),
                );
                send_until_accepted(&base, &ev).await;
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    wait_for("a third of the load acknowledged", LONG, || {
        let a = acked.clone();
        async move { a.load(std::sync::atomic::Ordering::Relaxed) >= people * updates / 3 }
    })
    .await;
    s.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.restart().await;
    for t in tasks {
        t.await.unwrap();
    }
    wait_for("every accepted event delivered", LONG, || {
        queue_drained(&s, "acme")
    })
    .await;
    let st = sim.state().await;
    let ls = leads(&st);
    assert_eq!(ls.len(), 10, "one lead per company, no duplicate: {st}");
    let cs = contacts(&st);
    assert_eq!(cs.len(), people, "one contact per person, no duplicate");
    for c in &cs {
        assert_eq!(
            c["title"],
            format!("title {}", updates - 1),
            "each person's last title wins: {c}"
        );
    }
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_events_accepted_total", "instance=\"acme\""),
        (people * updates) as f64,
        "each event accepted once (retries after the kill were deduplicated)"
    );
    assert_balanced(&m, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_503_and_not_ready_while_in_flight_events_finish_and_the_rest_stays_queued()
{
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    // Close answers slowly, so events are in flight when SIGTERM comes and most still queued.
    sim.faults(json!({"latency_ms": 700})).await;
    let mut s = ServerProc::start(dir.path(), &["--grace", "20s", "--concurrency", "2"], &[]).await;
    for i in 0..30 {
        assert_eq!(
            post(
                &s.base(),
                "/v1/identify",
                Some("wk"),
                &identify(&format!("u{i}"), &format!("u{i}@x.io"), "c1", "t")
            )
            .await
            .0,
            200
        );
    }
    sim.wait_writing().await;
    s.signal_term();
    let at_signal = contacts(&sim.state().await).len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the grace period the server still answers: intake 503 with Retry-After (clients
    // retry), /readyz 503 (load balancers drain), instead of refusing connections.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/identify", s.base()))
        .basic_auth("wk", Some(""))
        .json(&identify("late", "late@x.io", "c1", "t"))
        .send()
        .await
        .expect("still answering during the grace period");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "shutting_down", "{body}");
    let ready = http
        .get(format!("{}/readyz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let code = s.wait_exit(LONG);
    assert_eq!(code, Some(0), "a clean exit:\n{}", s.log());
    let log = s.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("grace period over"),
        "in-flight events finished in time: {log}"
    );
    // Every event Close saw was recorded as applied before the exit: none was cut off in flight.
    let written = contacts(&sim.state().await).len();
    let q = rusqlite::Connection::open(dir.path().join("data/queue.db")).unwrap();
    let applied: i64 = q
        .query_row(
            "SELECT coalesce(sum(n), 0) FROM counters WHERE instance = 'acme' AND name = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(q);
    assert!(
        written > at_signal,
        "events in flight at the signal finished during the grace period ({at_signal} written at the signal, {written} at the exit)"
    );
    assert_eq!(
        applied as usize, written,
        "in-flight events finished and were recorded"
    );
    assert!(written < 30, "the rest stays queued");
    sim.faults(json!({"latency_ms": 0})).await;
    s.restart().await;
    wait_for("the rest delivered after the restart", LONG, || {
        queue_drained(&s, "acme")
    })
    .await;
    assert_eq!(contacts(&sim.state().await).len(), 30);
    assert_balanced(&s.metrics().await, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn back_pressure_answers_503_with_retry_after_and_drops_nothing() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    sim.faults(json!({"error_rate": 1.0})).await;
    let s = ServerProc::start(
        dir.path(),
        &["--max-queue", "5", "--close-attempts", "1"],
        &[],
    )
    .await;
    for i in 0..5 {
        let (st, _) = post(
            &s.base(),
            "/v1/identify",
            Some("wk"),
            &identify(&format!("u{i}"), &format!("u{i}@x.io"), "c1", "t"),
        )
        .await;
        assert_eq!(st, 200);
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/identify", s.base()))
        .basic_auth("wk", Some(""))
        .json(&identify("u5", "u5@x.io", "c1", "t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "queue_full", "{body}");
    // Close recovers: the five accepted events are delivered, and intake opens again.
    sim.faults(json!({"error_rate": 0.0})).await;
    wait_for("the queue to drain", LONG, || queue_drained(&s, "acme")).await;
    assert_eq!(contacts(&sim.state().await).len(), 5);
    let (st, _) = post(
        &s.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u5", "u5@x.io", "c1", "t"),
    )
    .await;
    assert_eq!(st, 200);

    // A data directory short of space (here: a minimum no disk has) refuses with 503 too.
    let dir2 = tempfile::tempdir().unwrap();
    acme(dir2.path(), &sim.api());
    let s2 = ServerProc::start(dir2.path(), &["--min-free-disk-mib", "999999999"], &[]).await;
    let (st, body) = post(
        &s2.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u9", "u9@x.io", "c1", "t"),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("disk_full")),
        "{body}"
    );
    assert!(metric(&s2.metrics().await, "closeflow_disk_free_bytes", "") > 0.0);
}
