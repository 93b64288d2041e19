//! `send`'s look-ahead against the simulator on loopback, at Close's recorded limits: the
//! searches it makes are full ones, whatever the pace of the run.

mod common;

use closeflow_close::run;
use closeflow_close_api::live::LiveOptions;
use closeflow_close_api::lookahead::LookAhead;
use closeflow_mapping::events::Entry;
use serde_json::{Value, json};

/// A run of new people (three lookup keys each: company, User ID, email) searches in full
/// searches: 16 events' 48 keys a search of 50, so 160 events cost 10 searches. Sized to the
/// run's pace instead, a run starting (no pace yet) searched for one event at a time and spent
/// the search budget (16 per 8 s) in its first second.
#[tokio::test(flavor = "multi_thread")]
async fn new_people_are_looked_up_in_full_searches_from_the_first_event() {
    let (sim, addr) = common::sim().await;
    let inst = common::instance();
    let (writer, source) = common::process(&inst, addr, LiveOptions::default());
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
