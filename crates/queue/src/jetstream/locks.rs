//! Lookup-key locks across the cluster.
//!
//! **Key locks.** Before an event is planned, every lookup key it has is locked
//! (create-if-absent in the lock bucket, all or nothing: a conflict releases what was taken and
//! backs off with jitter, so two nodes never wait on each other), renewed
//! while the write is under way, deleted after it. Partitioning already sends one person's events
//! to one node; the locks cover what people share (a company) and a person named differently.

use super::NodeState;
use super::nodes::fresh;
use super::owner::{self, InstanceQueue};
use crate::{Delivery, KeyHold, QueueError};
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Locks an event's keys for planning (see the module's doc); `None` when the event is no
/// longer this node's.
pub(crate) async fn hold_keys(
    me: &Arc<NodeState>,
    d: &Delivery,
    keys: &[String],
) -> Result<Option<KeyHold>, QueueError> {
    let inst = owner::open(me, &d.instance).await?;
    let mine = |inst: &InstanceQueue| -> Option<bool> {
        let st = inst.lock();
        let h = st.held.get(&d.id)?;
        let l = st.owned.get(&h.partition)?;
        Some(fresh(me, l))
    };
    let mut keys: Vec<String> = keys.to_vec();
    keys.sort();
    keys.dedup();
    let value: bytes::Bytes = format!("{} {}", me.opts.node, d.id).into();
    let mut taken: Vec<(String, u64)> = Vec::new();
    let release = |taken: Vec<(String, u64)>, me: Arc<NodeState>| async move {
        for (k, rev) in taken {
            let _ = me.locks.delete_expect_revision(&k, Some(rev)).await;
        }
    };
    let started = Instant::now();
    let mut wait = Duration::from_millis(5);
    // All keys at once, all or nothing: a node never waits holding some keys, so two nodes
    // can never wait on each other; a conflict releases what was taken and backs off (with
    // jitter, so that two contenders do not collide again in step).
    loop {
        match mine(&inst) {
            None => {
                inst.forget(d.id);
                return Ok(None);
            }
            Some(false) if started.elapsed() > me.opts.ack_wait => {
                return Err(QueueError::Unavailable(
                    "the partition lease could not be renewed".into(),
                ));
            }
            _ => {}
        }
        let mut set = tokio::task::JoinSet::new();
        for k in &keys {
            let (locks, key, value) = (
                me.locks.clone(),
                me.names.lock_key(&d.instance, k),
                value.clone(),
            );
            set.spawn(async move {
                let r = locks.create(&key, value).await;
                (key, r)
            });
        }
        let mut conflict = false;
        let mut failure = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok((key, Ok(rev))) => taken.push((key, rev)),
                Ok((_, Err(e))) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    conflict = true
                }
                Ok((_, Err(e))) => failure = Some(e.to_string()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if !conflict && failure.is_none() {
            break;
        }
        release(std::mem::take(&mut taken), me.clone()).await;
        if let Some(e) = failure {
            return Err(QueueError::Unavailable(format!(
                "locking a lookup key: {e}"
            )));
        }
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(wait.mul_f64(jitter)).await;
        wait = (wait * 2).min(Duration::from_millis(100));
    }
    // Renewed while held (Close may be slow), deleted when the hold is dropped.
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let me = me.clone();
    tokio::spawn(async move {
        let every = me.opts.ack_wait / 3;
        loop {
            tokio::select! {
                _ = &mut rx => break,
                () = tokio::time::sleep(every) => {
                    for (k, rev) in taken.iter_mut() {
                        if let Ok(r) = me.locks.update(k.as_str(), value.clone(), *rev).await {
                            *rev = r;
                        }
                    }
                }
            }
        }
        release(taken, me).await;
    });
    Ok(Some(KeyHold(Some(tx))))
}
