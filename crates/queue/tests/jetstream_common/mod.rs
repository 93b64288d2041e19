//! What the JetStream fault tests share: a node of the queue on a prefix of its own, an event,
//! the first event handed out, an instance's counts. (Each test file uses some of it.)
#![allow(dead_code)]

use closeflow_queue::jetstream::{self, JetStreamQueue};
use closeflow_queue::{Deliver, Inspect, InstanceStats, Intake, Lease, NewEvent, now_ms};
use std::time::Duration;

/// A node named `node` of the queue under `prefix` (one replica), connected, not started.
pub async fn node(
    url: &str,
    prefix: &str,
    node: &str,
    ack_wait: Duration,
    partitions: u32,
) -> JetStreamQueue {
    let mut o = jetstream::Options::new(vec![url.to_string()], node.into());
    o.prefix = prefix.into();
    o.partitions = partitions;
    o.ack_wait = ack_wait;
    o.replicas = Some(1);
    JetStreamQueue::connect(o, None, None)
        .await
        .expect("the queue connects")
}

/// As [`node`], taking part in delivery.
pub async fn started(
    url: &str,
    prefix: &str,
    ack_wait: Duration,
    partitions: u32,
) -> JetStreamQueue {
    let q = node(url, prefix, "test-node", ack_wait, partitions).await;
    q.start();
    q
}

/// An identify with this `messageId` (and a User ID of its own).
pub fn event(id: &str) -> NewEvent {
    NewEvent {
        message_id: id.into(),
        body: format!(r#"{{"type":"identify","messageId":"{id}","userId":"u_{id}"}}"#),
        received_at: now_ms(),
        meta: None,
    }
}

/// Enqueues `m1` for instance `a` and waits until it is handed out.
pub async fn one_event(q: &JetStreamQueue) -> Lease<JetStreamQueue> {
    q.enqueue("a", vec![event("m1")]).await.unwrap();
    for _ in 0..100 {
        if let Some(d) = q.fetch("a", 10).await.unwrap().pop() {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the event was never handed out");
}

/// Instance `instance`'s counts.
pub async fn stats_of(q: &JetStreamQueue, instance: &str) -> InstanceStats {
    q.stats()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.instance == instance)
        .unwrap_or_default()
}
