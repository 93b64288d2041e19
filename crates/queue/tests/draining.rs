//! A JetStream partition handed to another node while its events wait out a retry backoff: the
//! draining node hands them over (back to the stream, their attempts and backoff in their
//! records) instead of holding the partition, and 1/P of the keys, until the backoff ends or
//! `--retry-max-age` passes (issue 18: 87 s with a max age of 90 s). A real nats-server.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::jetstream::JetStreamQueue;
use closeflow_queue::{Deliver, Intake, Outcome, now_ms};
use std::time::{Duration, Instant};

async fn node(url: &str, name: &str) -> JetStreamQueue {
    let q = common::node(url, "DR", name, Duration::from_secs(1), 2).await;
    q.start();
    q
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_partition_hands_over_events_waiting_out_a_backoff() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let a = node(&url, "node-a").await;
    let ids: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    let evs = ids.iter().map(|id| common::event(id)).collect();
    a.enqueue("a", evs).await.unwrap();
    // Node a alone owns both partitions, takes every event, and each fails: retry in 2 minutes.
    let mut held = Vec::new();
    let start = Instant::now();
    while held.len() < ids.len() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node a got {held:?}"
        );
        held.extend(a.fetch("a", 10).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = now_ms() + 120_000;
    let mut waiting = Vec::new();
    for d in held {
        let retry = Outcome::Retry {
            not_before: later,
            reason: "http_503".into(),
            error: "HTTP 503".into(),
        };
        waiting.push(
            d.settle(retry)
                .await
                .map_err(|e| e.error)
                .unwrap()
                .expect("kept"),
        );
    }
    // Node b joins: one partition is now its, and node a drains it.
    let b = node(&url, "node-b").await;
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(15) {
        got.extend(b.fetch("a", 10).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !got.is_empty(),
        "node b received the drained partition's waiting events within 15 s (they wait 2 minutes)"
    );
    for d in &got {
        assert_eq!(
            (d.attempts, d.not_before),
            (1, later),
            "attempts and backoff carried over"
        );
    }
    // Node a no longer holds what it handed over: settling one of them there finds it gone.
    let handed: Vec<i64> = got.iter().map(|d| d.id).collect();
    for d in waiting.into_iter().filter(|d| handed.contains(&d.id)) {
        let e = d.settle(Outcome::Applied).await.unwrap_err();
        assert!(
            matches!(e.error, closeflow_queue::QueueError::NotFound(_)),
            "{:?}",
            e.error
        );
    }
}
