//! Deduplication across a rolling restart of the NATS cluster, and lost NATS replies (issue 18).
//!
//! JetStream rebuilds its
//! message-id window from the messages it stores, and a delivered event is no longer stored, so
//! a client's retry of an old event after a restart used to be accepted and write its old
//! values over newer ones. Real `nats-server`s, `closeflow serve` and simulator on loopback.

use crate::cluster::{drained, node, send_until_accepted};
use crate::serve::{assert_balanced, identify};
use closeflow_e2e::nats::NatsCluster;
use closeflow_e2e::procs::{SimProc, contacts, empty_org, metric, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn after_a_rolling_nats_restart_client_retries_of_delivered_events_are_duplicates() {
    let mut nats = NatsCluster::start(3).await;
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = node(dir.path(), &nats.urls(), "node-a", &sim.api()).await;
    let bases = vec![s.base()];
    let people = 20;
    let ev = |p: usize, title: &str| {
        identify(
            &format!("u{p}"),
            &format!("p{p}@corp.io"),
            &format!("c{p}"),
            title,
        )
    };
    for title in ["old", "new"] {
        for p in 0..people {
            send_until_accepted(&bases, 0, &ev(p, title)).await;
        }
    }
    let total = 2 * people;
    wait_for("delivered", Duration::from_secs(90), || drained(&s, total)).await;
    // Each NATS server restarted in turn, the cluster keeping its quorum throughout.
    for i in 0..3 {
        nats.restart(i).await;
    }
    let writes = sim.answered("other").await;
    // Every client retries its old event (same messageId), as a library does after a timeout.
    for p in 0..people {
        send_until_accepted(&bases, 0, &ev(p, "old")).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for("drained again", Duration::from_secs(60), || {
        drained(&s, total)
    })
    .await;
    let m = s.metrics().await;
    let l = "instance=\"acme\"";
    assert_eq!(
        metric(&m, "closeflow_events_accepted_total", l),
        total as f64,
        "no retry stored again:\n{m}"
    );
    assert_eq!(
        sim.answered("other").await,
        writes,
        "nothing written to Close after the retries"
    );
    for c in contacts(&sim.state().await) {
        assert_eq!(
            c["title"], "new",
            "no old value written over a newer one: {c}"
        );
    }
    assert_balanced(&m, "acme");
}

/// Issue 18: NATS replies lost on the way to a node (a relay between the node and NATS drops
/// them; what was asked is done): the reply to an event record's write, and to a key-lock
/// renewal while Close is slow. Nothing is stranded, locks are not lost, nobody is doubled.
#[tokio::test(flavor = "multi_thread")]
async fn lost_nats_replies_to_an_event_record_and_a_lock_renewal_strand_nothing() {
    let nats = NatsCluster::start(1).await;
    let upstream = nats.nodes[0].url();
    let relay = closeflow_e2e::relay::Relay::start(upstream.trim_start_matches("nats://")).await;
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = node(dir.path(), &relay.url(), "node-a", &sim.api()).await;
    let bases = vec![s.base()];
    // Close slower than a lock renewal period (a third of the 2 s ack deadline): renewals run
    // while each event is written, and the first one's reply is lost; so is the reply to the
    // first write of an event record.
    sim.faults(serde_json::json!({"latency_ms": 1_000})).await;
    relay.lose_reply("$KV.CLOSEFLOW_LOCKS.", 2);
    relay.lose_reply("$KV.CLOSEFLOW_EVENTS.", 1);
    let people = 6;
    for p in 0..people {
        let ev = identify(&format!("u{p}"), &format!("p{p}@corp.io"), "c0", "CTO");
        send_until_accepted(&bases, 0, &ev).await;
    }
    wait_for("delivered", Duration::from_secs(120), || {
        drained(&s, people)
    })
    .await;
    assert_eq!(relay.dropped(), 2, "both replies were lost");
    let st = sim.state().await;
    assert_eq!(contacts(&st).len(), people, "one contact per person: {st}");
    assert_eq!(closeflow_e2e::procs::leads(&st).len(), 1, "one lead: {st}");
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "closeflow_fenced_writes_total",
            "instance=\"acme\",when=\"refused\""
        ),
        0.0,
        "no write refused: the lock survived its lost renewal reply\n{m}"
    );
    assert_balanced(&m, "acme");
}
