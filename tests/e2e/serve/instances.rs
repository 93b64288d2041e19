//! Instances side by side: one failing does not delay another; an invalid edit keeps the old
//! version and a valid one takes effect without a restart.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_instance_does_not_delay_another() {
    let sim_a = SimProc::start(&empty_org()).await;
    let sim_b = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    two_instances(dir.path(), &sim_a, &sim_b);
    sim_a.faults(json!({"error_rate": 1.0})).await;
    let s = ServerProc::start(dir.path(), &["--close-attempts", "1"], &[]).await;
    for i in 0..20 {
        let (st, _) = post(
            &s.base(),
            "/v1/identify",
            Some("wk_a"),
            &identify(&format!("a{i}"), &format!("a{i}@a.io"), "ca", "x"),
        )
        .await;
        assert_eq!(st, 200);
        let (st, _) = post(
            &s.base(),
            "/v1/identify",
            Some("wk_b"),
            &identify(&format!("b{i}"), &format!("b{i}@b.io"), "cb", "x"),
        )
        .await;
        assert_eq!(st, 200);
    }
    wait_for("globex delivered", LONG, || queue_drained(&s, "globex")).await;
    assert_eq!(contacts(&sim_b.state().await).len(), 20);
    // Meanwhile acme got nowhere: all its events are still queued, retried, none lost.
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_queue_depth", "instance=\"acme\""),
        20.0,
        "{m}"
    );
    assert!(
        metric(&m, "closeflow_events_retried_total", "instance=\"acme\"") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "closeflow_events_retried_total", "instance=\"globex\""),
        0.0
    );
    assert!(leads(&sim_a.state().await).is_empty());
    // Once acme's Close recovers, its events go through.
    sim_a.faults(json!({"error_rate": 0.0})).await;
    wait_for("acme delivered after recovery", LONG, || {
        queue_drained(&s, "acme")
    })
    .await;
    assert_eq!(contacts(&sim_a.state().await).len(), 20);
    assert_balanced(&s.metrics().await, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_edit_keeps_the_old_version_and_a_valid_edit_takes_effect() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = instance("acme", &sim.api(), &["wk"], "test_key", "Version one");
    write_config(dir.path(), "acme.yaml", &v1);
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let title_of = |st: &Value, email: &str| {
        contacts(st)
            .into_iter()
            .find(|c| c["emails"][0]["email"] == email)
            .map(|c| c["title"].clone())
    };
    post(
        &s.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u1", "u1@x.io", "c1", "ignored"),
    )
    .await;
    wait_for("v1 applied", LONG, || async {
        title_of(&sim.state().await, "u1@x.io").is_some()
    })
    .await;
    assert_eq!(
        title_of(&sim.state().await, "u1@x.io").unwrap(),
        "Version one"
    );

    // A broken trigger: reported with validate's diagnostics; v1 keeps running.
    write_config(
        dir.path(),
        "acme.yaml",
        &v1.replace(
            "trigger: type = \"identify\"",
            "trigger: type = = \"identify\"",
        ),
    );
    wait_for("the invalid edit reported", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_config_file_valid",
            "acme.yaml",
        ) == 0.0
            && s.log().contains("trigger_syntax")
    })
    .await;
    assert!(s.log().contains("the previous version keeps running"));
    post(
        &s.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u2", "u2@x.io", "c1", "ignored"),
    )
    .await;
    wait_for("u2 applied by v1", LONG, || async {
        title_of(&sim.state().await, "u2@x.io").is_some()
    })
    .await;
    assert_eq!(
        title_of(&sim.state().await, "u2@x.io").unwrap(),
        "Version one"
    );

    // A valid edit takes effect without a restart.
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "Version two"),
    );
    wait_for("the valid edit loaded", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_config_file_valid",
            "acme.yaml",
        ) == 1.0
            && metric(
                &s.metrics().await,
                "closeflow_config_reloads_total",
                "result=\"loaded\"",
            ) >= 2.0
    })
    .await;
    post(
        &s.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u3", "u3@x.io", "c1", "ignored"),
    )
    .await;
    wait_for("u3 applied by v2", LONG, || async {
        title_of(&sim.state().await, "u3@x.io").is_some()
    })
    .await;
    assert_eq!(
        title_of(&sim.state().await, "u3@x.io").unwrap(),
        "Version two"
    );
}
