//! The replicated queue on NATS JetStream: several closeflow nodes share one NATS cluster.
//!
//! Layout (every name starts with a prefix, `CLOSEFLOW` by default; see [`names`]):
//! - a **queue stream per instance** (work-queue retention, `--replicas`, the dedup window as
//!   its message-id window), subjects `….q.<instance>.<partition>`. Intake publishes each event
//!   with `Nats-Msg-Id = messageId` and answers only after the publish acknowledgement, i.e.
//!   once a quorum of the cluster stored it. The partition is a hash of the event's first
//!   lookup key (Company ID, else User ID, else email, as the mappings compute them).
//! - a **durable pull consumer per partition**. A node delivers a partition only while it holds
//!   the partition's lease (`…_LEASES`, create-if-absent, bucket TTL = 2 × ack deadline + 2 s,
//!   renewed by compare-and-set); partitions are spread evenly over the live nodes
//!   (heartbeats in the same bucket). See [`owner`].
//! - **lookup-key locks** (`…_LOCKS`, create-if-absent, bucket TTL = the ack deadline, renewed
//!   while held, deleted after the write): two events that share any key are never planned at
//!   once on two nodes, even when their first keys put them in different partitions.
//! - a **record per event** (`…_EVENTS`): failed attempts, the backoff, and the final outcome,
//!   written by compare-and-set before anything else, so a settle happens once, and a node
//!   that dies after deciding but before acknowledging is finished by the next one (the
//!   follow-ups — dead letter, counter, acknowledgement — are idempotent by message id).
//! - **durable counters** (`…_COUNTS`, JetStream counters, deduplicated by message id) per
//!   instance, node, outcome and reason; the dead-letter stream `…_DLQ`.

pub mod names;
mod owner;
mod stats;

use super::{
    DeadLetter, Delivery, Enqueued, InstanceStats, KeyHold, Load, Millis, NewEvent, Queue,
    QueueError, Retained, Settle, now_ms,
};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use names::Names;
use owner::{Held, Inst};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the cluster and how this node takes part.
#[derive(Debug, Clone)]
pub struct Options {
    /// `nats://HOST:PORT` of one or more cluster nodes.
    pub urls: Vec<String>,
    /// This node's name: unique in the cluster, stable across restarts (metrics say who did what).
    pub node: String,
    pub prefix: String,
    /// Partitions of a new instance's queue (an existing queue keeps its own).
    pub partitions: u32,
    /// An event a node leased but neither settled nor extended within this is redelivered.
    pub ack_wait: Duration,
    pub dedup_window: Duration,
    /// How long settled events' records are kept (`capture`, recovery after a crash).
    pub retention: Duration,
    /// Replicas of every stream; `None`: as many as the cluster has nodes, at most 3.
    pub replicas: Option<usize>,
}

impl Options {
    pub fn new(urls: Vec<String>, node: String) -> Options {
        Options {
            urls,
            node,
            prefix: "CLOSEFLOW".into(),
            partitions: 8,
            ack_wait: Duration::from_secs(30),
            dedup_window: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(24 * 3600),
            replicas: None,
        }
    }
    /// How long a partition lease lives without renewal: long enough that everything the dead
    /// owner held has been redelivered before a new owner pulls (see [`owner`]).
    pub fn lease_ttl(&self) -> Duration {
        self.ack_wait * 2 + Duration::from_secs(2)
    }
}

/// `(instance, event body)` → the key an event is partitioned by.
pub type Keyer = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;
/// Told when another node (or this one) queued events for an instance.
pub type Arrived = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct JetStreamQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JetStreamQueue({})", self.inner.opts.node)
    }
}

pub(crate) struct Inner {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
    opts: Options,
    replicas: usize,
    events: kv::Store,
    leases: kv::Store,
    locks: kv::Store,
    dlq: stream::Stream,
    counts: stream::Stream,
    instances: tokio::sync::Mutex<HashMap<String, Arc<Inst>>>,
    keyer: Option<Keyer>,
    arrived: Option<Arrived>,
    /// Each instance's stream as last read (see [`JetStreamQueue::load`]).
    loads: std::sync::RwLock<HashMap<String, Load>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> QueueError {
    let text = e.to_string();
    if text.contains("insufficient resources") || text.contains("maximum bytes") {
        QueueError::Full(format!("{what}: {text}"))
    } else {
        QueueError::Unavailable(format!("{what}: {text}"))
    }
}

async fn bucket(js: &jetstream::Context, cfg: kv::Config) -> Result<kv::Store, QueueError> {
    if let Ok(s) = js.get_key_value(&cfg.bucket).await {
        return Ok(s);
    }
    let name = cfg.bucket.clone();
    match js.create_key_value(cfg).await {
        Ok(s) => Ok(s),
        // Another node created it meanwhile.
        Err(e) => js
            .get_key_value(&name)
            .await
            .map_err(|_| unavailable(&format!("creating bucket {name}"), e)),
    }
}

/// A final outcome as stored in an event's record.
fn final_json(outcome: &Settle, node: &str) -> Value {
    let (kind, reason, error, last_reply) = match outcome {
        Settle::Applied => ("applied", "", "", None),
        Settle::Skipped { reason } => ("skipped", reason.as_str(), "", None),
        Settle::Dead {
            reason,
            error,
            last_reply,
        } => ("dead", reason.as_str(), error.as_str(), last_reply.clone()),
        Settle::Retry { reason, error, .. } => ("retry", reason.as_str(), error.as_str(), None),
    };
    json!({"kind": kind, "reason": reason, "error": error, "last_reply": last_reply,
           "node": node, "at": now_ms()})
}

impl JetStreamQueue {
    /// Connects and makes sure the shared streams and buckets exist. `keyer` partitions events
    /// at intake (without it, by `messageId`); `arrived` is told about new events.
    pub async fn connect(
        opts: Options,
        keyer: Option<Keyer>,
        arrived: Option<Arrived>,
    ) -> Result<JetStreamQueue, QueueError> {
        let urls = opts.urls.join(",");
        let client = async_nats::ConnectOptions::new()
            .name(format!("closeflow {}", opts.node))
            .connection_timeout(Duration::from_secs(5))
            .connect(opts.urls.clone())
            .await
            .map_err(|e| QueueError::Unavailable(format!("cannot reach NATS at {urls}: {e}")))?;
        let js = jetstream::new(client.clone());
        let seen = client.server_info().connect_urls.len();
        let replicas = opts
            .replicas
            .unwrap_or_else(|| opts.urls.len().max(seen).clamp(1, 3));
        let names = Names {
            prefix: opts.prefix.clone(),
        };
        let kv_cfg = |bucket: String, max_age: Duration| kv::Config {
            bucket,
            history: 1,
            max_age,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let events = bucket(&js, kv_cfg(names.events_bucket(), opts.retention)).await?;
        let leases = bucket(&js, kv_cfg(names.leases_bucket(), opts.lease_ttl())).await?;
        let locks = bucket(&js, kv_cfg(names.locks_bucket(), opts.ack_wait)).await?;
        let dlq = js
            .get_or_create_stream(stream::Config {
                name: names.dlq_stream(),
                subjects: vec![names.dlq_subjects()],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating the dead-letter stream", e))?;
        let counts = js
            .get_or_create_stream(stream::Config {
                name: names.counts_stream(),
                subjects: vec![names.counters()],
                num_replicas: replicas,
                allow_message_counter: true,
                duplicate_window: opts.retention,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating the counter stream", e))?;
        let inner = Arc::new(Inner {
            js,
            client,
            names,
            opts,
            replicas,
            events,
            leases,
            locks,
            dlq,
            counts,
            instances: tokio::sync::Mutex::new(HashMap::new()),
            keyer,
            arrived,
            loads: std::sync::RwLock::default(),
        });
        if inner.arrived.is_some() {
            owner::listen_for_arrivals(&inner).await?;
        }
        Ok(JetStreamQueue { inner })
    }

    /// Every node must time leases alike, or one would take over a partition while another
    /// still holds it: a node whose --ack-wait differs from the cluster's refuses to start.
    /// The outer error is the cluster not answering (worth another try), the inner one the
    /// mismatch (not worth one).
    pub async fn check_timing(&self) -> Result<Result<(), String>, QueueError> {
        let stored = self
            .inner
            .leases
            .status()
            .await
            .map_err(|e| unavailable("reading the lease bucket", e))?
            .max_age();
        if stored != self.inner.opts.lease_ttl() {
            return Ok(Err(format!(
                "the cluster's nodes use an ack deadline of {:?} (lease time {stored:?}); this node was started with --ack-wait {:?}: start every node with the same --ack-wait",
                stored.saturating_sub(Duration::from_secs(2)) / 2,
                self.inner.opts.ack_wait
            )));
        }
        Ok(Ok(()))
    }

    /// Starts taking part in delivery: heartbeats, partition leases, lease extension. Only a
    /// serving node calls this (`closeflow dlq` only reads and writes the shared state).
    pub fn start(&self) {
        owner::start(&self.inner);
    }

    /// What `instance`'s stream holds, as last read. Refreshed while started, by the lease
    /// loop, on its first tick at least a second after the last refresh; the loop ticks every
    /// `max(ack_wait / 4, 200 ms)`, so with the default 30 s ack deadline every 7.5 s.
    pub fn load(&self, instance: &str) -> Load {
        let g = self
            .inner
            .loads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.get(instance).copied().unwrap_or_default()
    }

    /// Reads every instance's stream now (what the lease loop does on its own time).
    pub async fn refresh_loads(&self) -> Result<(), QueueError> {
        let l = stats::loads(&self.inner).await?;
        *self
            .inner
            .loads
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = l;
        Ok(())
    }

    pub fn node(&self) -> &str {
        &self.inner.opts.node
    }

    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }
}

impl Inner {
    /// Adds `by` to a durable counter; with `once`, a repeat of the same id adds nothing.
    async fn count(
        &self,
        instance: &str,
        name: &str,
        reason: &str,
        by: u64,
        once: Option<String>,
    ) -> Result<(), QueueError> {
        let mut h = HeaderMap::new();
        h.insert("Nats-Incr", format!("+{by}").as_str());
        if let Some(id) = once {
            h.insert("Nats-Msg-Id", id.as_str());
        }
        let subject = self.names.counter(instance, &self.opts.node, name, reason);
        self.js
            .publish_with_headers(subject, h, bytes::Bytes::new())
            .await
            .map_err(|e| unavailable("counting", e))?
            .await
            .map_err(|e| unavailable("counting", e))?;
        Ok(())
    }

    /// The follow-ups of a final outcome, each idempotent: the dead letter, the count, the
    /// acknowledgement that removes the event from the queue.
    async fn complete(&self, held: &Held, record: &Value) -> Result<(), QueueError> {
        let d = &held.d;
        let once = format!("{}.{}", names::enc(&d.instance), d.id);
        let f = &record["final"];
        let kind = f["kind"].as_str().unwrap_or("applied");
        let reason = f["reason"].as_str().unwrap_or_default();
        if kind == "dead" {
            let meta = json!({"m": d.message_id, "r": d.received_at, "seq": d.id,
                "reason": reason, "error": f["error"], "last_reply": f["last_reply"],
                "attempts": record["attempts"].as_u64().unwrap_or(0) + 1,
                "dead_at": f["at"], "node": f["node"]});
            let mut payload = meta.to_string().into_bytes();
            payload.push(b'\n');
            payload.extend_from_slice(d.body.as_bytes());
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", once.as_str());
            self.js
                .publish_with_headers(self.names.dlq_subject(&d.instance), h, payload.into())
                .await
                .map_err(|e| unavailable("dead-lettering", e))?
                .await
                .map_err(|e| unavailable("dead-lettering", e))?;
        }
        let name = match kind {
            "dead" => "dead_lettered",
            "skipped" => "skipped",
            _ => "applied",
        };
        // Counted before acknowledged: once the event leaves the queue it has been counted
        // (a crash in between redelivers it, and the count's message id keeps it single).
        self.count(&d.instance, name, reason, 1, Some(format!("{once}.f")))
            .await?;
        held.msg
            .double_ack()
            .await
            .map_err(|e| unavailable("acknowledging", e))
    }

    /// Reads an event's record: `(revision, record)`.
    async fn record(&self, instance: &str, seq: u64) -> Result<Option<(u64, Value)>, QueueError> {
        let e = self
            .events
            .entry(self.names.event_key(instance, seq))
            .await
            .map_err(|e| unavailable("reading an event record", e))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((e.revision, serde_json::from_slice(&e.value).ok()?))))
    }

    /// Writes an event's record if it is still at `rev` (`None`: not written yet). `Ok(None)`:
    /// someone else wrote it first.
    async fn write_record(
        &self,
        instance: &str,
        seq: u64,
        rev: Option<u64>,
        v: &Value,
    ) -> Result<Option<u64>, QueueError> {
        let key = self.names.event_key(instance, seq);
        let bytes: bytes::Bytes = v.to_string().into();
        let r = match rev {
            None => self.events.create(&key, bytes).await.map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
            Some(rev) => self.events.update(&key, bytes, rev).await.map_err(|e| {
                (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
        };
        match r {
            Ok(rev) => Ok(Some(rev)),
            Err((true, _)) => Ok(None),
            Err((false, e)) => Err(unavailable("writing an event record", e)),
        }
    }

    async fn dead_letter_at(&self, seq: u64) -> Result<Option<DeadLetter>, QueueError> {
        match self.dlq.get_raw_message(seq).await {
            Ok(m) => Ok(self.parse_dead(&m)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => {
                // A deleted sequence inside the stream's range reads as an API error too.
                let t = e.to_string();
                if t.contains("no message found") || t.contains("not found") {
                    Ok(None)
                } else {
                    Err(unavailable("reading a dead letter", t))
                }
            }
        }
    }

    fn parse_dead(&self, m: &jetstream::message::StreamMessage) -> Option<DeadLetter> {
        let nl = m.payload.iter().position(|b| *b == b'\n')?;
        let meta: Value = serde_json::from_slice(&m.payload[..nl]).ok()?;
        let instance = names::dec(
            m.subject
                .as_str()
                .strip_prefix(&format!("{}.dlq.", self.names.prefix))?,
        )?;
        Some(DeadLetter {
            id: m.sequence as i64,
            instance,
            message_id: meta["m"].as_str()?.to_string(),
            reason: meta["reason"].as_str().unwrap_or_default().to_string(),
            error: meta["error"].as_str().unwrap_or_default().to_string(),
            last_reply: meta["last_reply"].as_str().map(str::to_string),
            attempts: meta["attempts"].as_u64().unwrap_or(0) as u32,
            received_at: meta["r"].as_i64().unwrap_or(0),
            dead_at: meta["dead_at"].as_i64().unwrap_or(0),
            body: String::from_utf8_lossy(&m.payload[nl + 1..]).into_owned(),
        })
    }
}

impl Queue for JetStreamQueue {
    async fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let me = &self.inner;
        let inst = owner::open(me, instance).await?;
        let mut acks = Vec::with_capacity(events.len());
        for e in &events {
            let key = me
                .keyer
                .as_ref()
                .and_then(|k| k(instance, &e.body))
                .unwrap_or_else(|| format!("m:{}", e.message_id));
            let p = (names::fnv1a(&key) % u64::from(inst.partitions)) as u32;
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", names::msg_id(&e.message_id).as_str());
            let f = me
                .js
                .publish_with_headers(
                    me.names.queue_subject(instance, p),
                    h,
                    names::wrap(&e.message_id, e.received_at, &e.body).into(),
                )
                .await
                .map_err(|e| unavailable("queueing", e))?;
            acks.push(f);
        }
        let mut out = Vec::with_capacity(acks.len());
        for f in acks {
            let ack = f.await.map_err(|e| unavailable("queueing", e))?;
            out.push(if ack.duplicate {
                Enqueued::Duplicate
            } else {
                Enqueued::Accepted
            });
        }
        let dups = out.iter().filter(|r| **r == Enqueued::Duplicate).count() as u64;
        if dups > 0 {
            // Informational (not part of the balance): a lost increment only under-reports.
            let _ = me.count(instance, "duplicates", "", dups, None).await;
        }
        if dups < out.len() as u64 {
            inst.mark_dirty();
            let _ = me
                .client
                .publish(me.names.wake_subject(instance), bytes::Bytes::new())
                .await;
        }
        Ok(out)
    }

    async fn fetch(&self, instance: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let inst = owner::open_for_delivery(&self.inner, instance).await?;
        owner::pull(&self.inner, &inst, max).await?;
        Ok(inst.hand_out(max))
    }

    async fn settle(&self, d: &Delivery, outcome: Settle) -> Result<(), QueueError> {
        let me = &self.inner;
        let inst = owner::open(me, &d.instance).await?;
        let Some(held) = inst.held(d.id) else {
            return Err(QueueError::NotFound(d.id));
        };
        let seq = d.id as u64;
        let mut record = match held.rev {
            Some(_) => me
                .record(&d.instance, seq)
                .await?
                .map(|(_, v)| v)
                .unwrap_or_else(|| json!({})),
            None => json!({}),
        };
        if !record["final"].is_null() {
            // Decided already (by this node before a failed acknowledgement, or another
            // node): finish the follow-ups, count nothing twice.
            me.complete(&held, &record).await?;
            inst.forget(d.id);
            return Err(QueueError::NotFound(d.id));
        }
        let attempts = record["attempts"].as_u64().unwrap_or(0);
        if let Settle::Retry {
            not_before,
            reason,
            error,
        } = &outcome
        {
            record["attempts"] = json!(attempts + 1);
            record["not_before"] = json!(not_before);
            record["error"] = json!(error);
            let Some(rev) = me.write_record(&d.instance, seq, held.rev, &record).await? else {
                return Err(QueueError::Unavailable(
                    "the event's record changed meanwhile".into(),
                ));
            };
            inst.retried(d.id, rev, attempts as u32 + 1, *not_before);
            let once = format!("{}.{seq}.r{}", names::enc(&d.instance), attempts + 1);
            return me
                .count(&d.instance, "retried", reason, 1, Some(once))
                .await;
        }
        if matches!(outcome, Settle::Dead { .. }) {
            record["attempts"] = json!(attempts);
        }
        record["final"] = final_json(&outcome, &me.opts.node);
        record["m"] = json!(d.message_id);
        record["r"] = json!(d.received_at);
        record["body"] = json!(d.body);
        match me.write_record(&d.instance, seq, held.rev, &record).await? {
            Some(_) => {
                me.complete(&held, &record).await?;
                inst.forget(d.id);
                Ok(())
            }
            None => {
                // Someone settled it first; finish their follow-ups and report it settled.
                if let Some((_, r)) = me.record(&d.instance, seq).await?
                    && !r["final"].is_null()
                {
                    me.complete(&held, &r).await?;
                    inst.forget(d.id);
                }
                Err(QueueError::NotFound(d.id))
            }
        }
    }

    async fn dead_letters(&self, instance: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let me = &self.inner;
        let info = me
            .dlq
            .get_info()
            .await
            .map_err(|e| unavailable("reading the dead-letter stream", e))?;
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Some(d) = me.dead_letter_at(seq).await?
                && instance.is_none_or(|i| i == d.instance)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, QueueError> {
        if id <= 0 {
            return Ok(None);
        }
        self.inner.dead_letter_at(id as u64).await
    }

    async fn replay(&self, id: i64) -> Result<bool, QueueError> {
        let me = &self.inner;
        let Some(d) = self.dead_letter(id).await? else {
            return Ok(false);
        };
        let origin = me.dlq.get_raw_message(id as u64).await.ok().and_then(|m| {
            let nl = m.payload.iter().position(|b| *b == b'\n')?;
            serde_json::from_slice::<Value>(&m.payload[..nl]).ok()?["seq"].as_u64()
        });
        let inst = owner::open(me, &d.instance).await?;
        let key = me
            .keyer
            .as_ref()
            .and_then(|k| k(&d.instance, &d.body))
            .unwrap_or_else(|| format!("m:{}", d.message_id));
        let p = (names::fnv1a(&key) % u64::from(inst.partitions)) as u32;
        // Counted first: `accepted` is derived as (stream sequence − replayed), so the sum
        // accepted + replayed is exact whichever step a crash interrupts.
        let once = format!("replay.{}.{id}", me.names.dlq_stream());
        me.count(&d.instance, "replayed", "", 1, Some(once.clone()))
            .await?;
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", once.as_str());
        me.js
            .publish_with_headers(
                me.names.queue_subject(&d.instance, p),
                h,
                names::wrap(&d.message_id, d.received_at, &d.body).into(),
            )
            .await
            .map_err(|e| unavailable("replaying", e))?
            .await
            .map_err(|e| unavailable("replaying", e))?;
        let removed = me
            .dlq
            .delete_message(id as u64)
            .await
            .map_err(|e| unavailable("replaying", e))?;
        // The dead event's record goes too, as the embedded queue deletes its row: the event
        // is retained (for `capture`) once, as the replayed one.
        if let Some(origin) = origin {
            let _ = me
                .events
                .purge(me.names.event_key(&d.instance, origin))
                .await;
        }
        inst.mark_dirty();
        let _ = me
            .client
            .publish(me.names.wake_subject(&d.instance), bytes::Bytes::new())
            .await;
        Ok(removed)
    }

    async fn drop_dead(&self, id: i64) -> Result<bool, QueueError> {
        if self.dead_letter(id).await?.is_none() {
            return Ok(false);
        }
        Ok(self.inner.dlq.delete_message(id as u64).await.is_ok())
    }

    fn load(&self, instance: &str) -> Load {
        JetStreamQueue::load(self, instance)
    }

    async fn stats(&self) -> Result<Vec<InstanceStats>, QueueError> {
        stats::stats(&self.inner).await
    }

    async fn retained(
        &self,
        instance: &str,
        since: Millis,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Retained>, QueueError> {
        stats::retained(&self.inner, instance, since, after, limit).await
    }

    async fn hold_keys(
        &self,
        d: &Delivery,
        keys: &[String],
    ) -> Result<Option<KeyHold>, QueueError> {
        owner::hold_keys(&self.inner, d, keys).await
    }

    async fn cluster(&self) -> Option<Value> {
        Some(owner::status(&self.inner).await)
    }
}
