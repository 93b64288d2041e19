//! Dead letters: permanent failures and spent retries end in the store; the HTTP routes show,
//! replay and drop them.

use super::*;

fn dlq_json(dir: &Path) -> Value {
    let o = closeflow(&[
        "dlq",
        "list",
        "--format",
        "json",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanently_failing_event_is_dead_lettered_and_replayed_once_after_the_fix() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    // A wrong Close key: 401 can never succeed, so the event is dead-lettered at once.
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(
        dir.path(),
        &[],
        &[("CLOSEFLOW_ADMIN_TOKEN", "admin_tok_e2e")],
    )
    .await;
    let ev = identify("u1", "u1@x.io", "c1", "CTO");
    assert_eq!(
        post(&s.base(), "/v1/identify", Some("wk"), &ev).await.0,
        200
    );
    wait_dead_letters(&s, "acme", 1.0, "the event dead-lettered").await;
    let list = dlq_json(dir.path());
    let dead = &list["dead_letters"][0];
    assert_eq!(dead["reason"], "unauthorized", "{list}");
    // At once: one attempt, no retry in between.
    assert_eq!(dead["attempts"], 1, "{list}");
    assert_eq!(
        metric(
            &s.metrics().await,
            "closeflow_events_retried_total",
            "instance=\"acme\""
        ),
        0.0
    );
    assert_eq!(dead["message_id"], "m-u1-CTO");
    assert_eq!(dead["body"]["traits"]["title"], "CTO");
    assert!(
        !list.to_string().contains("wrong_key"),
        "the key is not in the dead letter"
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "closeflow_events_dead_lettered_total",
            "reason=\"unauthorized\""
        ),
        1.0
    );
    assert_balanced(&m, "acme");

    // The admin routes: 401 without the token, the same dead letter with it.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/admin/dlq", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r: Value = http
        .get(format!("{}/admin/dlq?instance=acme", s.base()))
        .bearer_auth("admin_tok_e2e")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["dead_letters"][0]["id"], dead["id"]);

    // Fix the cause (the key), replay from the CLI: applied once.
    acme(dir.path(), &sim.api());
    crate::serve::wait_loaded(&s, 2.0, "the fixed key loaded").await;
    let o = closeflow(&[
        "dlq",
        "replay",
        "--all",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    crate::serve::wait_applied(&s, "acme", 1.0, "the replayed event applied").await;
    let st = sim.state().await;
    assert_eq!((leads(&st).len(), contacts(&st).len()), (1, 1));
    assert_eq!(contacts(&st)[0]["title"], "CTO");
    // The CLI's replay is in the event's journey, between the refusal and the applied attempt.
    let data = dir.path().join("data");
    wait_for("the applied attempt in the journey", LONG, || async {
        let o = closeflow(&["trace", "m-u1-CTO", "--data-dir", data.to_str().unwrap()]);
        text(&o).contains("): applied")
    })
    .await;
    let o = closeflow(&["trace", "m-u1-CTO", "--data-dir", data.to_str().unwrap()]);
    assert!(
        text(&o).contains("replayed from the dead letters by cli (was: unauthorized)"),
        "{}",
        text(&o)
    );
    assert!(
        dlq_json(dir.path())["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Nothing left to replay: the id is gone (404), and the state does not move.
    let id = dead["id"].as_i64().unwrap();
    let r = http
        .post(format!("{}/admin/dlq/{id}/replay", s.base()))
        .bearer_auth("admin_tok_e2e")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_events_replayed_total", "instance=\"acme\""),
        1.0
    );
    assert_balanced(&m, "acme");
    assert_eq!(sim.state().await, st);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_over_http_show_replay_and_drop() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(dir.path(), &[], &[("CLOSEFLOW_ADMIN_TOKEN", "tok_admin")]).await;
    for u in ["u1", "u2"] {
        post(
            &s.base(),
            "/v1/identify",
            Some("wk"),
            &identify(u, &format!("{u}@x.io"), "c1", "t"),
        )
        .await;
    }
    wait_dead_letters(&s, "acme", 2.0, "two dead letters").await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{}{path}", s.base()))
            .bearer_auth("tok_admin")
            .send()
    };
    let list: Value = get("/admin/dlq".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let one: Value = get(format!("/admin/dlq/{}", ids[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["message_id"], "m-u1-t");
    assert_eq!(one["reason"], "unauthorized");
    assert_eq!(one["last_reply"], "HTTP 401");
    let r = http
        .delete(format!("{}/admin/dlq/{}", s.base(), ids[1]))
        .bearer_auth("tok_admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .delete(format!("{}/admin/dlq/{}", s.base(), ids[1]))
        .bearer_auth("tok_admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "dropped once");
    let r = http
        .delete(format!("{}/admin/dlq/{}", s.base(), ids[0]))
        .bearer_auth("not_the_token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Fix the key, replay everything left over HTTP: u1 applied, u2 (dropped) never.
    acme(dir.path(), &sim.api());
    crate::serve::wait_loaded(&s, 2.0, "the fixed key loaded").await;
    let r: Value = http
        .post(format!("{}/admin/dlq/replay?instance=acme", s.base()))
        .bearer_auth("tok_admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["replayed"], json!([ids[0]]));
    wait_for("u1 applied", LONG, || queue_drained(&s, "acme")).await;
    let st = sim.state().await;
    assert_eq!(contacts(&st).len(), 1);
    assert_eq!(contacts(&st)[0]["emails"][0]["email"], "u1@x.io");
    assert_balanced(&s.metrics().await, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_end_in_the_dead_letter_store_when_attempts_and_age_are_spent() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    sim.faults(json!({"error_rate": 1.0})).await;
    let s = ServerProc::start(
        dir.path(),
        &[
            "--close-attempts",
            "1",
            "--retry-attempts",
            "3",
            "--retry-max-age",
            "1s",
        ],
        &[],
    )
    .await;
    post(
        &s.base(),
        "/v1/identify",
        Some("wk"),
        &identify("u1", "u1@x.io", "c1", "t"),
    )
    .await;
    wait_for("the event given up", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_dead_letters",
            "instance=\"acme\"",
        ) == 1.0
    })
    .await;
    let m = s.metrics().await;
    assert!(
        metric(
            &m,
            "closeflow_events_retried_total",
            "reason=\"close_unavailable\""
        ) >= 2.0,
        "{m}"
    );
    let dead = &dlq_json(dir.path())["dead_letters"][0];
    assert_eq!(dead["reason"], "retries_exhausted");
    assert!(dead["attempts"].as_u64().unwrap() >= 3, "{dead}");
    assert!(
        dead["error"].as_str().unwrap().contains("503"),
        "the last error is kept: {dead}"
    );
    assert_balanced(&m, "acme");
}
