//! The events a node holds of each instance: pulled from the partitions it owns (see
//! [`super::leases`]), handed out oldest first, forgotten when settled or when the partition's
//! lease is lost.
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

use super::errors::failed;
use super::nodes::{self, PartitionLease};
use super::{NodeState, names};
use crate::{Delivery, QueueError};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a pull may take.
const PULL_BOUND: Duration = Duration::from_secs(2);

/// The longest one lease-keeping step may take (a cluster electing a leader answers nothing):
/// a stuck request must not make the node miss its other renewals.
pub(super) fn step_bound(me: &NodeState) -> Duration {
    (me.opts.ack_wait / 4).max(Duration::from_millis(500))
}

/// One instance's queue as this node sees it.
pub(crate) struct InstanceQueue {
    pub partitions: u32,
    pub(super) stream: stream::Stream,
    pub(super) consumers: tokio::sync::OnceCell<Vec<PullConsumer>>,
    state: Mutex<State>,
    dirty: AtomicBool,
}

#[derive(Default)]
pub(super) struct State {
    /// Events pulled and not settled, by stream sequence.
    pub(super) held: BTreeMap<i64, Held>,
    pub(super) owned: BTreeMap<u32, PartitionLease>,
    pub(super) delivering: bool,
    pub(super) last_pull: Option<Instant>,
    pub(super) last_full: bool,
    /// Partitions with an event delivered that this node does not hold (lost on the way in a
    /// pull cut short, or held by a node that died and not redelivered yet): nothing newer of
    /// theirs is handed out until it arrives, or per-key order would break.
    pub(super) gapped: BTreeSet<u32>,
}

#[derive(Clone)]
pub(crate) struct Held {
    pub msg: jetstream::Message,
    pub d: Delivery,
    /// Revision of the event's record (`None`: none written yet).
    pub rev: Option<u64>,
    pub(super) partition: u32,
    handed_out: bool,
    /// Its keys are held: an attempt is planning or writing it now.
    pub(super) attempting: bool,
}

impl InstanceQueue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
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
    /// An attempt holds (or no longer holds) the event's keys; `false` when the event is no
    /// longer held here (a draining partition let it go).
    pub fn attempting(&self, id: i64, now: bool) -> bool {
        match self.lock().held.get_mut(&id) {
            Some(h) => {
                h.attempting = now;
                true
            }
            None => false,
        }
    }
    /// Takes out of this node's hands the events held from partition `p` that no attempt is
    /// working on (waiting for their turn or their backoff): a draining partition hands them
    /// over instead of waiting for them.
    pub fn let_go(&self, p: u32) -> Vec<jetstream::Message> {
        let mut st = self.lock();
        let idle: Vec<i64> = st
            .held
            .iter()
            .filter(|(_, h)| h.partition == p && !h.attempting)
            .map(|(id, _)| *id)
            .collect();
        idle.iter()
            .filter_map(|id| st.held.remove(id))
            .map(|h| h.msg)
            .collect()
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
pub(crate) async fn open(me: &NodeState, instance: &str) -> Result<Arc<InstanceQueue>, QueueError> {
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
        .map_err(|e| failed(&format!("opening the queue of {instance}"), e))?;
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
    let inst = Arc::new(InstanceQueue {
        partitions,
        stream,
        consumers: tokio::sync::OnceCell::new(),
        state: Mutex::new(State::default()),
        dirty: AtomicBool::new(true),
    });
    map.insert(instance.to_string(), inst.clone());
    Ok(inst)
}

/// Pulls new events from the partitions this node owns, when something may have arrived:
/// told so (an arrival), or every half second (redeliveries announce nothing).
pub(crate) async fn pull(
    me: &NodeState,
    inst: &InstanceQueue,
    max: usize,
) -> Result<(), QueueError> {
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
            .filter(|(p, l)| !l.draining && nodes::fresh(me, l) && (!full || st.gapped.contains(p)))
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
                    .map_err(|e| failed("pulling", e))?;
            while let Ok(Some(m)) = tokio::time::timeout_at(deadline, batch.next()).await {
                match m {
                    Ok(m) => got.push((p, m)),
                    Err(e) if got.is_empty() => return Err(failed("pulling", e)),
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
async fn find_gaps(inst: &InstanceQueue, consumers: &[PullConsumer], partitions: &[u32]) {
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
    me: &NodeState,
    inst: &InstanceQueue,
    partition: u32,
    msg: jetstream::Message,
) -> Result<(), QueueError> {
    let (seq, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence as i64, i.delivered),
        Err(e) => return Err(failed("reading a message", e)),
    };
    {
        let mut st = inst.lock();
        if let Some(h) = st.held.get_mut(&seq) {
            h.msg = msg;
            return Ok(());
        }
    }
    let instance = instance_of(me, msg.subject.as_str());
    let (message_id, received_at, body, meta) =
        names::unwrap_with(&msg.payload).unwrap_or_else(|| {
            (
                String::new(),
                0,
                String::from_utf8_lossy(&msg.payload).into_owned(),
                None,
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
        meta,
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
            attempting: false,
        };
        if me.finish_decided(&held, &record).await? {
            // Its node decided, then died before the acknowledgement: finished for it.
            return Ok(());
        }
        rev = Some(r);
        d.attempts = record.attempts() as u32;
        d.not_before = record.not_before.unwrap_or(0);
    }
    inst.lock().held.insert(
        seq,
        Held {
            msg,
            d,
            rev,
            partition,
            handed_out: false,
            attempting: false,
        },
    );
    Ok(())
}

fn instance_of(me: &NodeState, subject: &str) -> String {
    subject
        .strip_prefix(&format!("{}.q.", me.names.prefix))
        .and_then(|r| r.rsplit_once('.'))
        .and_then(|(i, _)| names::dec(i))
        .unwrap_or_default()
}

/// This node's part, for `GET /admin/cluster`.
pub(crate) async fn status(me: &NodeState) -> Value {
    let nodes = nodes::live_nodes(me).await.unwrap_or_default();
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
