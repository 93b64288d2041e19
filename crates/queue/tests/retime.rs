//! Changing `--ack-wait` on a JetStream cluster: a node started with another value refuses to
//! start while another node is alive, and re-times the cluster (lease and lock buckets, every
//! partition consumer's ack deadline) once none is. A real nats-server on loopback.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::jetstream::JetStreamQueue;
use closeflow_queue::{Deliver, Intake};
use std::time::Duration;

async fn node(url: &str, name: &str, ack_wait: Duration) -> JetStreamQueue {
    common::node(url, "RT", name, ack_wait, 2).await
}

async fn consumer_ack_waits(url: &str) -> Vec<Duration> {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream("RT_Q_a").await.unwrap();
    let mut out = Vec::new();
    let mut cs = stream.consumers();
    while let Some(c) = cs.next().await {
        out.push(c.unwrap().config.ack_wait);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ack_wait_is_refused_while_another_node_lives_and_retimes_the_cluster_after() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let old = Duration::from_secs(1);
    let a = node(&url, "node-a", old).await;
    a.start();
    a.enqueue("a", vec![common::event("m1")]).await.unwrap();
    // Delivering: node a heartbeats, its consumers exist with the old deadline.
    let _ = a.fetch("a", 10).await.unwrap();
    assert_eq!(consumer_ack_waits(&url).await, [old, old]);
    let new = Duration::from_millis(2_500);
    let b = node(&url, "node-b", new).await;
    let refused = b.check_timing().await.unwrap().unwrap_err();
    assert!(refused.contains("stop every node"), "{refused}");
    // Node a stops; once its heartbeat has expired (its lease time, 2 × 1 s + 2 s), b is alone.
    drop(a);
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.check_timing()
        .await
        .unwrap()
        .expect("alone, node b re-times the cluster");
    assert_eq!(consumer_ack_waits(&url).await, [new, new]);
    b.check_timing().await.unwrap().expect("and agrees with it");
    // The event node a held comes back to node b.
    b.start();
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(b.fetch("a", 10).await.unwrap());
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        got.len(),
        1,
        "the queued event is delivered after the change"
    );
}
