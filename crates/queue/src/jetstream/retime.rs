//! Changing `--ack-wait` on a cluster. Every node must time leases alike, so the timing lives
//! in the cluster: the lease and lock buckets' TTLs and each partition consumer's ack
//! deadline. A node started with another value re-times the cluster only when no other node is
//! alive (their heartbeats expired): the operator stops every node and starts them again with
//! the new value. While another node is alive it refuses to start, as before.

use super::NodeState;
use super::errors::failed;
use super::nodes::live_nodes;
use crate::QueueError;
use async_nats::jetstream::{consumer, kv};
use futures_util::StreamExt;
use std::time::Duration;
use tracing::info;

/// Whether this node is the only one alive (the others' heartbeats expired). It heartbeats
/// first: two nodes started at once then both see the other and both refuse (start one alone
/// first), rather than both re-timing.
pub(super) async fn alone(me: &NodeState) -> Result<bool, QueueError> {
    super::nodes::heartbeat(me).await?;
    let alone = live_nodes(me).await? == [me.opts.node.clone()];
    if !alone {
        // Refusing to start: not a live node the others should give partitions to.
        let _ = me.leases.delete(me.names.node_key(&me.opts.node)).await;
    }
    Ok(alone)
}

/// Re-creates the lease and lock buckets with this node's timing (they hold only leases,
/// heartbeats and locks, which the nodes that are gone no longer need), and gives every
/// partition consumer of every instance this node's ack deadline.
pub(super) async fn retime(me: &NodeState, was: Duration) -> Result<(), QueueError> {
    // The lease bucket last: its TTL is what `check_timing` compares, so a re-timing cut
    // short is done again at the next start.
    recreate(me, me.names.locks_bucket(), me.opts.ack_wait).await?;
    retime_consumers(me).await?;
    recreate(me, me.names.leases_bucket(), me.opts.lease_ttl()).await?;
    info!(from = ?was, to = ?me.opts.ack_wait, "re-timed the cluster: no other node is alive");
    Ok(())
}

async fn recreate(me: &NodeState, bucket: String, ttl: Duration) -> Result<(), QueueError> {
    {
        let _ = me.js.delete_key_value(&bucket).await;
        me.js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age: ttl,
                num_replicas: me.replicas,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&format!("re-creating bucket {bucket}"), e))?;
    }
    Ok(())
}

async fn retime_consumers(me: &NodeState) -> Result<(), QueueError> {
    let mut names = me.js.stream_names();
    let mut streams = Vec::new();
    while let Some(n) = names.next().await {
        let n = n.map_err(|e| failed("listing streams", e))?;
        if me.names.instance_of_stream(&n).is_some() {
            streams.push(n);
        }
    }
    for s in streams {
        let mut stream = me
            .js
            .get_stream(&s)
            .await
            .map_err(|e| failed("reading a queue stream", e))?;
        let mut consumers = stream.consumers();
        let mut configs = Vec::new();
        while let Some(c) = consumers.next().await {
            let c = c.map_err(|e| failed("listing consumers", e))?;
            configs.push(c.config);
        }
        for mut c in configs {
            c.ack_wait = me.opts.ack_wait;
            let c: consumer::pull::Config = consumer::pull::Config {
                durable_name: c.durable_name,
                filter_subject: c.filter_subject,
                ack_policy: c.ack_policy,
                ack_wait: c.ack_wait,
                max_deliver: c.max_deliver,
                max_ack_pending: c.max_ack_pending,
                ..Default::default()
            };
            stream
                .update_consumer(c)
                .await
                .map_err(|e| failed("re-timing a consumer", e))?;
        }
        let _ = stream.info().await;
    }
    Ok(())
}
