//! The executor against the real simulator over loopback HTTP: state before → event → state after.

use closeflow_close::exec;
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close::plan::StepKind;
use closeflow_close_api::client::{ClientConfig, CloseError, Writer};
use closeflow_close_api::search::Searcher;
use closeflow_sim::{Faults, Limits, Sim};
use serde_json::{Value, json};

struct Running {
    sim: Sim,
    url: String,
}

async fn start(snapshot: Value) -> Running {
    let (sim, url) = closeflow_e2e::procs::sim_in_process(&snapshot).await;
    Running { sim, url }
}

fn writer(url: &str, key: &str) -> Writer {
    let mut cfg = ClientConfig::new(url, key.to_string().into());
    cfg.backoff.base = std::time::Duration::from_millis(5);
    cfg.max_attempts = 8;
    Writer::new(cfg).unwrap()
}

fn keys() -> KeyConfig {
    KeyConfig {
        company_field: Some("cf_company".into()),
        user_field: Some("cf_user".into()),
    }
}

fn payload(v: Value) -> Payload {
    Payload::normalise(v.as_object().unwrap()).unwrap()
}

fn base() -> Value {
    json!({"api_keys": ["test_key"],
           "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
           "leads": [{"id": "lead_1", "name": "Acme", "date_created": "2026-01-01T00:00:00+00:00", "custom.cf_company": "c_1",
                      "contacts": [{"id": "cont_1", "name": "Ada", "date_created": "2026-01-01T00:00:00+00:00",
                                    "emails": [{"email": "ada@old.io", "type": "office"}], "custom.cf_user": "u_1"}]}]})
}

/// The recorded rate-limit profile, scaled down in time so that tests stay short.
const FAST_LIMITS: Limits = Limits {
    search: 16,
    other: 240,
    delete_lead: 80,
    window_secs: 0.5,
    search_conditions: 0,
};

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

fn leads(sim: &Sim) -> Vec<Value> {
    sim.snapshot()["leads"].as_array().unwrap().clone()
}

#[tokio::test]
async fn new_person_creates_lead_and_contact_then_replay_writes_nothing() {
    let r = start(base()).await;
    let w = writer(&r.url, "test_key");
    let p = payload(
        json!({"lead_name": "Globex", "lead_external_id": "c_2", "contact_name": "Grace",
                           "contact_email": "grace@globex.com", "contact_external_id": "u_2", "contact_phone": 5550100}),
    );
    let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = applied.plan.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![StepKind::CreateLead, StepKind::CreateContact]);
    let all = leads(&r.sim);
    assert_eq!(all.len(), 2);
    let globex = all.iter().find(|l| l["name"] == "Globex").unwrap();
    assert_eq!(globex["custom.cf_company"], "c_2");
    let c = &globex["contacts"][0];
    assert_eq!(c["emails"][0]["email"], "grace@globex.com");
    assert_eq!(c["phones"][0]["phone"], "5550100");
    assert_eq!(c["custom.cf_user"], "u_2");
    assert!(c["id"].as_str().unwrap().starts_with("cont_"));

    let again = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    assert_eq!(again.plan.writes().count(), 0, "{:?}", again.plan.steps);
    assert_eq!(leads(&r.sim).len(), 2);
}

#[tokio::test]
async fn found_lead_is_updated_and_emails_appended() {
    let r = start(base()).await;
    let w = writer(&r.url, "test_key");
    let p = payload(
        json!({"lead_name": "Acme Inc", "lead_external_id": "c_1", "contact_email": "ada@acme.com",
                           "contact_external_id": "u_1", "contact_title": "CTO"}),
    );
    let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = applied.plan.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![StepKind::UpdateLead, StepKind::UpdateContact]);
    let l = &leads(&r.sim)[0];
    assert_eq!(l["name"], "Acme Inc");
    let emails: Vec<&str> = l["contacts"][0]["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        vec!["ada@old.io", "ada@acme.com"],
        "appended, the old address kept"
    );
    assert_eq!(l["contacts"][0]["title"], "CTO");
}

#[tokio::test]
async fn flags_gate_writes_end_to_end() {
    let r = start(base()).await;
    let w = writer(&r.url, "test_key");
    let p = payload(
        json!({"lead_name": "Globex", "lead_external_id": "c_9", "contact_email": "x@globex.com",
                           "allow_creating_new_leads": false}),
    );
    let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    assert!(
        applied
            .plan
            .steps
            .iter()
            .all(|s| s.kind == StepKind::Skipped)
    );
    assert_eq!(
        applied.plan.steps[0].reason.as_deref(),
        Some("allow_creating_new_leads")
    );
    assert_eq!(leads(&r.sim).len(), 1, "nothing was created");
}

#[tokio::test]
async fn dry_run_against_the_live_simulator_leaves_it_unchanged() {
    let r = start(base()).await;
    let w = writer(&r.url, "test_key");
    let before = r.sim.snapshot();
    let mut overlay = closeflow_close::overlay::Overlay::default();
    let p1 = payload(
        json!({"lead_name": "Globex", "lead_external_id": "c_2", "contact_email": "g@globex.com"}),
    );
    let p2 = payload(json!({"lead_external_id": "c_2", "contact_email": "h@globex.com"}));
    let plan1 = exec::dry_run(
        &Searcher::from(w.reader().clone()),
        &mut overlay,
        &keys(),
        &p1,
    )
    .await
    .unwrap();
    let plan2 = exec::dry_run(
        &Searcher::from(w.reader().clone()),
        &mut overlay,
        &keys(),
        &p2,
    )
    .await
    .unwrap();
    assert_eq!(plan1.steps[0].kind, StepKind::CreateLead);
    // The second event sees the lead the first would create.
    assert!(
        plan2.steps.iter().all(|s| s.kind != StepKind::CreateLead),
        "{:?}",
        plan2.steps
    );
    assert!(
        plan2
            .steps
            .iter()
            .any(|s| s.kind == StepKind::CreateContact)
    );
    assert_eq!(r.sim.snapshot(), before);
}

#[tokio::test]
async fn wrong_key_fails_fast_without_showing_it() {
    let r = start(base()).await;
    let w = writer(&r.url, "not-the-key-s3cr3t");
    let started = std::time::Instant::now();
    let e = w.reader().check_credentials().await.unwrap_err();
    assert!(
        matches!(e, CloseError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "no retries on 401"
    );
    let msg = format!("{e} {e:?} {w:?}");
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(msg.contains("API key"));
}

#[tokio::test]
async fn recovers_from_injected_server_errors() {
    let r = start(base()).await;
    r.sim.set_faults(Faults {
        error_rate: 0.4,
        ..Faults::default()
    });
    let w = writer(&r.url, "test_key");
    for i in 0..8 {
        let p = payload(
            json!({"lead_external_id": format!("c_x{i}"), "contact_email": format!("p{i}@x.com")}),
        );
        exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
            .await
            .unwrap();
    }
    r.sim.set_faults(Faults::default());
    assert_eq!(leads(&r.sim).len(), 9);
    assert!(
        count(&w.reader().stats.retries) > 0,
        "faults were injected and retried"
    );
}

#[tokio::test]
async fn steady_load_paced_without_a_single_429() {
    let r = start(base()).await;
    r.sim.set_limits(FAST_LIMITS);
    let w = writer(&r.url, "test_key");
    for i in 0..15 {
        let p = payload(
            json!({"lead_external_id": format!("c_l{i}"), "contact_external_id": format!("u_l{i}"),
                               "contact_email": format!("l{i}@x.com")}),
        );
        exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
            .await
            .unwrap();
    }
    let throttled = count(&w.reader().stats.throttled);
    assert_eq!(throttled, 0, "the pacer kept every group under its budget");
    assert_eq!(leads(&r.sim).len(), 16);
}

#[tokio::test]
async fn dropped_connections_never_duplicate_a_create() {
    let r = start(base()).await;
    r.sim.set_limits(FAST_LIMITS);
    // Some requests are cut before Close sees them, some after it acted (the reply is lost).
    r.sim.set_faults(Faults {
        drop_rate: 0.15,
        lost_reply_rate: 0.15,
        ..Faults::default()
    });
    let w = writer(&r.url, "test_key");
    let mut done = 0;
    for i in 0..10 {
        let p = payload(
            json!({"lead_external_id": format!("c_d{i}"), "contact_email": format!("d{i}@x.com")}),
        );
        // An event may still fail after its re-plans; like the server, try it again later.
        for _ in 0..5 {
            if exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
                .await
                .is_ok()
            {
                done += 1;
                break;
            }
        }
    }
    r.sim.set_faults(Faults::default());
    assert_eq!(done, 10);
    let all = leads(&r.sim);
    for i in 0..10 {
        let n = all
            .iter()
            .filter(|l| l["custom.cf_company"] == format!("c_d{i}"))
            .count();
        assert_eq!(n, 1, "company c_d{i} has {n} leads");
    }
    assert!(
        count(&w.reader().stats.retries) > 0,
        "connections were dropped and retried"
    );
}

#[tokio::test]
async fn a_create_whose_reply_was_lost_is_reported_as_the_create_it_was() {
    let r = start(base()).await;
    let w = writer(&r.url, "test_key");
    // The lead (with its contact) is created, but the reply never arrives.
    r.sim.set_faults(Faults {
        lose_reply_to: vec!["POST lead/".into()],
        ..Faults::default()
    });
    let p = payload(
        json!({"lead_name": "Globex", "lead_external_id": "c_2", "contact_email": "grace@globex.com"}),
    );
    let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = applied.plan.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![StepKind::CreateLead, StepKind::CreateContact],
        "{:?}",
        applied.plan.steps
    );
    assert_eq!(leads(&r.sim).len(), 2, "created once, not twice");
    let globex = leads(&r.sim)
        .into_iter()
        .find(|l| l["name"] == "Globex")
        .unwrap();
    assert_eq!(applied.plan.steps[0].id.as_deref(), globex["id"].as_str());
    assert_eq!(
        applied.plan.steps[1].id.as_deref(),
        globex["contacts"][0]["id"].as_str()
    );

    // The lead update goes through, then the contact create's reply is lost: both are
    // reported, neither as `unchanged`.
    r.sim.set_faults(Faults {
        lose_reply_to: vec!["POST contact/".into()],
        ..Faults::default()
    });
    let p = payload(
        json!({"lead_name": "Acme Inc", "lead_external_id": "c_1", "contact_email": "new@acme.com",
               "contact_external_id": "u_new"}),
    );
    let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &keys(), &p)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = applied.plan.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![StepKind::UpdateLead, StepKind::CreateContact],
        "{:?}",
        applied.plan.steps
    );
    let acme = leads(&r.sim)
        .into_iter()
        .find(|l| l["id"] == "lead_1")
        .unwrap();
    assert_eq!(acme["contacts"].as_array().unwrap().len(), 2);
    assert!(
        applied.plan.steps[1]
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with("cont_"))
    );
}
