//! Which node delivers what: partition leases, the events a node holds, lookup-key locks.
//!
//! **Partitions.** Every live node heartbeats a key in the lease bucket. Partition `p` of every
//! instance is assigned to the `p mod N`-th live node (by name); the assigned node takes the
//! partition's lease (create-if-absent) and renews it by compare-and-set every quarter of the
//! ack deadline. A node that loses its assignment (a node joined) stops pulling from the
//! partition and releases the lease once every event it holds from it is settled; a node that
//! dies stops renewing and the lease expires with the bucket's TTL.
//!
//! **Order across a takeover.** The lease lives `2 × ack_wait + 2 s`; a node extends its events'
//! ack deadlines (in-progress acks) only while its lease was renewed within half an ack
//! deadline. So when a lease expires, every event its owner held has passed its ack deadline
//! and waits for redelivery, and JetStream redelivers before it delivers anything newer: the
//! new owner receives the old events first. That alone does not hold when a delivery is lost
//! on the way (a pull cut short while NATS elects a leader) or the old events are still within
//! their deadline: newer events arrive while an older one is out. So after every pull a node
//! compares what it holds of each partition with the consumer's count of events delivered and
//! unacknowledged; while the consumer counts more, nothing newer of that partition is handed
//! out (`gapped`), and per-key queue order holds across the handover.
//!
//! **Key locks.** Before an event is planned, every lookup key it has is locked
//! (create-if-absent in the lock bucket, all or nothing: a conflict releases what was taken and
//! backs off with jitter, so two nodes never wait on each other), renewed
//! while the write is under way, deleted after it. Partitioning already sends events sharing
//! their first key to one node; the locks cover events that share some other key.

use super::{Inner, names};
use crate::queue::{Delivery, KeyHold, QueueError};
use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{self, AckKind, kv, stream};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The longest a pull may take.
const PULL_BOUND: Duration = Duration::from_secs(2);

/// The longest one lease-keeping step may take (a cluster electing a leader answers nothing):
/// a stuck request must not make the node miss its other renewals.
fn step_bound(me: &Inner) -> Duration {
    (me.opts.ack_wait / 4).max(Duration::from_millis(500))
}

/// One instance's queue as this node sees it.
pub(crate) struct Inst {
    pub partitions: u32,
    stream: stream::Stream,
    consumers: tokio::sync::OnceCell<Vec<PullConsumer>>,
    state: Mutex<State>,
    dirty: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Events pulled and not settled, by stream sequence.
    held: BTreeMap<i64, Held>,
    owned: BTreeMap<u32, Lease>,
    delivering: bool,
    last_pull: Option<Instant>,
    last_full: bool,
    /// Partitions with an event delivered that this node does not hold (lost on the way in a
    /// pull cut short, or held by a node that died and not redelivered yet): nothing newer of
    /// theirs is handed out until it arrives, or per-key order would break.
    gapped: BTreeSet<u32>,
}

#[derive(Clone)]
pub(crate) struct Held {
    pub msg: jetstream::Message,
    pub d: Delivery,
    /// Revision of the event's record (`None`: none written yet).
    pub rev: Option<u64>,
    partition: u32,
    handed_out: bool,
}

struct Lease {
    rev: u64,
    renewed: Instant,
    draining: bool,
}

impl Inst {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
    pub fn held(&self, id: i64) -> Option<Held> {
        self.lock().held.get(&id).cloned()
    }
    pub fn forget(&self, id: i64) {
        self.lock().held.remove(&id);
    }
    pub fn retried(&self, id: i64, rev: u64, attempts: u32, not_before: i64) {
        if let Some(h) = self.lock().held.get_mut(&id) {
            h.rev = Some(rev);
            h.d.attempts = attempts;
            h.d.not_before = not_before;
        }
    }
    /// The oldest pulled events not handed to the scheduler yet.
    pub fn hand_out(&self, max: usize) -> Vec<Delivery> {
        let mut st = self.lock();
        let mut out = Vec::new();
        let State { held, gapped, .. } = &mut *st;
        for h in held.values_mut() {
            if out.len() >= max {
                break;
            }
            if !h.handed_out && !gapped.contains(&h.partition) {
                h.handed_out = true;
                out.push(h.d.clone());
            }
        }
        out
    }
}

/// Opens an instance's queue (creating its stream the first time).
pub(crate) async fn open(me: &Inner, instance: &str) -> Result<Arc<Inst>, QueueError> {
    let mut map = me.instances.lock().await;
    if let Some(i) = map.get(instance) {
        return Ok(i.clone());
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "closeflow_partitions".to_string(),
        me.opts.partitions.to_string(),
    );
    meta.insert("closeflow_instance".to_string(), instance.to_string());
    let stream = me
        .js
        .get_or_create_stream(stream::Config {
            name: me.names.queue_stream(instance),
            subjects: vec![me.names.queue_subjects(instance)],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: me.replicas,
            duplicate_window: me.opts.dedup_window,
            metadata: meta,
            ..Default::default()
        })
        .await
        .map_err(|e| super::unavailable(&format!("opening the queue of {instance}"), e))?;
    // An existing queue keeps the partitions it was made with, whatever this node was told:
    // read from the stream's info as `get_or_create_stream` returned it (found or created).
    let partitions = stream
        .cached_info()
        .config
        .metadata
        .get("closeflow_partitions")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(me.opts.partitions);
    let inst = Arc::new(Inst {
        partitions,
        stream,
        consumers: tokio::sync::OnceCell::new(),
        state: Mutex::new(State::default()),
        dirty: AtomicBool::new(true),
    });
    map.insert(instance.to_string(), inst.clone());
    Ok(inst)
}

/// Opens an instance for delivery: its consumers exist and this node has claimed its share
/// of the partitions (the first time, at once, so a lone node delivers immediately).
pub(crate) async fn open_for_delivery(
    me: &Arc<Inner>,
    instance: &str,
) -> Result<Arc<Inst>, QueueError> {
    let inst = open(me, instance).await?;
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
                    .map_err(|e| super::unavailable("creating a consumer", e))?;
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

/// Pulls new events from the partitions this node owns, when something may have arrived:
/// told so (an arrival), or every half second (redeliveries announce nothing).
pub(crate) async fn pull(me: &Inner, inst: &Inst, max: usize) -> Result<(), QueueError> {
    let partitions: Vec<u32> = {
        let mut st = inst.lock();
        let due = inst.dirty.swap(false, Ordering::Relaxed)
            || st.last_full
            || st
                .last_pull
                .is_none_or(|t| t.elapsed() > Duration::from_millis(500));
        if !due {
            return Ok(());
        }
        st.last_pull = Some(Instant::now());
        let waiting = st.held.values().filter(|h| !h.handed_out).count();
        // With enough waiting, pull only where an event is missing: the pull is what brings
        // it back (redeliveries come before anything newer).
        let full = waiting >= max;
        st.owned
            .iter()
            .filter(|(p, l)| !l.draining && fresh(me, l) && (!full || st.gapped.contains(p)))
            .map(|(p, _)| *p)
            .collect()
    };
    if partitions.is_empty() {
        return Ok(());
    }
    let Some(consumers) = inst.consumers.get() else {
        return Ok(());
    };
    let mut set = tokio::task::JoinSet::new();
    for &p in &partitions {
        let c = consumers[p as usize].clone();
        set.spawn(async move {
            // Bounded: while the cluster elects a leader a pull may get no answer at all, and
            // the scheduler must not hang on it. What came before the bound is kept.
            let deadline = tokio::time::Instant::now() + PULL_BOUND;
            let mut got = Vec::new();
            let mut batch =
                tokio::time::timeout_at(deadline, c.fetch().max_messages(max).messages())
                    .await
                    .map_err(|_| QueueError::Unavailable("pulling: no answer".into()))?
                    .map_err(|e| super::unavailable("pulling", e))?;
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, batch.next()).await {
                match m {
                    Ok(m) => got.push((p, m)),
                    Err(e) if got.is_empty() => return Err(super::unavailable("pulling", e)),
                    Err(_) => break,
                }
            }
            Ok::<_, QueueError>(got)
        });
    }
    let mut pulled = Vec::new();
    let mut full = false;
    while let Some(r) = set.join_next().await {
        let got = r.map_err(|e| QueueError::Unavailable(e.to_string()))??;
        full |= got.len() >= max;
        pulled.extend(got);
    }
    inst.lock().last_full = full;
    for (p, msg) in pulled {
        admit(me, inst, p, msg).await?;
    }
    find_gaps(inst, consumers, &partitions).await;
    Ok(())
}

/// Marks the partitions where the consumer counts more events delivered and unacknowledged
/// than this node holds. Held events are counted before the consumer is asked: an event
/// acknowledged in between lowers only the consumer's count, so a settle never looks like a
/// gap. A partition whose count cannot be read is treated as gapped (until the next pull).
async fn find_gaps(inst: &Inst, consumers: &[PullConsumer], partitions: &[u32]) {
    let asks = partitions.iter().map(|&p| {
        let held = inst
            .lock()
            .held
            .values()
            .filter(|h| h.partition == p)
            .count();
        let c = consumers[p as usize].clone();
        async move {
            let pending = tokio::time::timeout(PULL_BOUND, c.get_info())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|i| i.num_ack_pending);
            (p, pending.is_none_or(|n| n > held))
        }
    });
    let gaps = futures_util::future::join_all(asks).await;
    let mut st = inst.lock();
    for (p, gapped) in gaps {
        if gapped {
            st.gapped.insert(p);
        } else {
            st.gapped.remove(&p);
        }
    }
}

/// Takes a pulled message into the held set: a redelivery of one already held replaces the
/// handle; one whose record says it was settled is finished, not handed out again.
async fn admit(
    me: &Inner,
    inst: &Inst,
    partition: u32,
    msg: jetstream::Message,
) -> Result<(), QueueError> {
    let (seq, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence as i64, i.delivered),
        Err(e) => return Err(super::unavailable("reading a message", e)),
    };
    {
        let mut st = inst.lock();
        if let Some(h) = st.held.get_mut(&seq) {
            h.msg = msg;
            return Ok(());
        }
    }
    let instance = instance_of(me, msg.subject.as_str());
    let (message_id, received_at, body) = names::unwrap(&msg.payload).unwrap_or_else(|| {
        (
            String::new(),
            0,
            String::from_utf8_lossy(&msg.payload).into_owned(),
        )
    });
    let mut d = Delivery {
        id: seq,
        instance: instance.clone(),
        message_id,
        body,
        received_at,
        attempts: 0,
        not_before: 0,
    };
    let mut rev = None;
    if delivered > 1
        && let Some((r, record)) = me.record(&instance, seq as u64).await?
    {
        let held = Held {
            msg: msg.clone(),
            d: d.clone(),
            rev: Some(r),
            partition,
            handed_out: true,
        };
        if !record["final"].is_null() {
            // Its node decided, then died before the acknowledgement: finish for it.
            me.complete(&held, &record).await?;
            return Ok(());
        }
        rev = Some(r);
        d.attempts = record["attempts"].as_u64().unwrap_or(0) as u32;
        d.not_before = record["not_before"].as_i64().unwrap_or(0);
    }
    inst.lock().held.insert(
        seq,
        Held {
            msg,
            d,
            rev,
            partition,
            handed_out: false,
        },
    );
    Ok(())
}

fn instance_of(me: &Inner, subject: &str) -> String {
    subject
        .strip_prefix(&format!("{}.q.", me.names.prefix))
        .and_then(|r| r.rsplit_once('.'))
        .and_then(|(i, _)| names::dec(i))
        .unwrap_or_default()
}

/// A lease renewed recently enough that its events' deadlines may still be extended.
fn fresh(me: &Inner, l: &Lease) -> bool {
    l.renewed.elapsed() < me.opts.ack_wait / 2
}

async fn heartbeat(me: &Inner) -> Result<(), QueueError> {
    me.leases
        .put(
            me.names.node_key(&me.opts.node),
            crate::queue::now_ms().to_string().into(),
        )
        .await
        .map(|_| ())
        .map_err(|e| super::unavailable("heartbeat", e))
}

/// The live nodes, sorted: those whose heartbeat has not expired from the lease bucket.
async fn live_nodes(me: &Inner) -> Result<Vec<String>, QueueError> {
    let stream = me
        .js
        .get_stream(format!("KV_{}", me.names.leases_bucket()))
        .await
        .map_err(|e| super::unavailable("listing nodes", e))?;
    let prefix = format!("$KV.{}.n.", me.names.leases_bucket());
    let mut info = stream
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|e| super::unavailable("listing nodes", e))?;
    let mut nodes = BTreeSet::new();
    while let Some(s) = info.next().await {
        let (subject, _) = s.map_err(|e| super::unavailable("listing nodes", e))?;
        if let Some(n) = subject.strip_prefix(&prefix).and_then(names::dec) {
            nodes.insert(n);
        }
    }
    nodes.insert(me.opts.node.clone());
    Ok(nodes.into_iter().collect())
}

/// One round of lease keeping for an instance: renew, release, claim; all partitions at once,
/// so that one slow answer delays no other renewal.
async fn manage(me: &Arc<Inner>, instance: &str, inst: &Arc<Inst>, nodes: &[String]) {
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

async fn keep_lease(me: &Inner, instance: &str, inst: &Inst, p: u32, assigned: bool) {
    let key = me.names.lease_key(instance, p);
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
                    Lease {
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
fn lost(inst: &Inst, p: u32) {
    let mut st = inst.lock();
    st.owned.remove(&p);
    st.gapped.remove(&p);
    st.held.retain(|_, h| h.partition != p);
}

/// Extends the ack deadline of every event held from a partition whose lease is fresh.
async fn extend(me: &Inner, inst: &Inst) {
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
pub(crate) fn start(me: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(me);
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
            let insts: Vec<(String, Arc<Inst>)> = me
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
pub(crate) async fn listen_for_arrivals(me: &Arc<Inner>) -> Result<(), QueueError> {
    let mut sub = me
        .client
        .subscribe(me.names.wake_all())
        .await
        .map_err(|e| super::unavailable("subscribing", e))?;
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

/// Locks an event's keys for planning (see the module's doc); `None` when the event is no
/// longer this node's.
pub(crate) async fn hold_keys(
    me: &Arc<Inner>,
    d: &Delivery,
    keys: &[String],
) -> Result<Option<KeyHold>, QueueError> {
    let inst = open(me, &d.instance).await?;
    let mine = |inst: &Inst| -> Option<bool> {
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
    let release = |taken: Vec<(String, u64)>, me: Arc<Inner>| async move {
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
            return Err(super::unavailable("locking a lookup key", e));
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

/// This node's part, for `GET /admin/cluster`.
pub(crate) async fn status(me: &Inner) -> Value {
    let nodes = live_nodes(me).await.unwrap_or_default();
    let mut instances = serde_json::Map::new();
    for (name, inst) in me.instances.lock().await.iter() {
        let st = inst.lock();
        instances.insert(
            name.clone(),
            json!({
                "partitions": inst.partitions,
                "owned": st.owned.keys().collect::<Vec<_>>(),
                "draining": st.owned.iter().filter(|(_, l)| l.draining).map(|(p, _)| *p).collect::<Vec<_>>(),
                "held": st.held.len(),
            }),
        );
    }
    json!({"node": me.opts.node, "nodes": nodes, "replicas": me.replicas,
           "ack_wait_ms": me.opts.ack_wait.as_millis() as u64, "instances": instances})
}
