//! The JetStream backend's deduplication across a NATS restart: a client's retry of an event
//! already delivered (acknowledged, so gone from the work-queue stream) is still a duplicate
//! within the dedup window. JetStream rebuilds its own message-id window from the messages it
//! stores only, so after a restart it had forgotten every delivered event (issue 18): the retry
//! was accepted and wrote its old values over newer ones. A real nats-server on loopback.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::jetstream::{self, JetStreamQueue};
use closeflow_queue::{Deliver, Enqueued, Intake, Outcome};
use common::event;
use std::time::Duration;

async fn queue(url: &str) -> JetStreamQueue {
    let mut o = jetstream::Options::new(vec![url.to_string()], "restart-node".into());
    o.prefix = "NR".into();
    o.partitions = 1;
    o.ack_wait = Duration::from_secs(2);
    o.dedup_window = Duration::from_secs(600);
    o.retention = Duration::from_secs(600);
    o.replicas = Some(1);
    let q = JetStreamQueue::connect(o, None, None)
        .await
        .expect("the queue connects");
    q.start();
    q
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_event_sent_again_after_a_nats_restart_is_a_duplicate() {
    let mut nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = queue(&url).await;
    assert_eq!(
        q.enqueue("a", vec![event("m1")]).await.unwrap(),
        [Enqueued::Accepted]
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got = q.fetch("a", 10).await.unwrap();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.pop()
        .expect("handed out")
        .settle(Outcome::Applied)
        .await
        .map_err(|e| e.error)
        .unwrap();
    drop(q);
    nats.restart(0).await;
    let q = queue(&url).await;
    // Before the restart JetStream's own window answers; after it only what closeflow keeps.
    assert_eq!(
        q.enqueue("a", vec![event("m1")]).await.unwrap(),
        [Enqueued::Duplicate],
        "the retry of a delivered event, within the window, after a restart"
    );
    assert_eq!(
        q.enqueue("a", vec![event("m2")]).await.unwrap(),
        [Enqueued::Accepted]
    );
    let s = common::stats_of(&q, "a").await;
    assert_eq!(
        (s.accepted, s.applied, s.queued, s.duplicates),
        (2, 1, 1, 1),
        "{s:?}"
    );
}

/// A `messageId` far longer than a NATS subject may be is still deduplicated (its key in the
/// seen bucket is a hash), and does not fail its batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_very_long_message_id_is_accepted_once() {
    let nats = NatsCluster::start(1).await;
    let q = common::started(&nats.nodes[0].url(), "NR2", Duration::from_secs(2), 1).await;
    let long = format!("{}é/.*>", "x".repeat(5_000));
    assert_eq!(
        q.enqueue("a", vec![event(&long), event("m2")])
            .await
            .unwrap(),
        [Enqueued::Accepted, Enqueued::Accepted]
    );
    assert_eq!(
        q.enqueue("a", vec![event(&long)]).await.unwrap(),
        [Enqueued::Duplicate]
    );
}
