//! Which node delivers which partition, and keeping that true while nodes come and go.
//!
//! **Partitions.** Every live node heartbeats a key in the lease bucket. Partition `p` of every
//! instance is assigned to the `p mod N`-th live node (by name); the assigned node takes the
//! partition's lease (create-if-absent) and renews it by compare-and-set every quarter of the
//! ack deadline. A node that loses its assignment (a node joined) stops pulling from the
//! partition and releases the lease once every event it holds from it is settled; a node that
//! dies stops renewing and the lease expires with the bucket's TTL.
//!
//!
//! A lease is renewed only while fresh enough that the events held under it are still within
//! their ack deadline; see [`super::owner`] for why the order of a partition's events survives
//! a takeover.

use super::NodeState;
use super::errors::failed;
use super::nodes::{PartitionLease, fresh, heartbeat, live_nodes};
use super::owner::{self, InstanceQueue, step_bound};
use crate::QueueError;
use async_nats::jetstream::consumer;
use async_nats::jetstream::{self, AckKind, kv};
use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Opens an instance for delivery: its consumers exist and this node has claimed its share
/// of the partitions (the first time, at once, so a lone node delivers immediately).
pub(crate) async fn open_for_delivery(
    me: &Arc<NodeState>,
    instance: &str,
) -> Result<Arc<InstanceQueue>, QueueError> {
    let inst = owner::open(me, instance).await?;
    inst.consumers
        .get_or_try_init(|| async {
            let mut out = Vec::new();
            for p in 0..inst.partitions {
                let c = inst
                    .stream
                    .get_or_create_consumer(
                        &me.names.consumer(p),
                        consumer::pull::Config {
                            durable_name: Some(me.names.consumer(p)),
                            filter_subject: me.names.queue_subject(instance, p),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: me.opts.ack_wait,
                            max_deliver: -1,
                            max_ack_pending: 20_000,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| failed("creating a consumer", e))?;
                out.push(c);
            }
            Ok::<_, QueueError>(out)
        })
        .await?;
    let first = {
        let mut st = inst.lock();
        !std::mem::replace(&mut st.delivering, true)
    };
    if first {
        heartbeat(me).await?;
        let nodes = live_nodes(me).await?;
        manage(me, instance, &inst, &nodes).await;
    }
    Ok(inst)
}

/// One round of lease keeping for an instance: renew, release, claim; all partitions at once,
/// so that one slow answer delays no other renewal.
async fn manage(me: &Arc<NodeState>, instance: &str, inst: &Arc<InstanceQueue>, nodes: &[String]) {
    let n = nodes.len().max(1);
    let me_at = nodes.iter().position(|x| *x == me.opts.node);
    let mut set = tokio::task::JoinSet::new();
    for p in 0..inst.partitions {
        let assigned = me_at == Some(p as usize % n);
        let (me, inst, instance) = (me.clone(), inst.clone(), instance.to_string());
        set.spawn(async move { keep_lease(&me, &instance, &inst, p, assigned).await });
    }
    while set.join_next().await.is_some() {}
}

async fn keep_lease(me: &NodeState, instance: &str, inst: &InstanceQueue, p: u32, assigned: bool) {
    let key = me.names.lease_key(instance, p);
    if !assigned && inst.lock().owned.contains_key(&p) {
        // Draining: the events no attempt is working on (one in a long backoff would hold the
        // partition, and 1/P of the keys, until it is settled) go back to the stream, whose
        // next owner receives them before anything newer; their attempts and backoff are in
        // their records. Only those in flight are waited for.
        for m in inst.let_go(p) {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
    }
    // The lease's revision, and whether this node still holds events from the partition.
    let lease = {
        let st = inst.lock();
        st.owned
            .get(&p)
            .map(|l| (l.rev, st.held.values().any(|h| h.partition == p)))
    };
    match lease {
        Some((rev, held_here)) => {
            if !assigned && !held_here {
                let _ = me.leases.delete_expect_revision(&key, Some(rev)).await;
                inst.lock().owned.remove(&p);
                info!(
                    instance,
                    partition = p,
                    "partition handed over to another node"
                );
                return;
            }
            let renewed = tokio::time::timeout(
                step_bound(me),
                me.leases.update(&key, me.opts.node.clone().into(), rev),
            )
            .await;
            let renewed = match renewed {
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // An earlier renewal may have landed with its reply lost: the lease is
                    // still ours if it still names this node.
                    match me.leases.entry(&key).await {
                        Ok(Some(en))
                            if en.operation == kv::Operation::Put
                                && en.value.as_ref() == me.opts.node.as_bytes() =>
                        {
                            Ok(Ok(en.revision))
                        }
                        _ => Ok(Err(e)),
                    }
                }
                other => other,
            };
            match renewed {
                Ok(Ok(rev)) => {
                    if let Some(l) = inst.lock().owned.get_mut(&p) {
                        l.rev = rev;
                        l.renewed = Instant::now();
                        l.draining = !assigned;
                    }
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    lost(inst, p);
                    warn!(
                        instance,
                        partition = p,
                        "partition lease lost (this node could not renew it in time); its events go to the new owner"
                    );
                }
                // The cluster is busy or electing: keep the lease until it is stale.
                Ok(Err(e)) => {
                    warn!(instance, partition = p, error = %e, "cannot renew a partition lease")
                }
                Err(_) => warn!(
                    instance,
                    partition = p,
                    "renewing a partition lease got no answer in time"
                ),
            }
        }
        None if assigned => {
            let created = tokio::time::timeout(
                step_bound(me),
                me.leases.create(&key, me.opts.node.clone().into()),
            )
            .await;
            if let Ok(Ok(rev)) = created {
                inst.lock().owned.insert(
                    p,
                    PartitionLease {
                        rev,
                        renewed: Instant::now(),
                        draining: false,
                    },
                );
                inst.mark_dirty();
                info!(instance, partition = p, "partition taken");
            }
        }
        None => {}
    }
}

/// The lease is gone: forget every event held from the partition, in flight or not (all are
/// redelivered to the new owner). One not started yet is dropped when the scheduler tries to
/// start it (`hold_keys` answers `None`); one in flight cannot be settled here any more
/// (`settle` answers `NotFound`).
fn lost(inst: &InstanceQueue, p: u32) {
    let mut st = inst.lock();
    st.owned.remove(&p);
    st.gapped.remove(&p);
    st.held.retain(|_, h| h.partition != p);
}

/// Extends the ack deadline of every event held from a partition whose lease is fresh.
async fn extend(me: &NodeState, inst: &InstanceQueue) {
    let msgs: Vec<jetstream::Message> = {
        let st = inst.lock();
        st.held
            .values()
            .filter(|h| st.owned.get(&h.partition).is_some_and(|l| fresh(me, l)))
            .map(|h| h.msg.clone())
            .collect()
    };
    for m in msgs {
        let _ = m.ack_with(AckKind::Progress).await;
    }
}

/// The node's background work: heartbeat, leases, deadline extension, the queue depth.
pub(crate) fn start(me: &Arc<NodeState>) {
    let weak: Weak<NodeState> = Arc::downgrade(me);
    let tick = (me.opts.ack_wait / 4).max(Duration::from_millis(200));
    tokio::spawn(async move {
        let mut last_depth = Instant::now() - Duration::from_secs(10);
        loop {
            let Some(me) = weak.upgrade() else { return };
            match tokio::time::timeout(step_bound(&me), heartbeat(&me)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "cannot reach the NATS cluster"),
                Err(_) => warn!("the NATS cluster did not answer a heartbeat in time"),
            }
            let insts: Vec<(String, Arc<InstanceQueue>)> = me
                .instances
                .lock()
                .await
                .iter()
                .filter(|(_, i)| i.lock().delivering)
                .map(|(n, i)| (n.clone(), i.clone()))
                .collect();
            if let Ok(Ok(nodes)) = tokio::time::timeout(step_bound(&me), live_nodes(&me)).await {
                for (name, inst) in &insts {
                    manage(&me, name, inst, &nodes).await;
                }
            }
            for (_, inst) in &insts {
                extend(&me, inst).await;
            }
            if last_depth.elapsed() > Duration::from_secs(1) {
                last_depth = Instant::now();
                if let Ok(Ok(l)) =
                    tokio::time::timeout(step_bound(&me), super::stats::loads(&me)).await
                {
                    *me.loads
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = l;
                }
            }
            drop(me);
            tokio::time::sleep(tick).await;
        }
    });
}

/// Wakes the local scheduler when any node queued events for an instance.
pub(crate) async fn listen_for_arrivals(me: &Arc<NodeState>) -> Result<(), QueueError> {
    let mut sub = me
        .client
        .subscribe(me.names.wake_all())
        .await
        .map_err(|e| failed("subscribing", e))?;
    let weak = Arc::downgrade(me);
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Some(me) = weak.upgrade() else { return };
            let Some(instance) = me.names.instance_of_wake(m.subject.as_str()) else {
                continue;
            };
            if let Some(i) = me.instances.lock().await.get(&instance) {
                i.mark_dirty();
            }
            if let Some(a) = &me.arrived {
                a(&instance);
            }
        }
    });
    Ok(())
}
