//! The JetStream backend when NATS's reply to an event-record write is lost: the write stands,
//! the node does not know its new revision. Issue 18: the next settle's compare-and-set failed
//! against the node's own write, took it for "settled elsewhere", and the event stayed queued
//! for ever, applied but never counted or acknowledged. A real nats-server on loopback; the
//! lost reply is made by writing the record again behind the queue's back (its revision moves
//! on, its content is the node's own), which is what the node finds after a lost reply.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::jetstream::JetStreamQueue;
use closeflow_queue::{Outcome, now_ms};
use common::one_event;
use std::time::Duration;

async fn queue(url: &str, prefix: &str) -> JetStreamQueue {
    common::started(url, prefix, Duration::from_secs(2), 1).await
}

/// Writes the event's record again as it is: a new revision with the same content.
async fn rewrite_record(url: &str, prefix: &str, seq: i64) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let kv = js.get_key_value(format!("{prefix}_EVENTS")).await.unwrap();
    let key = format!("a.{seq}");
    let e = kv
        .entry(&key)
        .await
        .unwrap()
        .expect("the record was written");
    kv.update(&key, e.value, e.revision).await.unwrap();
}

async fn applied_and_gone(q: &JetStreamQueue) {
    let s = common::stats_of(q, "a").await;
    assert_eq!(
        (s.accepted, s.applied, s.queued),
        (1, 1, 0),
        "applied, counted once, no longer queued: {s:?}"
    );
    assert!(s.balanced(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_settle_after_a_lost_reply_to_a_retry_record_is_counted_and_acknowledged() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = queue(&url, "LR1").await;
    let d = one_event(&q).await;
    let retry = Outcome::Retry {
        not_before: now_ms(),
        reason: "http_503".into(),
        error: "HTTP 503".into(),
    };
    let d = d.settle(retry).await.unwrap().expect("the lease back");
    rewrite_record(&url, "LR1", d.id).await;
    let settled = d.settle(Outcome::Applied).await;
    assert!(
        settled.is_ok(),
        "settled here, not elsewhere: {:?}",
        settled.err().map(|e| e.error)
    );
    applied_and_gone(&q).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_settle_after_a_lost_reply_to_its_record_is_recorded_not_refused() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = queue(&url, "LR2").await;
    let d = one_event(&q).await;
    let later = now_ms() + 1;
    let retry = || Outcome::Retry {
        not_before: later,
        reason: "http_503".into(),
        error: "HTTP 503".into(),
    };
    let d = d.settle(retry()).await.unwrap().expect("the lease back");
    assert_eq!(d.attempts, 1);
    rewrite_record(&url, "LR2", d.id).await;
    // The next retry finds the record at a newer revision than its lease knows, not settled:
    // recorded on that revision (refused as "changed meanwhile", every later settle of the
    // event would be refused the same way).
    let d = d.settle(retry()).await;
    let d = d.map_err(|e| e.error).unwrap().expect("the lease back");
    assert_eq!(d.attempts, 2, "the second attempt recorded");
    d.settle(Outcome::Applied)
        .await
        .map_err(|e| e.error)
        .unwrap();
    applied_and_gone(&q).await;
}

/// The same through a relay that loses NATS's real reply to the record's first write (stored;
/// the node never hears so).
#[tokio::test(flavor = "multi_thread")]
async fn a_settle_whose_record_write_lost_its_reply_in_transit_is_settled_not_stranded() {
    let nats = NatsCluster::start(1).await;
    let upstream = nats.nodes[0]
        .url()
        .trim_start_matches("nats://")
        .to_string();
    let relay = closeflow_e2e::relay::Relay::start(&upstream).await;
    let q = queue(&relay.url(), "LR3").await;
    let d = one_event(&q).await;
    relay.lose_reply("$KV.LR3_EVENTS.", 1);
    let retry = Outcome::Retry {
        not_before: now_ms(),
        reason: "http_503".into(),
        error: "HTTP 503".into(),
    };
    // The create's reply is lost; the client reads the key back, finds it written (by this
    // very write) and reports it as existing: the settle recognises its own record.
    let d = d
        .settle(retry)
        .await
        .map_err(|e| e.error)
        .unwrap()
        .expect("the lease back, the retry recorded");
    assert_eq!(relay.dropped(), 1, "the reply was lost");
    assert_eq!(d.attempts, 1);
    let settled = d.settle(Outcome::Applied).await;
    assert!(
        settled.is_ok(),
        "settled here: {:?}",
        settled.err().map(|e| e.error)
    );
    applied_and_gone(&q).await;
}
