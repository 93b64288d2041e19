//! The JetStream backend's lookup-key locks as the write path sees them (`KeyHold::holds`,
//! checked before every Close write): a lock another holder has taken is lost at the next
//! renewal, and locks that could not be renewed for as long as they live are not trusted. A
//! real nats-server on loopback.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::Deliver;
use closeflow_queue::jetstream::{JetStreamQueue, names};
use std::time::{Duration, Instant};

const ACK_WAIT: Duration = Duration::from_millis(1_500);

async fn queue(url: &str, prefix: &str) -> JetStreamQueue {
    common::started(url, prefix, ACK_WAIT, 1).await
}

/// The first event handed out, and a hold on its key `user:u1`.
async fn held(
    q: &JetStreamQueue,
) -> (
    closeflow_queue::Lease<JetStreamQueue>,
    closeflow_queue::KeyHold,
) {
    let d = common::one_event(q).await;
    let hold = q
        .hold_keys(&d, &["user:u1".to_string()])
        .await
        .unwrap()
        .expect("the event is this node's");
    (d, hold)
}

async fn until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_another_holder_took_is_lost_at_the_next_renewal_and_left_to_it() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = queue(&url, "KL1").await;
    let (_d, hold) = held(&q).await;
    assert!(hold.holds());
    // Another node's lock on the key, as after this one expired and another took it.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let kv = js.get_key_value("KL1_LOCKS").await.unwrap();
    let key = format!("a.{}", names::enc("user:u1"));
    kv.put(&key, "node-b 7".into()).await.unwrap();
    until("the hold lost", ACK_WAIT, || !hold.holds()).await;
    drop(hold);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = kv
        .entry(&key)
        .await
        .unwrap()
        .expect("the other's lock stays");
    assert_eq!(
        &e.value[..],
        b"node-b 7",
        "releasing deletes only our own lock"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_not_renewed_for_as_long_as_they_live_are_not_trusted() {
    let mut nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = queue(&url, "KL2").await;
    let (_d, hold) = held(&q).await;
    // Renewals keep it (several renewal periods of a third of the ack deadline).
    tokio::time::sleep(ACK_WAIT * 2).await;
    assert!(hold.holds(), "renewed while NATS answers");
    // NATS stops answering: no renewal succeeds, and the locks may expire and be taken.
    nats.nodes[0].kill9();
    until("the hold no longer trusted", ACK_WAIT * 2, || !hold.holds()).await;
}

/// A renewal whose reply is lost in transit (a relay drops NATS's answer; the renewal is stored):
/// the lock is read back and kept, not left to expire on a revision the node no longer knows.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_renewal_whose_reply_was_lost_keeps_the_lock() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let relay = closeflow_e2e::relay::Relay::start(url.trim_start_matches("nats://")).await;
    let q = queue(&relay.url(), "KL3").await;
    let (_d, hold) = held(&q).await;
    // The next write to the lock bucket is the first renewal.
    relay.lose_reply("$KV.KL3_LOCKS.", 1);
    tokio::time::sleep(ACK_WAIT * 3).await;
    assert_eq!(relay.dropped(), 1, "a renewal's reply was lost");
    assert!(hold.holds(), "still held");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let kv = js.get_key_value("KL3_LOCKS").await.unwrap();
    let e = kv
        .entry(format!("a.{}", names::enc("user:u1")))
        .await
        .unwrap()
        .expect("the lock did not expire (two lock lifetimes later)");
    assert!(e.value.starts_with(b"test-node "), "still this node's");
}
