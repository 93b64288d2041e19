//! Fewer Close calls per event, same results: combined and coalesced searches, the identity
//! cache, and coalesced concurrent delivery against one-by-one delivery (the simulator over
//! loopback, counting requests per endpoint group at `/_sim/stats`).

use closeflow_close::exec;
use closeflow_close::lookup;
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close::port::ReadPort;
use closeflow_close_api::client::{ClientConfig, Writer};
use closeflow_close_api::live::{LiveOptions, LiveSource};
use closeflow_close_api::search::{EventLookup, Searcher};
use closeflow_sim::Sim;
use serde_json::{Value, json};
use std::time::Duration;

struct Running {
    sim: Sim,
    url: String,
}

async fn start(snapshot: Value) -> Running {
    let (sim, url) = closeflow_e2e::procs::sim_in_process(&snapshot).await;
    Running { sim, url }
}

impl Running {
    /// Requests served so far in an endpoint group (`search`, `other`).
    async fn calls(&self, group: &str) -> u64 {
        let v: Value = reqwest::get(self.url.replace("api/v1/", "_sim/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[group]["requests"].as_u64().unwrap_or(0)
    }
    async fn all_calls(&self) -> u64 {
        self.calls("search").await + self.calls("other").await
    }
}

fn writer(url: &str) -> Writer {
    let mut cfg = ClientConfig::new(url, "test_key".to_string().into());
    cfg.backoff.base = Duration::from_millis(5);
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

fn want(v: Value) -> EventLookup {
    let p = payload(v);
    EventLookup::of(&keys(), &p, &lookup::requests(&keys(), &p))
}

fn org() -> Value {
    let contact = |id: &str, lead: &str, email: &str, user: &str, date: &str| {
        json!({"id": id, "lead_id": lead, "name": id, "date_created": date,
               "emails": [{"email": email, "type": "office"}], "custom.cf_user": user})
    };
    json!({"api_keys": ["test_key"],
    "custom_fields": {"lead": [{"id": "cf_company", "name": "Company ID", "type": "text"}],
                      "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]},
    "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
    "limits": {"search": 1000, "other": 1000, "window_secs": 1.0},
    "leads": [
      {"id": "lead_1", "name": "Acme", "date_created": "2026-01-01T00:00:00+00:00", "custom.cf_company": "c_1",
       "contacts": [contact("cont_1", "lead_1", "ada@acme.com", "u_1", "2026-01-01T00:00:01+00:00"),
                    // A near match of ada@acme.com for Close's word search.
                    contact("cont_2", "lead_1", "ada@acme.com.au", "u_2", "2026-01-01T00:00:02+00:00")]},
      {"id": "lead_2", "name": "Globex", "date_created": "2026-01-02T00:00:00+00:00", "custom.cf_company": "c_2",
       "contacts": [contact("cont_3", "lead_2", "grace@globex.com", "u_3", "2026-01-02T00:00:01+00:00")]},
      {"id": "lead_3", "name": "No company", "date_created": "2026-01-03T00:00:00+00:00",
       "contacts": [contact("cont_4", "lead_3", "linus@kernel.org", "u_4", "2026-01-03T00:00:01+00:00")]}
    ]})
}

#[tokio::test]
async fn the_keys_of_several_events_go_out_as_one_search_and_come_back_to_the_right_events() {
    let r = start(org()).await;
    let w = writer(&r.url);
    let wants = [
        want(json!({"contact_email": "ada@acme.com"})),
        want(json!({"contact_external_id": "u_3"})),
        want(json!({"lead_external_id": "c_1", "contact_email": "nobody@acme.com"})),
        want(json!({"contact_email": "linus@kernel.org"})),
    ];
    let before = r.calls("search").await;
    let found = Searcher::from(w.reader().clone())
        .find_many(&wants)
        .await
        .unwrap();
    assert_eq!(
        r.calls("search").await - before,
        1,
        "one search for four events' keys"
    );
    let ids = |f: &closeflow_close::lookup::LookupResults| {
        (
            f.leads_by_company
                .iter()
                .map(|l| l.id.clone())
                .collect::<Vec<_>>(),
            f.contacts.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            f.leads.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        )
    };
    // The near match (ada@acme.com.au) is never routed to ada@acme.com, nor anywhere else.
    assert_eq!(
        ids(&found[0]),
        (vec![], vec!["cont_1".into()], vec!["lead_1".into()])
    );
    assert_eq!(
        ids(&found[1]),
        (vec![], vec!["cont_3".into()], vec!["lead_2".into()])
    );
    assert_eq!(ids(&found[2]), (vec!["lead_1".into()], vec![], vec![]));
    assert_eq!(
        ids(&found[3]),
        (vec![], vec!["cont_4".into()], vec!["lead_3".into()])
    );
}

#[tokio::test]
async fn no_get_lead_for_a_lead_the_search_returned() {
    let r = start(org()).await;
    let w = writer(&r.url);
    w.reader().field_types().await.unwrap();
    let before = r.calls("other").await;
    let found = Searcher::from(w.reader().clone())
        .find_many(&[want(
            json!({"lead_external_id": "c_1", "contact_external_id": "u_1"}),
        )])
        .await
        .unwrap();
    assert_eq!(found[0].leads[0].id, "lead_1");
    assert_eq!(
        r.calls("other").await - before,
        0,
        "lead_1 came back from the company lookup"
    );
    // A contact whose lead the search did not return: its lead is read once.
    let found = Searcher::from(w.reader().clone())
        .find_many(&[
            want(json!({"contact_external_id": "u_4"})),
            want(json!({"contact_email": "linus@kernel.org"})),
        ])
        .await
        .unwrap();
    assert_eq!(found[1].leads[0].id, "lead_3");
    assert_eq!(
        r.calls("other").await - before,
        1,
        "one GET /lead/ for two events"
    );
}

#[tokio::test]
async fn a_400_on_a_large_query_splits_the_chunk_and_retries_the_halves() {
    let mut snap = org();
    snap["limits"]["search_conditions"] = json!(2);
    let r = start(snap).await;
    let w = writer(&r.url);
    let wants = [
        want(json!({"contact_email": "ada@acme.com"})),
        want(json!({"contact_external_id": "u_3"})),
        want(json!({"lead_external_id": "c_1"})),
        want(json!({"lead_external_id": "c_2"})),
        want(json!({"contact_email": "linus@kernel.org"})),
    ];
    let found = Searcher::from(w.reader().clone())
        .find_many(&wants)
        .await
        .unwrap();
    assert_eq!(found[0].contacts[0].id, "cont_1");
    assert_eq!(found[1].contacts[0].id, "cont_3");
    assert_eq!(found[2].leads_by_company[0].id, "lead_1");
    assert_eq!(found[3].leads_by_company[0].id, "lead_2");
    assert_eq!(found[4].contacts[0].id, "cont_4");
    // 5 keys > 2 conditions: refused, split into 2 + 3, the 3 split again: 1 + 2 + 2 + 1 + 1.
    assert!(r.calls("search").await >= 4, "the chunk was split");
}

fn live(r: &Running, opts: LiveOptions) -> (Writer, LiveSource) {
    let w = writer(&r.url);
    let s = LiveSource::new(Searcher::from(w.reader().clone()), keys(), opts);
    (w, s)
}

#[tokio::test]
async fn a_repeated_unchanged_identify_costs_no_call_and_a_write_refreshes_the_cache() {
    let r = start(org()).await;
    let (w, src) = live(&r, LiveOptions::default());
    let ada = payload(
        json!({"contact_external_id": "u_1", "contact_email": "ada@acme.com", "contact_title": "CTO",
                             "lead_external_id": "c_1"}),
    );
    let first = exec::apply(&src, &w, &keys(), &ada).await.unwrap();
    assert!(
        first
            .plan
            .steps
            .iter()
            .any(|s| s.kind == closeflow_close::StepKind::UpdateContact)
    );
    let calls = r.all_calls().await;
    let again = exec::apply(&src, &w, &keys(), &ada).await.unwrap();
    assert!(
        again
            .plan
            .steps
            .iter()
            .all(|s| s.kind == closeflow_close::StepKind::Unchanged),
        "{:?}",
        again.plan
    );
    assert_eq!(
        r.all_calls().await,
        calls,
        "the repeat is planned from the cache, written nowhere"
    );
    // The write's reply refreshed the cache: the contact now has a second email, and an event
    // that knows the person only by that email finds it without a search (and adds nobody).
    let more = payload(
        json!({"contact_external_id": "u_1", "contact_email": "ada@lovelace.org", "lead_external_id": "c_1"}),
    );
    exec::apply(&src, &w, &keys(), &more).await.unwrap();
    let by_new_email =
        payload(json!({"contact_email": "ada@lovelace.org", "contact_title": "CTO"}));
    let searches = r.calls("search").await;
    let p = exec::apply(&src, &w, &keys(), &by_new_email).await.unwrap();
    assert_eq!(
        r.calls("search").await,
        searches,
        "the email the write added is cached"
    );
    assert!(
        p.plan
            .steps
            .iter()
            .all(|s| s.kind == closeflow_close::StepKind::Unchanged),
        "{:?}",
        p.plan
    );
    assert_eq!(
        r.sim.snapshot()["leads"].as_array().unwrap().len(),
        3,
        "no new lead"
    );
}

#[tokio::test]
async fn a_cached_value_never_hides_a_change_the_event_makes() {
    let r = start(org()).await;
    let (w, src) = live(&r, LiveOptions::default());
    let title = |t: &str| payload(json!({"contact_external_id": "u_3", "contact_title": t}));
    exec::apply(&src, &w, &keys(), &title("CTO")).await.unwrap();
    let changed = exec::apply(&src, &w, &keys(), &title("CEO")).await.unwrap();
    let step = changed
        .plan
        .steps
        .iter()
        .find(|s| s.kind == closeflow_close::StepKind::UpdateContact)
        .expect("an update");
    assert_eq!(step.changes[0].before, json!("CTO"));
    let st = r.sim.snapshot();
    let grace = st["leads"][1]["contacts"][0].clone();
    assert_eq!(grace["title"], "CEO", "{grace}");
}

#[tokio::test]
async fn ttl_expiry_and_an_error_force_a_lookup() {
    let r = start(org()).await;
    let opts = LiveOptions {
        ttl: Duration::from_millis(300),
        ..LiveOptions::default()
    };
    let (w, src) = live(&r, opts);
    let grace = payload(json!({"contact_external_id": "u_3", "contact_title": "CTO"}));
    exec::apply(&src, &w, &keys(), &grace).await.unwrap();
    let s0 = r.calls("search").await;
    exec::apply(&src, &w, &keys(), &grace).await.unwrap();
    assert_eq!(r.calls("search").await, s0, "fresh: no search");
    tokio::time::sleep(Duration::from_millis(400)).await;
    exec::apply(&src, &w, &keys(), &grace).await.unwrap();
    assert_eq!(r.calls("search").await, s0 + 1, "expired: searched again");
    // An error forgets the event's keys: the next event for them searches.
    r.sim.set_faults(closeflow_sim::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let failing = Writer::new({
        let mut c = ClientConfig::new(&r.url, "test_key".to_string().into());
        c.max_attempts = 1;
        c
    })
    .unwrap();
    let other = payload(json!({"contact_external_id": "u_3", "contact_title": "Admiral"}));
    assert!(exec::apply(&src, &failing, &keys(), &other).await.is_err());
    r.sim.set_faults(closeflow_sim::Faults::default());
    let s1 = r.calls("search").await;
    exec::apply(&src, &w, &keys(), &other).await.unwrap();
    assert_eq!(
        r.calls("search").await,
        s1 + 1,
        "after an error the key is looked up again"
    );
}

#[tokio::test]
async fn concurrent_lookups_are_coalesced_into_one_search() {
    let r = start(org()).await;
    let (_, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::from_millis(50),
            ..LiveOptions::default()
        },
    );
    let s0 = r.calls("search").await;
    let mut tasks = Vec::new();
    for p in [
        json!({"contact_external_id": "u_1"}),
        json!({"contact_external_id": "u_3"}),
        json!({"lead_external_id": "c_2"}),
        json!({"contact_email": "linus@kernel.org"}),
    ] {
        let src = src.clone();
        tasks.push(tokio::spawn(async move {
            let p = payload(p);
            src.find(&keys(), &p, &lookup::requests(&keys(), &p))
                .await
                .unwrap()
        }));
    }
    let found: Vec<_> = futures_join(tasks).await;
    assert_eq!(found[0].contacts[0].id, "cont_1");
    assert_eq!(found[1].contacts[0].id, "cont_3");
    assert_eq!(found[2].leads_by_company[0].id, "lead_2");
    assert_eq!(found[3].contacts[0].id, "cont_4");
    // The organisation's field types are read first (their own calls); the lookups: one search.
    assert_eq!(r.calls("search").await - s0, 1);
    assert_eq!(
        src.stats()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn coalesced_requests_never_mix_up_a_near_match() {
    // Direct check on the routing the property relies on: requests of unrelated events in one
    // search, one of them a near match of another's email.
    let r = start(org()).await;
    let (_, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::from_millis(50),
            ..LiveOptions::default()
        },
    );
    let a = payload(json!({"contact_email": "ada@acme.com.au"}));
    let b = payload(json!({"contact_email": "ada@acme.com"}));
    let (k, ra, rb) = (
        keys(),
        lookup::requests(&keys(), &a),
        lookup::requests(&keys(), &b),
    );
    let (fa, fb) = tokio::join!(src.find(&k, &a, &ra), src.find(&k, &b, &rb));
    assert_eq!(
        fa.unwrap()
            .contacts
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["cont_2"]
    );
    assert_eq!(
        fb.unwrap()
            .contacts
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["cont_1"]
    );
}
