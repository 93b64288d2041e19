//! `closeflow serve` run the way operators run it: `closeflow dlq` beside a running server, a
//! second process started on the same data directory, a restart with a smaller queue budget,
//! instance files renamed, one instance's Close down while another's is fine, events sent
//! without ids, admin paths probed. Each test reproduces a way the server used to break.

use crate::serve::{
    acme, acme_with, assert_balanced, identify, instance, wait_dead_letters, write_config,
};
use closeflow_e2e::procs::{
    ServerProc, SimProc, contacts, empty_org, free_port, leads, metric, post, wait_for,
};
use closeflow_e2e::{closeflow, closeflow_bin, text};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);

fn data_dir(dir: &Path) -> String {
    dir.join("data").to_str().unwrap().to_string()
}

async fn status_of(base: &str, key: &str, ev: &Value) -> (u16, Value) {
    post(base, "/v1/identify", Some(key), ev).await
}

/// `closeflow dlq replay` in another process while the server is idle used to leave the
/// server's in-memory depth one short; the replayed event's settle then took it below zero and
/// it wrapped: every write key answered 503 "18446744073709551615 events are waiting".
#[tokio::test(flavor = "multi_thread")]
async fn a_dlq_replay_from_the_cli_beside_an_idle_server_leaves_intake_open_and_the_depth_true() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    // A wrong Close key: each attempt is dead-lettered at once, so the replay dies again.
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let ev = identify("u1", "u1@x.io", "c1", "CTO");
    assert_eq!(status_of(&s.base(), "wk", &ev).await.0, 200);
    wait_dead_letters(&s, "acme", 1.0, "the event dead-lettered").await;
    // Watched through the file (`dlq list`), not `/metrics`: a scrape used to resynchronise
    // the wrapped depth and hide the bug until the next settle.
    let dead_id = || {
        let o = closeflow(&[
            "dlq",
            "list",
            "--format",
            "json",
            "--data-dir",
            &data_dir(dir.path()),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["dead_letters"][0]["id"].as_i64()
    };
    for _ in 1..=3 {
        let before = dead_id();
        let o = closeflow(&[
            "dlq",
            "replay",
            "--all",
            "--data-dir",
            &data_dir(dir.path()),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let start = Instant::now();
        // A replay is a new row: dead again under another id.
        while dead_id().is_none_or(|id| Some(id) == before) {
            assert!(start.elapsed() < LONG, "the replay dead-lettered again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The next request straight after: accepted, not 503.
        let (st, body) = status_of(
            &s.base(),
            "wk",
            &identify(&format!("r{}", before.unwrap_or(0)), "r@x.io", "c1", "t"),
        )
        .await;
        assert_eq!(
            st, 200,
            "intake stays open after a replay from the CLI: {body}"
        );
    }
    // Scrapes and intake go on: never a 503.
    for i in 0..10 {
        s.metrics().await;
        let (st, body) = status_of(
            &s.base(),
            "wk",
            &identify(&format!("n{i}"), &format!("n{i}@x.io"), "c1", "t"),
        )
        .await;
        assert_eq!(st, 200, "intake stays open: {body}");
    }
    wait_dead_letters(&s, "acme", 14.0, "the new events dead-lettered too").await;
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_queue_depth", "instance=\"acme\""),
        0.0,
        "{m}"
    );
    assert_balanced(&m, "acme");
}

/// Two servers on one data directory both delivered: 13–15 of 20 new people doubled.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_data_dir_exits_at_once_naming_the_holder() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    // Close answers slowly, so the first server is still delivering during its grace.
    sim.faults(json!({"latency_ms": 1500})).await;
    let mut first = ServerProc::start(dir.path(), &["--grace", "20s"], &[]).await;
    let pid = first.pid().unwrap();
    let second = |dir: &Path| {
        let start = Instant::now();
        let mut child = std::process::Command::new(closeflow_bin())
            .arg("serve")
            .arg("--config")
            .arg(dir.join("config"))
            .args(["--data-dir", &data_dir(dir)])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "a second server on the same data directory was still running after 10 s:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (child.wait_with_output().unwrap(), start.elapsed())
    };
    let (out, took) = second(dir.path());
    assert!(!out.status.success(), "the second server must not run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("in use by closeflow serve (pid {pid}")),
        "names the holder: {err}"
    );
    assert!(took < Duration::from_secs(3), "exits at once: {took:?}");
    // `dlq` and `capture` keep working beside the running server.
    let o = closeflow(&["dlq", "list", "--data-dir", &data_dir(dir.path())]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        status_of(&first.base(), "wk", &identify("u1", "u1@x.io", "c1", "t"))
            .await
            .0,
        200
    );
    let o = closeflow(&[
        "capture",
        "--data-dir",
        &data_dir(dir.path()),
        "--instance",
        "acme",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("m-u1-t"),
        "{}",
        text(&o)
    );
    // While the first one is in its grace period (an event in flight to a slow Close), a new
    // process is refused just the same.
    sim.wait_writing().await;
    first.signal_term();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (out, _) = second(dir.path());
    assert!(!out.status.success(), "refused during the grace period");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by"));
    assert_eq!(first.wait_exit(LONG), Some(0), "{}", first.log());
    // Once it is gone, the directory is free.
    sim.faults(json!({"latency_ms": 0})).await;
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    wait_for("delivered", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_applied_total",
            "instance=\"acme\"",
        ) == 1.0
    })
    .await;
    let st = sim.state().await;
    assert_eq!((leads(&st).len(), contacts(&st).len()), (1, 1));
}

/// After a restart with `--max-queue-mib` below what is waiting, delivery never drained: the
/// file's hard size limit refused the very writes that record outcomes.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_queue_budget_below_what_waits_refuses_intake_and_still_drains() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    sim.faults(json!({"error_rate": 1.0})).await;
    let mut s = ServerProc::start(dir.path(), &["--close-attempts", "1"], &[]).await;
    let http = reqwest::Client::new();
    for b in 0..15 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                let mut p = identify(
                    &format!("u{}", b * 20 + i),
                    &format!("u{}@x.io", b * 20 + i),
                    "c1",
                    "t",
                );
                p["traits"]["bio"] = json!("x".repeat(4000));
                p
            })
            .collect();
        let r = http
            .post(format!("{}/v1/batch", s.base()))
            .basic_auth("wk", Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // 300 events of 4 KB wait (1.2 MB); the restart allows 1 MiB.
    sim.faults(json!({"error_rate": 0.0})).await;
    s.restart_with(&["--max-queue-mib", "1"]).await;
    let (st, body) = status_of(&s.base(), "wk", &identify("late", "late@x.io", "c1", "t")).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("queue_full")),
        "{body}"
    );
    let start = Instant::now();
    loop {
        let r = http
            .get(format!("{}/metrics", s.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "metrics answer while draining");
        let m = r.text().await.unwrap();
        if metric(&m, "closeflow_events_applied_total", "instance=\"acme\"") == 300.0 {
            assert_eq!(
                metric(&m, "closeflow_queue_depth", "instance=\"acme\""),
                0.0
            );
            break;
        }
        assert!(start.elapsed() < LONG, "every queued event drains:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(contacts(&sim.state().await).len(), 300);
    // Drained, intake opens again; applied events kept for deduplication take no budget.
    let (st, body) = status_of(&s.base(), "wk", &identify("late", "late@x.io", "c1", "t")).await;
    assert_eq!(st, 200, "{body}");
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    let errors = log.lines().filter(|l| l.contains("\"ERROR\"")).count();
    assert!(
        errors == 0,
        "{errors} error lines after the restart:\n{log}"
    );
}

/// `cp a.yaml b.yaml; rm a.yaml` left `b.yaml` refused as a duplicate name (its key 401) until
/// it was edited, and the metrics called the deleted file valid and the live one invalid.
#[tokio::test(flavor = "multi_thread")]
async fn renaming_an_instance_file_keeps_its_intake_open_and_the_metrics_true() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title");
    write_config(dir.path(), "a.yaml", &yaml);
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let config = dir.path().join("config");
    std::fs::copy(config.join("a.yaml"), config.join("b.yaml")).unwrap();
    // While both are there, b.yaml is refused as a duplicate name and a.yaml keeps running.
    wait_for(
        "b.yaml refused as a duplicate",
        Duration::from_secs(10),
        || async {
            let m = s.metrics().await;
            m.lines()
                .any(|l| l.starts_with("closeflow_config_file_valid{") && l.contains("b.yaml\"} 0"))
        },
    )
    .await;
    let (st, _) = status_of(&s.base(), "wk", &identify("u1", "u1@x.io", "c1", "t")).await;
    assert_eq!(st, 200, "a.yaml still runs");
    std::fs::remove_file(config.join("a.yaml")).unwrap();
    wait_for("b.yaml takes over", Duration::from_secs(10), || async {
        let m = s.metrics().await;
        metric(&m, "closeflow_config_file_valid", "b.yaml") == 1.0 && !m.contains("a.yaml")
    })
    .await;
    let (st, body) = status_of(&s.base(), "wk", &identify("u2", "u2@x.io", "c1", "t")).await;
    assert_eq!(st, 200, "{body}");
    wait_for("both delivered", LONG, || async {
        contacts(&sim.state().await).len() == 2
    })
    .await;
    // A directory named like an instance file is warned about once, not every pass.
    std::fs::create_dir(config.join("x.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = s.log();
    let about_x: Vec<&str> = log.lines().filter(|l| l.contains("x.yaml")).collect();
    assert_eq!(about_x.len(), 1, "{about_x:#?}");
    assert!(about_x[0].contains("\"WARN\""), "{}", about_x[0]);
}

/// Identical events without a `messageId` were given one derived from their content and
/// merged for 24 h: plan=pro, plan=free, plan=pro ended at `free`.
#[tokio::test(flavor = "multi_thread")]
async fn identical_events_without_a_message_id_are_each_delivered() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    for (i, plan) in ["pro", "free", "pro"].iter().enumerate() {
        let mut ev = identify("u1", "u1@x.io", "c1", plan);
        ev.as_object_mut().unwrap().remove("messageId");
        let (st, body) = status_of(&s.base(), "wk", &ev).await;
        assert_eq!((st, body["accepted"].as_u64()), (200, Some(1)), "{body}");
        wait_for("applied", LONG, || async {
            metric(
                &s.metrics().await,
                "closeflow_events_applied_total",
                "instance=\"acme\"",
            ) == (i + 1) as f64
        })
        .await;
    }
    let st = sim.state().await;
    assert_eq!(contacts(&st).len(), 1);
    assert_eq!(contacts(&st)[0]["title"], "pro", "the last one sent wins");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_events_duplicate_total", "instance=\"acme\""),
        0.0
    );
}

/// `share`: how many of acme's events its share holds.
async fn per_instance_share(args: &[&str], bio: usize, share: std::ops::RangeInclusive<usize>) {
    let sim_a = SimProc::start(&empty_org()).await;
    let sim_b = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    crate::serve::two_instances(dir.path(), &sim_a, &sim_b);
    sim_a.faults(json!({"error_rate": 1.0})).await;
    let mut all = vec!["--close-attempts", "1"];
    all.extend_from_slice(args);
    let s = ServerProc::start(dir.path(), &all, &[]).await;
    // Acme's Close is down: its events pile up until its share is full.
    let mut accepted = 0;
    let refusal = loop {
        let mut ev = identify(
            &format!("a{accepted}"),
            &format!("a{accepted}@a.io"),
            "ca",
            "t",
        );
        ev["traits"]["bio"] = json!("x".repeat(bio));
        let (st, body) = status_of(&s.base(), "wk_a", &ev).await;
        if st != 200 {
            break (st, body);
        }
        accepted += 1;
        assert!(accepted < 2000, "acme's share never filled");
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert!(
        share.contains(&accepted),
        "acme's share held {accepted} events, not {share:?}"
    );
    assert_eq!(refusal.1["code"], "queue_full", "{}", refusal.1);
    assert!(
        refusal.1["error"].as_str().unwrap().contains("acme"),
        "{}",
        refusal.1
    );
    // Globex keeps 200 and its events reach its Close promptly, one by one.
    let mut latencies = Vec::new();
    for i in 0..15 {
        let sent = Instant::now();
        let (st, body) = status_of(
            &s.base(),
            "wk_b",
            &identify(&format!("b{i}"), &format!("b{i}@b.io"), "cb", "t"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        wait_for("globex's event applied", LONG, || async {
            contacts(&sim_b.state().await).len() == i + 1
        })
        .await;
        latencies.push(sent.elapsed());
        // And acme is still refused.
        assert_eq!(
            status_of(&s.base(), "wk_a", &identify("ax", "ax@a.io", "ca", "t"))
                .await
                .0,
            503
        );
    }
    latencies.sort();
    let (median, worst) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "globex delivery latency while acme's share is full: median {median:?}, worst {worst:?}"
    );
    // An event goes out in tens of milliseconds; the bound leaves room for a busy 2-core box.
    assert!(
        median < Duration::from_millis(500),
        "median {median:?} ({latencies:?})"
    );
    assert!(
        worst < Duration::from_secs(3),
        "worst {worst:?} ({latencies:?})"
    );
    assert_balanced(&s.metrics().await, "acme");
    assert_balanced(&s.metrics().await, "globex");
}

/// One instance's backlog used to refuse every source: `--max-queue` and the queue budget
/// counted all instances together.
#[tokio::test(flavor = "multi_thread")]
async fn one_instances_backlog_fills_only_its_share_of_max_queue() {
    // Two instances share 40 events: 20 each.
    per_instance_share(&["--max-queue", "40"], 0, 20..=20).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instances_backlog_fills_only_its_share_of_max_queue_mib() {
    // Two instances share 2 MiB: 1 MiB each, about 250 events of 4 KB.
    per_instance_share(&["--max-queue-mib", "2"], 4000, 200..=262).await;
}

/// With no admin token every `/admin…` path answers 404, and with one a request without it
/// gets 401 before anything else (a malformed id used to get 400 first).
#[tokio::test(flavor = "multi_thread")]
async fn admin_paths_answer_404_without_a_token_and_401_before_anything_else_with_one() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let http = reqwest::Client::new();
    let probes = [
        ("GET", "/admin/dlq"),
        ("GET", "/admin/dlq/not-a-number"),
        ("DELETE", "/admin/dlq/not-a-number"),
        ("POST", "/admin/dlq/not-a-number/replay"),
        ("POST", "/admin/dlq/replay"),
        ("GET", "/admin/cluster"),
        ("GET", "/admin/nothing-here"),
        ("PUT", "/admin/dlq"),
        ("GET", "/admin"),
    ];
    let send =
        |base: String, method: &'static str, path: &'static str, token: Option<&'static str>| {
            let http = http.clone();
            async move {
                let mut r = http.request(method.parse().unwrap(), format!("{base}{path}"));
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                r.send().await.unwrap().status().as_u16()
            }
        };
    let open = ServerProc::start(dir.path(), &[], &[]).await;
    for (m, p) in probes {
        assert_eq!(
            send(open.base(), m, p, Some("anything")).await,
            404,
            "{m} {p}"
        );
    }
    drop(open);
    let s = ServerProc::start(dir.path(), &[], &[("CLOSEFLOW_ADMIN_TOKEN", "admin_tok")]).await;
    for (m, p) in probes {
        assert_eq!(
            send(s.base(), m, p, None).await,
            401,
            "{m} {p} without a token"
        );
        assert_eq!(
            send(s.base(), m, p, Some("wrong")).await,
            401,
            "{m} {p} with a wrong token"
        );
    }
    // With the token, routing and extraction have their say.
    assert_eq!(
        send(
            s.base(),
            "GET",
            "/admin/dlq/not-a-number",
            Some("admin_tok")
        )
        .await,
        400
    );
    assert_eq!(
        send(s.base(), "GET", "/admin/dlq/12345", Some("admin_tok")).await,
        404
    );
    assert_eq!(
        send(s.base(), "GET", "/admin/dlq", Some("admin_tok")).await,
        200
    );
}

/// A dead letter whose event was in fact applied: Close processed the create (the lead with its
/// contact) and the reply was lost, and with no retries left the event was dead-lettered.
/// Replaying it must plan nothing: the records are found, the state does not move. `queue` is the server's queue
/// arguments, `dlq` the CLI's (`None`: the server's own data directory).
async fn replaying_an_applied_dead_letter_plans_unchanged(queue: &[&str], dlq: Option<&[&str]>) {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    // The reply is lost, and the look-ups that would find the create answer 503 for a while:
    // the attempt fails and, with no retries left, the event is dead-lettered.
    sim.faults(json!({"lose_reply_to": ["POST lead/"], "unavailable_after_lost_reply": 20}))
        .await;
    let mut args = vec![
        "--retry-attempts",
        "1",
        "--retry-max-age",
        "0s",
        "--close-attempts",
        "1",
    ];
    args.extend_from_slice(queue);
    let s = ServerProc::start(dir.path(), &args, &[]).await;
    assert_eq!(
        status_of(&s.base(), "wk", &identify("u1", "u1@x.io", "c1", "CTO"))
            .await
            .0,
        200
    );
    let start = Instant::now();
    while metric(
        &s.metrics().await,
        "closeflow_dead_letters",
        "instance=\"acme\"",
    ) != 1.0
    {
        assert!(
            start.elapsed() < LONG,
            "the event was not dead-lettered:\n{}\n{}\n{}",
            s.metrics().await,
            s.log(),
            sim.state().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.faults(json!({})).await;
    // It was applied all the same: the lead and the contact are in Close.
    let before = sim.state().await;
    assert_eq!(
        (leads(&before).len(), contacts(&before).len()),
        (1, 1),
        "{before}"
    );
    assert_eq!(contacts(&before)[0]["title"], "CTO");
    let own = data_dir(dir.path());
    let mut a = vec!["dlq", "replay", "--all"];
    a.extend_from_slice(dlq.unwrap_or(&["--data-dir", &own]));
    let o = closeflow(&a);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("the replay applied", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_applied_total",
            "instance=\"acme\"",
        ) == 1.0
    })
    .await;
    assert_eq!(sim.state().await, before, "the replay wrote nothing");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_dead_letters", "instance=\"acme\""),
        0.0
    );
    assert_eq!(
        metric(&m, "closeflow_events_replayed_total", "instance=\"acme\""),
        1.0
    );
    assert_balanced(&m, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_dead_letter_that_was_in_fact_applied_plans_unchanged_sqlite() {
    replaying_an_applied_dead_letter_plans_unchanged(&[], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_dead_letter_that_was_in_fact_applied_plans_unchanged_jetstream() {
    let nats = closeflow_e2e::nats::NatsCluster::start(1).await;
    let urls = nats.urls();
    replaying_an_applied_dead_letter_plans_unchanged(
        &["--queue", &urls, "--node-id", "solo", "--ack-wait", "2s"],
        Some(&["--queue", &urls]),
    )
    .await;
}
