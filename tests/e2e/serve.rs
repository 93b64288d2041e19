//! `closeflow serve` end to end: the real server process and the real simulator process on
//! loopback ports, real HTTP, the real SQLite queue file.

use closeflow_e2e::procs::{
    ServerProc, SimProc, contacts, empty_org, leads, metric, post, wait_for,
};
use closeflow_e2e::{closeflow, text};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// An instance over `sim`: identify → contact and lead (the action's defaults, title from
/// the traits), group → the account's lead, track "Signed Up" → the contact's title.
pub(crate) fn instance(
    name: &str,
    sim_api: &str,
    write_keys: &[&str],
    api_key: &str,
    title: &str,
) -> String {
    format!(
        r#"name: {name}
endpoint: {sim_api}
write_key: [{keys}]
settings:
  api_key: {api_key}
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: People
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: {title}
  - name: Accounts
    trigger: type = "group"
    action: create_or_update_contact_and_lead
    fields:
      lead_external_id: $.groupId
      lead_name: $.traits.name
      lead_custom_fields:
        cf_plan: $.traits.plan
      contact_name: null
      contact_email: null
      contact_phone: null
      contact_url: null
      contact_title: null
      contact_external_id: null
  - name: Sign-ups
    trigger: type = "track" and event = "Signed Up"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: Signed up
"#,
        keys = write_keys.join(", ")
    )
}

pub(crate) fn write_config(dir: &Path, file: &str, text: &str) {
    let c = dir.join("config");
    std::fs::create_dir_all(&c).unwrap();
    // Write then rename, as editors and deploy tools do, so a reload never sees half a file.
    let tmp = c.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, c.join(file)).unwrap();
}

/// Two instances: "acme" over `a` (write key `wk_a`) and "globex" over `b` (`wk_b`).
pub(crate) fn two_instances(dir: &Path, a: &SimProc, b: &SimProc) {
    for (file, name, sim, key) in [
        ("a.yaml", "acme", a, "wk_a"),
        ("b.yaml", "globex", b, "wk_b"),
    ] {
        write_config(
            dir,
            file,
            &instance(name, &sim.api(), &[key], "test_key", "$.traits.title"),
        );
    }
}

pub(crate) fn identify(user: &str, email: &str, company: &str, title: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("m-{user}-{title}"),
           "traits": {"email": email, "name": format!("Person {user}"), "title": title,
                      "company": {"id": company, "name": format!("Company {company}")}}})
}

async fn queue_drained(s: &ServerProc, instance: &str) -> bool {
    let m = s.metrics().await;
    let label = format!("instance=\"{instance}\"");
    metric(&m, "closeflow_events_accepted_total", &label) > 0.0
        && metric(&m, "closeflow_queue_depth", &label) == 0.0
}

/// accepted + replayed = applied + skipped + dead-lettered + queued, from the metrics alone.
pub(crate) fn assert_balanced(m: &str, instance: &str) {
    let l = format!("instance=\"{instance}\"");
    let accepted = metric(m, "closeflow_events_accepted_total", &l);
    let replayed = metric(m, "closeflow_events_replayed_total", &l);
    let outcomes = metric(m, "closeflow_events_applied_total", &l)
        + metric(m, "closeflow_events_skipped_total", &l)
        + metric(m, "closeflow_events_dead_lettered_total", &l)
        + metric(m, "closeflow_queue_depth", &l);
    assert_eq!(
        accepted + replayed,
        outcomes,
        "the metrics must balance:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_auth_form_is_accepted() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance(
            "acme",
            &sim.api(),
            &["wk_web", "wk_server"],
            "test_key",
            "$.traits.title",
        ),
    );
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "wrong_key", "$.traits.title"),
    );
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
    wait_for("the event dead-lettered", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_dead_letters",
            "instance=\"acme\"",
        ) == 1.0
    })
    .await;
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
    wait_for("the fixed key loaded", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_config_reloads_total",
            "result=\"loaded\"",
        ) >= 2.0
    })
    .await;
    let o = closeflow(&[
        "dlq",
        "replay",
        "--all",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("the replayed event applied", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_applied_total",
            "instance=\"acme\"",
        ) == 1.0
    })
    .await;
    let st = sim.state().await;
    assert_eq!((leads(&st).len(), contacts(&st).len()), (1, 1));
    assert_eq!(contacts(&st)[0]["title"], "CTO");
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
async fn sigterm_answers_503_and_not_ready_while_in_flight_events_finish_and_the_rest_stays_queued()
{
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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

/// Segment's own client libraries, installed by `cargo xtask test` (npm and PyPI): missing
/// ones fail the test with the command that installs them, never a silent pass.
fn segment_client(kind: &str) -> std::path::PathBuf {
    let root = closeflow_e2e::workspace_root().join("tests/clients");
    let (probe, run) = match kind {
        "node" => (
            root.join("node/node_modules/@segment/analytics-node/package.json"),
            std::path::PathBuf::from("node"),
        ),
        _ => (
            root.join("python/.venv/bin/python"),
            root.join("python/.venv/bin/python"),
        ),
    };
    assert!(
        probe.exists(),
        "Segment's {kind} library is not installed ({} is missing): run `cargo xtask test`, which installs it, \
         or by hand `npm ci --prefix tests/clients/node` / `python3 -m venv tests/clients/python/.venv && \
         tests/clients/python/.venv/bin/pip install -r tests/clients/python/requirements.txt`",
        probe.display()
    );
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn segment_libraries_unchanged_deliver_to_close() {
    let node = segment_client("node");
    let python = segment_client("python");
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance(
            "acme",
            &sim.api(),
            &["wk_node", "wk_python"],
            "test_key",
            "$.traits.title",
        ),
    );
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let clients = closeflow_e2e::workspace_root().join("tests/clients");
    let runs: [(std::path::PathBuf, Vec<String>); 3] = [
        (
            node,
            vec![
                clients.join("node/send.mjs").display().to_string(),
                s.base(),
                "wk_node".into(),
            ],
        ),
        (
            python.clone(),
            vec![
                clients.join("python/send.py").display().to_string(),
                s.base(),
                "wk_python".into(),
                "plain".into(),
            ],
        ),
        (
            python,
            vec![
                clients.join("python/send.py").display().to_string(),
                s.base(),
                "wk_python".into(),
                "gzip".into(),
            ],
        ),
    ];
    for (bin, args) in runs {
        let o = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .expect("the client runs");
        assert!(
            o.status.success(),
            "{} {:?}:\n{}",
            bin.display(),
            args,
            text(&o)
        );
    }
    wait_for("the libraries' events delivered", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_accepted_total",
            "instance=\"acme\"",
        ) == 9.0
            && queue_drained(&s, "acme").await
    })
    .await;
    let st = sim.state().await;
    for (company, email, plan_lead) in [
        ("c_globex", "grace@globex.com", "Globex"),
        ("c_py", "ada.py@acme.com", "Acme py"),
        ("c_gz", "ada.gz@acme.com", "Acme gz"),
    ] {
        let lead = leads(&st)
            .into_iter()
            .find(|l| l["custom.cf_company"] == company)
            .unwrap_or_else(|| panic!("no lead for {company}: {st}"));
        assert_eq!(lead["name"], plan_lead);
        assert_eq!(
            lead["custom.cf_plan"], "pro",
            "the group call set the plan: {lead}"
        );
        let cs = lead["contacts"].as_array().unwrap();
        assert_eq!(cs.len(), 1, "{lead}");
        assert_eq!(cs[0]["emails"][0]["email"], email);
        assert_eq!(
            cs[0]["title"], "Signed up",
            "identify, then the track call, in order: {lead}"
        );
    }
    assert_eq!(leads(&st).len(), 3);
    assert_balanced(&s.metrics().await, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_writes_accepted_events_for_a_diff_of_a_mapping_change() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let old = instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title");
    write_config(dir.path(), "acme.yaml", &old);
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    for i in 0..6 {
        post(
            &s.base(),
            "/v1/identify",
            Some("wk"),
            &identify(&format!("u{i}"), &format!("u{i}@x.io"), "c1", "Engineer"),
        )
        .await;
    }
    post(
        &s.base(),
        "/v1/track",
        Some("wk"),
        &json!({"userId": "u0", "event": "Viewed", "messageId": "m-viewed"}),
    )
    .await;
    wait_for("delivered", LONG, || queue_drained(&s, "acme")).await;
    let data = dir.path().join("data");
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
        "--since",
        "1h",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(
        lines[0]["messageId"], "m-u0-Engineer",
        "captured events keep their messageId"
    );
    assert_eq!(lines[6]["messageId"], "m-viewed");
    assert!(lines.iter().all(|l| l["receivedAt"].is_string()));
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
        "--sample",
        "3",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);

    // The captured traffic through a change of the mapping: six payloads change.
    let events = dir.path().join("captured.jsonl");
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
    ]);
    std::fs::write(&events, &o.stdout).unwrap();
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    std::fs::write(
        new_dir.join("acme.yaml"),
        instance("acme", &sim.api(), &["wk"], "test_key", "Staff"),
    )
    .unwrap();
    let o = closeflow(&[
        "diff",
        "--old",
        dir.path().join("config/acme.yaml").to_str().unwrap(),
        "--new",
        new_dir.join("acme.yaml").to_str().unwrap(),
        "--format",
        "json",
        events.to_str().unwrap(),
    ]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["summary"]["events"], 7, "{v}");
    assert_eq!(v["summary"]["payload_changed"], 6, "{}", v["summary"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_first_command_delivers_to_the_embedded_simulator() {
    let root = closeflow_e2e::workspace_root();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "default.yaml",
        &std::fs::read_to_string(root.join("mappings/default.yaml")).unwrap(),
    );
    let sim_port = closeflow_e2e::procs::free_port();
    let state = root.join("mappings/default.state.json");
    let s = ServerProc::start(
        dir.path(),
        &[
            "--sim",
            state.to_str().unwrap(),
            "--sim-port",
            &sim_port.to_string(),
        ],
        &[("CLOSEFLOW_CLOSE_URL", "http://127.0.0.1:1/unused/")],
    )
    .await;
    // The README's curl body, sent with the example's default write key.
    let ev = json!({"userId": "u_99", "traits": {"first_name": "Margaret", "last_name": "Hamilton",
                    "email": "margaret@initech.com", "company": {"id": "c_initech", "name": "Initech"}}});
    let (st, reply) = post(&s.base(), "/v1/identify", Some("wk_default"), &ev).await;
    assert_eq!(
        (st, reply),
        (
            200,
            json!({"success": true, "accepted": 1, "duplicates": 0})
        )
    );
    let state_url = format!("http://127.0.0.1:{sim_port}/_sim/state");
    wait_for("Initech in the embedded simulator", LONG, || async {
        let st: Value = reqwest::get(&state_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        leads(&st)
            .iter()
            .any(|l| l["name"] == "Initech" && l["contacts"][0]["name"] == "Margaret Hamilton")
    })
    .await;
    wait_for("the event counted as applied", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_applied_total",
            "instance=\"default-close\"",
        ) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn back_pressure_answers_503_with_retry_after_and_drops_nothing() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
    write_config(
        dir2.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_over_http_show_replay_and_drop() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "wrong_key", "$.traits.title"),
    );
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
    wait_for("two dead letters", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_dead_letters",
            "instance=\"acme\"",
        ) == 2.0
    })
    .await;
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
    wait_for("the fixed key loaded", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_config_reloads_total",
            "result=\"loaded\"",
        ) >= 2.0
    })
    .await;
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
    write_config(
        dir.path(),
        "acme.yaml",
        &instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title"),
    );
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
