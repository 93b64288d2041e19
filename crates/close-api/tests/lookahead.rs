//! `send`'s look-ahead against the simulator on loopback, at Close's recorded limits: the
//! searches it makes are full ones, whatever the pace of the run.

use closeflow_close::{run, schema};
use closeflow_close_api::client::{ClientConfig, Writer};
use closeflow_close_api::live::{LiveOptions, LiveSource};
use closeflow_close_api::lookahead::LookAhead;
use closeflow_close_api::search::Searcher;
use closeflow_mapping::events::Entry;
use serde_json::{Value, json};

const INSTANCE: &str = r#"name: t
endpoint: http://127.0.0.1:9/api/v1/
write_key: wk
settings:
  api_key: k
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: people
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
"#;

/// A run of new people (three lookup keys each: company, User ID, email) searches in full
/// searches: 16 events' 48 keys a search of 50, so 160 events cost 10 searches. Sized to the
/// run's pace instead, a run starting (no pace yet) searched for one event at a time and spent
/// the search budget (16 per 8 s) in its first second.
#[tokio::test(flavor = "multi_thread")]
async fn new_people_are_looked_up_in_full_searches_from_the_first_event() {
    let sim = closeflow_sim::Sim::from_snapshot(Some(&json!({"api_keys": ["k"]}))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(closeflow_sim::serve(listener, sim.clone()));
    let (inst, diags) =
        closeflow_mapping::instance::load("t.yaml", INSTANCE, &schema::destination(), &|_| None);
    let inst = inst.unwrap_or_else(|| panic!("{diags:?}"));
    let writer = Writer::new(ClientConfig::new(
        format!("http://{addr}/api/v1/"),
        "k".to_string().into(),
    ))
    .unwrap();
    let source = LiveSource::new(
        Searcher::from(writer.reader().clone()),
        run::key_config(&inst),
        LiveOptions::default(),
    );
    let n = 160;
    let events = (0..n).map(|i| {
        Ok::<_, std::convert::Infallible>(Entry::Event(json!({
            "type": "identify", "userId": format!("u{i}"), "messageId": format!("m{i}"),
            "traits": {"email": format!("p{i}@x.io"), "title": "New",
                       "company": {"id": format!("c{i}"), "name": format!("C{i}")}}})))
    });
    let mut ahead = LookAhead::new(&inst, &source, events, 100, |_| false);
    let mut sent = 0;
    while let Some((i, e)) = ahead.next().await.unwrap() {
        let (r, err) = run::send(&inst, &source, &writer, i, &e).await;
        assert!(
            err.is_none() && r.error.is_none(),
            "event {i}: {err:?} {r:?}"
        );
        sent += 1;
    }
    assert_eq!(sent, n);
    let stats: Value = reqwest::get(format!("http://{addr}/_sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let searches = stats["search"]["requests"].as_u64().unwrap();
    assert_eq!(
        searches,
        (3 * n as u64).div_ceil(48),
        "one search per 16 new people: {stats}"
    );
    let snap = sim.snapshot();
    assert_eq!(
        snap["leads"].as_array().map_or(0, Vec::len),
        n,
        "each created once"
    );
}
