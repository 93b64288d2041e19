//! Two processes writing one organisation (a cluster's nodes), each with its own lookup cache,
//! against the simulator on loopback: a "no match" one of them cached is searched again before
//! it is planned on, so a company the other created meanwhile is not created twice.

mod common;

use closeflow_close::run;
use closeflow_close_api::live::LiveOptions;
use closeflow_mapping::events::Entry;
use serde_json::json;

fn person(user: &str) -> Entry {
    Entry::Event(
        json!({"type": "identify", "userId": user, "messageId": format!("m-{user}"),
        "traits": {"email": format!("{user}@x.io"), "company": {"id": "c0", "name": "C0"}}}),
    )
}

/// Leads in the simulator after node B, which read ahead while the company did not exist, plans
/// its event once node A has created the company.
async fn leads_after_a_race(shared_writers: bool) -> usize {
    let (sim, addr) = common::sim().await;
    let inst = common::instance();
    let opts = LiveOptions {
        shared_writers,
        ..LiveOptions::default()
    };
    let node = || common::process(&inst, addr, opts.clone());
    let ((wa, a), (wb, b)) = (node(), node());
    let eb = person("u2");
    let (_, pb) = run::prepare(&inst, 0, &eb);
    let pb: Vec<_> = pb.into_iter().map(|(_, p)| p).collect();
    // B looks its event up ahead: no company c0 yet, cached as "no match".
    assert!(b.read_ahead(&[pb]).await.iter().all(Result::is_ok));
    // A creates the company (and its person).
    let (r, err) = run::send(&inst, &a, &wa, 0, &person("u1")).await;
    assert!(err.is_none() && r.error.is_none(), "{err:?} {r:?}");
    // B, holding its keys now, plans its event.
    let (r, err) = run::send(&inst, &b, &wb, 1, &eb).await;
    assert!(err.is_none() && r.error.is_none(), "{err:?} {r:?}");
    sim.snapshot()["leads"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_shared_writers_a_cached_no_match_is_searched_again_before_planning() {
    assert_eq!(
        leads_after_a_race(true).await,
        1,
        "B found the company A created and added its person there"
    );
    // The same race with the cache trusted (one process, the default): B plans on its stale
    // "no match" within the 2 s it is trusted and creates the company again. What a single
    // process never meets (its own writes refresh its cache) and a cluster would.
    assert_eq!(leads_after_a_race(false).await, 2);
}
