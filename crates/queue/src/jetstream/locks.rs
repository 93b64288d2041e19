//! Lookup-key locks across the cluster.
//!
//! **Key locks.** Before an event is planned, every lookup key it has is locked
//! (create-if-absent in the lock bucket, all or nothing: a conflict releases what was taken and
//! backs off with jitter, so two nodes never wait on each other), renewed
//! while the write is under way, deleted after it.
//!
//! **The fence.** Renewals run for all of an event's locks at once, each bounded; after an
//! error or no reply a lock is read back (a renewal stored with its reply lost holds our value
//! at a newer revision). A lock found gone or another's is lost for good; locks not all renewed
//! for three quarters of their TTL are not trusted. The hold's [`Fence`] says so, and the
//! server checks it before every Close write. Partitioning already sends one person's events
//! to one node; the locks cover what people share (a company) and a person named differently.

use super::NodeState;
use super::nodes::fresh;
use super::owner::{self, InstanceQueue};
use crate::{Delivery, Fence, KeyHold, QueueError};
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// Locks an event's keys for planning (see the module's doc); `None` when the event is no
/// longer this node's.
pub(crate) async fn hold_keys(
    me: &Arc<NodeState>,
    d: &Delivery,
    keys: &[String],
) -> Result<Option<KeyHold>, QueueError> {
    let inst = owner::open(me, &d.instance).await?;
    let id = d.id;
    let ours = |inst: &InstanceQueue| mine(me, inst, id);
    let mut keys: Vec<String> = keys.to_vec();
    keys.sort();
    keys.dedup();
    // Unique to this hold, so that a lock read back is known as this hold's and no other's
    // (a later hold of the same event on this node included).
    let value: bytes::Bytes =
        format!("{} {} {:016x}", me.opts.node, d.id, rand::random::<u64>()).into();
    let (d_instance, d_id) = (d.instance.clone(), d.id);
    let mut taken: Vec<(String, u64)> = Vec::new();
    let release = |taken: Vec<(String, u64)>, me: Arc<NodeState>| async move {
        for (k, rev) in taken {
            let _ = me.locks.delete_expect_revision(&k, Some(rev)).await;
        }
    };
    let started = Instant::now();
    let mut wait = Duration::from_millis(5);
    let mut started_locking;
    // All keys at once, all or nothing: a node never waits holding some keys, so two nodes
    // can never wait on each other; a conflict releases what was taken and backs off (with
    // jitter, so that two contenders do not collide again in step).
    loop {
        match ours(&inst) {
            None => {
                inst.forget(d.id);
                return Ok(None);
            }
            // Never lock, plan or write on a partition lease that is not fresh (this node
            // may have been paused past it, and another may deliver the partition now): wait
            // for the lease keeper to renew it, or give up after an ack deadline.
            Some(false) if started.elapsed() > me.opts.ack_wait => {
                return Err(QueueError::Unavailable(
                    "the partition lease could not be renewed".into(),
                ));
            }
            Some(false) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Some(true) => {}
        }
        started_locking = Instant::now();
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
    // Under the same lock as a draining partition's `let_go`: either the event is let go
    // first (and this attempt backs off) or it is marked first (and kept).
    if !inst.attempting(id, true) {
        release(taken, me.clone()).await;
        return Ok(None);
    }
    // Renewed while held (Close may be slow), deleted when the hold is dropped.
    let fence = Arc::new(Fence::until(started_locking + trusted(me.opts.ack_wait)));
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let (me, watch) = (me.clone(), fence.clone());
    tokio::spawn(async move {
        let every = me.opts.ack_wait / 3;
        loop {
            tokio::select! {
                _ = &mut rx => break,
                () = tokio::time::sleep(every) => {
                    let began = Instant::now();
                    // The partition given away, or its lease not fresh: the locks are not
                    // renewed (they lapse), and given away, lost.
                    match mine(&me, &inst, id) {
                        None => {
                            watch.lose();
                            break;
                        }
                        Some(false) => continue,
                        Some(true) => {}
                    }
                    match renew(&me, &mut taken, &value, every).await {
                        Renewal::All => watch.renewed(began + trusted(me.opts.ack_wait)),
                        Renewal::Unknown => {}
                        Renewal::Lost(key) => {
                            warn!(instance = %d_instance, event = d_id, key = %key,
                                "a lookup-key lock is another's now: this node writes nothing more for the event");
                            watch.lose();
                            break;
                        }
                    }
                }
            }
        }
        // Lost: renewals stop, but the locks still held are released only when the hold is
        // dropped (a write sent before the loss may still be on its way to Close; meanwhile
        // the locks keep others off those keys until they expire).
        if !rx.is_terminated() {
            let _ = (&mut rx).await;
        }
        let _ = inst.attempting(id, false);
        release(taken, me).await;
    });
    Ok(Some(KeyHold {
        release: Some(tx),
        fence,
    }))
}

/// Whether event `id` is still this node's (`None`: not), and its partition's lease fresh.
fn mine(me: &NodeState, inst: &InstanceQueue, id: i64) -> Option<bool> {
    let st = inst.lock();
    let h = st.held.get(&id)?;
    let l = st.owned.get(&h.partition)?;
    Some(fresh(me, l))
}

/// How long after a successful renewal began its locks are trusted: their TTL is the ack
/// deadline from when NATS stored the renewal (later than it began); a quarter of it is left
/// for a write that starts just before the end to land.
fn trusted(ack_wait: Duration) -> Duration {
    ack_wait - ack_wait / 4
}

enum Renewal {
    All,
    /// Some lock could not be renewed this tick and nobody else holds it (no reply in time,
    /// or a renewal stored with its reply lost, adopted): tried again at the next tick; the
    /// fence lapses if that goes on.
    Unknown,
    /// A lock is gone or another holder's.
    Lost(String),
}

/// Renews every lock at once, each bounded by `within`. After an error or no reply the lock
/// is read back: the renewal may have been stored with its reply lost (the lock then holds our
/// value at a newer revision), or the lock may be gone or taken.
async fn renew(
    me: &Arc<NodeState>,
    taken: &mut [(String, u64)],
    value: &bytes::Bytes,
    within: Duration,
) -> Renewal {
    let mut set = tokio::task::JoinSet::new();
    for (i, (k, rev)) in taken.iter().enumerate() {
        let (locks, k, rev, value) = (me.locks.clone(), k.clone(), *rev, value.clone());
        set.spawn(async move {
            let updated = tokio::time::timeout(within, locks.update(&k, value.clone(), rev)).await;
            if let Ok(Ok(r)) = updated {
                return (i, k, Ok(Some(r)));
            }
            match tokio::time::timeout(within, locks.entry(&k)).await {
                // Ours (the value names this hold): a renewal was stored with its reply lost,
                // this tick's or an earlier one's — its revision is adopted, but when it was
                // stored is unknown, so it does not count as renewed now.
                Ok(Ok(Some(e))) if e.operation == kv::Operation::Put && e.value == value => {
                    (i, k, Err(Some(e.revision)))
                }
                Ok(Ok(_)) => (i, k, Ok(None)),
                _ => (i, k, Err(None)),
            }
        });
    }
    let mut out = Renewal::All;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, _, Ok(Some(rev)))) => taken[i].1 = rev,
            Ok((_, k, Ok(None))) => out = Renewal::Lost(k),
            Ok((i, _, Err(adopted))) => {
                if let Some(rev) = adopted {
                    taken[i].1 = rev;
                }
                if matches!(out, Renewal::All) {
                    out = Renewal::Unknown;
                }
            }
            Err(_) => {
                if matches!(out, Renewal::All) {
                    out = Renewal::Unknown;
                }
            }
        }
    }
    out
}
