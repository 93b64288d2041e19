//! The lease bucket's view of the cluster: which nodes are alive (their heartbeats) and whether
//! a partition lease this node holds is still fresh. Both the lease keeper (`leases`) and the
//! event holder (`owner`) ask these questions, so they live apart from both.

use super::NodeState;
use super::errors::failed;
use super::names;
use crate::QueueError;
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::time::Instant;

pub(super) struct PartitionLease {
    pub(super) rev: u64,
    pub(super) renewed: Instant,
    pub(super) draining: bool,
}

/// A lease renewed recently enough that its events' deadlines may still be extended.
pub(super) fn fresh(me: &NodeState, l: &PartitionLease) -> bool {
    l.renewed.elapsed() < me.opts.ack_wait / 2
}

pub(super) async fn heartbeat(me: &NodeState) -> Result<(), QueueError> {
    me.leases
        .put(
            me.names.node_key(&me.opts.node),
            crate::now_ms().to_string().into(),
        )
        .await
        .map(|_| ())
        .map_err(|e| failed("heartbeat", e))
}

/// The live nodes, sorted: those whose heartbeat has not expired from the lease bucket.
pub(super) async fn live_nodes(me: &NodeState) -> Result<Vec<String>, QueueError> {
    let stream = me
        .js
        .get_stream(format!("KV_{}", me.names.leases_bucket()))
        .await
        .map_err(|e| failed("listing nodes", e))?;
    let prefix = format!("$KV.{}.n.", me.names.leases_bucket());
    let mut info = stream
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|e| failed("listing nodes", e))?;
    let mut nodes = BTreeSet::new();
    while let Some(s) = info.next().await {
        let (subject, _) = s.map_err(|e| failed("listing nodes", e))?;
        if let Some(n) = subject.strip_prefix(&prefix).and_then(names::dec) {
            nodes.insert(n);
        }
    }
    nodes.insert(me.opts.node.clone());
    Ok(nodes.into_iter().collect())
}
