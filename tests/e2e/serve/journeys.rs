//! Journeys: what happened to each accepted event, read back with `closeflow trace` and
//! `/admin/events`, for an applied event, a skipped one, a duplicate, and a dead letter replayed
//! after its cause was fixed.

use super::*;

const TOKEN: &str = "admin_tok_journeys";
/// Distinctive, so that finding it anywhere in a journey is a leak, not a coincidence.
const WRITE_KEY: &str = "wk_journey_s3cret";
const API_KEY: &str = "test_key";

fn trace(dir: &Path, args: &[&str]) -> std::process::Output {
    let data = dir.join("data");
    let mut all = vec!["trace", "--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    closeflow(&all)
}

fn trace_json(dir: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let o = trace(dir, &a);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn kinds(j: &Value) -> Vec<String> {
    j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn admin(s: &ServerProc, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(format!("{}{path}", s.base()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_and_admin_events_show_each_events_journey_from_intake_to_outcome() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(dir.path(), &sim.api(), &["wk_other", WRITE_KEY], API_KEY);
    let s = ServerProc::start(dir.path(), &[], &[("CLOSEFLOW_ADMIN_TOKEN", TOKEN)]).await;

    // Applied: an identify. Skipped: a track no mapping takes. A duplicate of the identify.
    let ev = identify("u1", "Ada@X.io", "c1", "CTO");
    assert_eq!(
        post(&s.base(), "/v1/identify", Some(WRITE_KEY), &ev)
            .await
            .0,
        200
    );
    let other = json!({"type": "track", "event": "Viewed Page", "userId": "u1", "messageId": "m-viewed",
                       "context": {"library": {"name": "analytics-python", "version": "2.3.3"}}});
    assert_eq!(
        post(&s.base(), "/v1/track", Some(WRITE_KEY), &other)
            .await
            .0,
        200
    );
    wait_for("both events settled", LONG, || async {
        let m = s.metrics().await;
        metric(&m, "closeflow_events_applied_total", "instance=\"acme\"") == 1.0
            && metric(&m, "closeflow_events_skipped_total", "instance=\"acme\"") == 1.0
    })
    .await;
    // The client sends the identify again once it was applied: a duplicate.
    assert_eq!(
        post(&s.base(), "/v1/identify", Some(WRITE_KEY), &ev)
            .await
            .0,
        200
    );

    // The journey of the applied event, by messageId (the admin route flushes the writer).
    let (code, by_id) = admin(&s, "/admin/events/m-u1-CTO", Some(TOKEN)).await;
    assert_eq!(code, 200, "{by_id}");
    let j = &by_id["events"][0];
    assert_eq!(j["instance"], "acme");
    assert_eq!(kinds(j), ["received", "attempt", "duplicate"], "{j:#}");
    let received = &j["stages"][0]["data"];
    assert_eq!(received["route"], "/v1/identify");
    assert_eq!(received["write_key"], "write key #2 of acme (basic)");
    assert_eq!(received["type"], "identify");
    assert!(received["bytes"].as_u64().unwrap() > 100, "{received}");
    assert!(
        received.get("event").is_none(),
        "intake keeps no copy: {received}"
    );
    let attempt = &j["stages"][1]["data"];
    // The event as delivery read it, on its first attempt.
    assert_eq!(attempt["event"]["traits"]["title"], "CTO");
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["outcome"]["kind"], "applied", "{attempt:#}");
    let people = &attempt["mappings"][0];
    assert_eq!(people["name"], "People");
    assert_eq!(people["verdict"], "fires");
    assert_eq!(people["decided_by"][0]["condition"], "type = \"identify\"");
    assert_eq!(people["decided_by"][0]["value"], "identify");
    assert_eq!(attempt["mappings"][1]["verdict"], "does not fire");
    // The normalised payload: the email as the planner compares it.
    assert_eq!(people["payload"]["contact_title"], "CTO", "{people:#}");
    let kinds_of_steps: Vec<&str> = people["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert!(kinds_of_steps.contains(&"create_lead"), "{people:#}");
    assert!(
        attempt["plan"]
            .as_str()
            .unwrap()
            .contains("mapping \"People\""),
        "{attempt:#}"
    );
    // Its Close calls: at least the create, each with its group, status and timing.
    let calls = attempt["calls"].as_array().unwrap();
    let create = calls
        .iter()
        .find(|c| c["method"] == "POST" && c["path"] == "lead/")
        .unwrap_or_else(|| panic!("no POST lead/ in {calls:#?}"));
    assert_eq!(create["status"], 200);
    assert!(create["ms"].is_u64(), "{create}");
    // A first attempt that waited for nothing says neither (compact).
    assert!(
        create.get("attempt").is_none() && create.get("waited_ms").is_none(),
        "{create}"
    );

    // The same by person, from the CLI: by User ID, by email in another case, by Company ID.
    for args in [
        &["--user-id", "u1"][..],
        &["--email", "ADA@x.IO"],
        &["--company-id", "c1"],
    ] {
        let v = trace_json(dir.path(), args);
        let ids: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message_id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"m-u1-CTO"), "{args:?}: {v:#}");
        if args[0] == "--user-id" {
            assert!(ids.contains(&"m-viewed"), "{v:#}");
        }
    }
    let (code, by_user) = admin(&s, "/admin/events?user_id=u1", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(
        by_user["events"].as_array().unwrap().len(),
        2,
        "{by_user:#}"
    );

    // The human trace reads as the story of the event.
    let o = trace(dir.path(), &["m-viewed"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    for want in [
        "event m-viewed (instance \"acme\"): skipped (not_matched)",
        "received: track on /v1/track, write key #2 of acme (basic)",
        "from analytics-python 2.3.3",
        "mapping \"Sign-ups\": does not fire",
        "✗ event = \"Signed Up\"   (value: \"Viewed Page\")",
        "→ skipped (not_matched)",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let o = trace(dir.path(), &["m-u1-CTO"]);
    let t = String::from_utf8_lossy(&o.stdout);
    for want in [
        "→ applied",
        "Close calls:",
        "POST /lead/  200",
        "received again, a duplicate",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }

    // Nothing found: exit 3 and a sentence; no token, no journeys; a bad search is a 400.
    assert_eq!(trace(dir.path(), &["no-such-id"]).status.code(), Some(3));
    assert_eq!(admin(&s, "/admin/events/m-u1-CTO", None).await.0, 401);
    assert_eq!(
        admin(&s, "/admin/events/m-u1-CTO", Some("wrong")).await.0,
        401
    );
    let (code, err) = admin(&s, "/admin/events?user_id=u1&email=a@x.io", Some(TOKEN)).await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(
        admin(&s, "/admin/events/no-such-id", Some(TOKEN)).await.0,
        404
    );

    // No secret anywhere in what a journey holds.
    let all = format!(
        "{by_id}{by_user}{}",
        text(&trace(dir.path(), &["--user-id", "u1"]))
    );
    for secret in [WRITE_KEY, API_KEY, TOKEN] {
        assert!(!all.contains(secret), "{secret} leaked into a journey");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letters_journey_shows_the_refusal_the_replay_and_the_fixed_attempt() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(dir.path(), &[], &[("CLOSEFLOW_ADMIN_TOKEN", TOKEN)]).await;
    let ev = identify("u2", "u2@x.io", "c2", "CEO");
    assert_eq!(
        post(&s.base(), "/v1/identify", Some("wk"), &ev).await.0,
        200
    );
    wait_dead_letters(&s, "acme", 1.0, "the event dead-lettered").await;
    let (_, v) = admin(&s, "/admin/events/m-u2-CEO", Some(TOKEN)).await;
    let j = &v["events"][0];
    let out = &j["stages"][1]["data"]["outcome"];
    assert_eq!(out["kind"], "dead_lettered", "{j:#}");
    assert_eq!(out["reason"], "unauthorized");
    // The refused call is in the journey: Close's 401.
    let calls = j["stages"][1]["data"]["calls"].as_array().unwrap();
    assert!(calls.iter().any(|c| c["status"] == 401), "{calls:#?}");

    acme(dir.path(), &sim.api());
    crate::serve::wait_loaded(&s, 2.0, "the fixed key loaded").await;
    let r = reqwest::Client::new()
        .post(format!("{}/admin/dlq/replay", s.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    crate::serve::wait_applied(&s, "acme", 1.0, "the replayed event applied").await;
    let (_, v) = admin(&s, "/admin/events/m-u2-CEO", Some(TOKEN)).await;
    let j = &v["events"][0];
    assert_eq!(
        kinds(j),
        ["received", "attempt", "replayed", "attempt"],
        "{j:#}"
    );
    assert_eq!(j["stages"][2]["data"]["by"], "admin");
    assert_eq!(j["stages"][2]["data"]["was"], "unauthorized");
    assert_eq!(j["stages"][3]["data"]["outcome"]["kind"], "applied");
    let t = text(&trace(dir.path(), &["m-u2-CEO"]));
    assert!(t.contains("dead-lettered (unauthorized)"), "{t}");
    assert!(
        t.contains("replayed from the dead letters by admin (was: unauthorized)"),
        "{t}"
    );
    assert!(t.contains("): applied"), "{t}");
}
