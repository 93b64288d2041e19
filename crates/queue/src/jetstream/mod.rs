//! The replicated queue on NATS JetStream: several closeflow nodes share one NATS cluster.
//!
//! Layout (every name starts with a prefix, `CLOSEFLOW` by default; see [`names`]):
//! - a **queue stream per instance** (work-queue retention, `--replicas`, the dedup window as
//!   its message-id window), subjects `….q.<instance>.<partition>`. Intake publishes each event
//!   with `Nats-Msg-Id = messageId` and answers only after the publish acknowledgement, i.e.
//!   once a quorum of the cluster stored it. The partition is a hash of the event's partition
//!   key (the person: User ID, else email, else Company ID; the server's keyer computes it).
//! - **accepted messageIds** (`…_SEEN`, bucket TTL = the dedup window, one key per
//!   `messageId`, written once the event is stored): JetStream's own message-id window is
//!   rebuilt from the messages it stores after a restart, and a delivered event is gone.
//! - a **durable pull consumer per partition**. A node delivers a partition only while it holds
//!   the partition's lease (`…_LEASES`, create-if-absent, bucket TTL = 2 × ack deadline + 2 s,
//!   renewed by compare-and-set); partitions are spread evenly over the live nodes
//!   (heartbeats in the same bucket). See [`owner`].
//! - **lookup-key locks** (`…_LOCKS`, create-if-absent, bucket TTL = the ack deadline, renewed
//!   while held, deleted after the write): two events that share any key are never planned at
//!   once on two nodes, even when their partition keys put them in different partitions.
//! - a **record per event** (`…_EVENTS`): failed attempts, the backoff, and the final outcome,
//!   written by compare-and-set before anything else, so a settle happens once, and a node
//!   that dies after deciding but before acknowledging is finished by the next one (the
//!   follow-ups — dead letter, counter, acknowledgement — are idempotent by message id).
//! - **timing**: the lease bucket's TTL is the cluster's `--ack-wait` (a node started with
//!   another refuses, unless no other node is alive: then it re-times the cluster, [`retime`]).
//! - **durable counters** (`…_COUNTS`, JetStream counters, deduplicated by message id) per
//!   instance, node, outcome and reason; the dead-letter stream `…_DLQ`.

mod errors;
mod leases;
mod locks;
pub mod names;
mod nodes;
mod ops;
mod owner;
pub mod records;
mod retime;
mod settle;
mod stats;

use crate::{Load, QueueError};
use async_nats::jetstream::{self, kv, stream};
use errors::failed;
use names::Names;
use owner::InstanceQueue;
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
            ack_wait: crate::ACK_WAIT,
            dedup_window: crate::DEDUP_WINDOW,
            retention: crate::DEDUP_WINDOW,
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
    inner: Arc<NodeState>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JetStreamQueue({})", self.inner.opts.node)
    }
}

pub(crate) struct NodeState {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
    opts: Options,
    replicas: usize,
    events: kv::Store,
    leases: kv::Store,
    locks: kv::Store,
    /// `messageId`s accepted within the dedup window (see [`Names::seen_bucket`]).
    seen: kv::Store,
    dlq: stream::Stream,
    counts: stream::Stream,
    instances: tokio::sync::Mutex<HashMap<String, Arc<InstanceQueue>>>,
    keyer: Option<Keyer>,
    arrived: Option<Arrived>,
    /// Each instance's stream as last read (see [`JetStreamQueue::load`]).
    loads: std::sync::RwLock<HashMap<String, Load>>,
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
            .map_err(|_| failed(&format!("creating bucket {name}"), e)),
    }
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
        let seen = bucket(&js, kv_cfg(names.seen_bucket(), opts.dedup_window)).await?;
        let dlq = js
            .get_or_create_stream(stream::Config {
                name: names.dlq_stream(),
                subjects: vec![names.dlq_subjects()],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("creating the dead-letter stream", e))?;
        // One subject per counter, its last message the running total: only that one is kept
        // (the stream grew by a message per event before). Set on an existing stream too.
        let counts_cfg = stream::Config {
            name: names.counts_stream(),
            subjects: vec![names.counters()],
            num_replicas: replicas,
            allow_message_counter: true,
            duplicate_window: opts.retention,
            max_messages_per_subject: 1,
            ..Default::default()
        };
        let counts = js
            .get_or_create_stream(counts_cfg.clone())
            .await
            .map_err(|e| failed("creating the counter stream", e))?;
        let counts = if counts.cached_info().config.max_messages_per_subject == 1 {
            counts
        } else {
            js.update_stream(counts_cfg)
                .await
                .map_err(|e| failed("bounding the counter stream", e))?;
            js.get_stream(names.counts_stream())
                .await
                .map_err(|e| failed("bounding the counter stream", e))?
        };
        let inner = Arc::new(NodeState {
            js,
            client,
            names,
            opts,
            replicas,
            events,
            leases,
            locks,
            seen,
            dlq,
            counts,
            instances: tokio::sync::Mutex::new(HashMap::new()),
            keyer,
            arrived,
            loads: std::sync::RwLock::default(),
        });
        if inner.arrived.is_some() {
            leases::listen_for_arrivals(&inner).await?;
        }
        Ok(JetStreamQueue { inner })
    }

    /// Every node must time leases alike, or one would take over a partition while another
    /// still holds it: a node whose --ack-wait differs from the cluster's refuses to start,
    /// unless no other node is alive: then it re-times the cluster ([`retime`]).
    /// The outer error is the cluster not answering (worth another try), the inner one the
    /// mismatch (not worth one).
    pub async fn check_timing(&self) -> Result<Result<(), String>, QueueError> {
        let stored = self
            .inner
            .leases
            .status()
            .await
            .map_err(|e| failed("reading the lease bucket", e))?
            .max_age();
        if stored != self.inner.opts.lease_ttl() {
            let was = stored.saturating_sub(Duration::from_secs(2)) / 2;
            if retime::alone(&self.inner).await? {
                retime::retime(&self.inner, was).await?;
                return Ok(Ok(()));
            }
            return Ok(Err(format!(
                "the cluster's nodes use an ack deadline of {was:?} (lease time {stored:?}); this node was started with --ack-wait {:?}: start every node with the same --ack-wait, or, to change it, stop every node, start one with the new value alone (finding no other node alive, it re-times the cluster), then the others",
                self.inner.opts.ack_wait
            )));
        }
        Ok(Ok(()))
    }

    /// Starts taking part in delivery: heartbeats, partition leases, lease extension. Only a
    /// serving node calls this (`closeflow dlq` only reads and writes the shared state).
    pub fn start(&self) {
        leases::start(&self.inner);
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

    /// The cluster's journey stream (created on first use), kept `retention`.
    pub async fn journal(
        &self,
        retention: Duration,
    ) -> Result<crate::journey::JetStreamJournal, QueueError> {
        crate::journey::JetStreamJournal::open(
            self.inner.client.clone(),
            &self.inner.opts.prefix,
            self.inner.replicas,
            retention,
        )
        .await
    }

    /// The cluster's journey stream if a server made one (for the CLI: never creates it).
    pub async fn existing_journal(
        &self,
    ) -> Result<Option<crate::journey::JetStreamJournal>, QueueError> {
        crate::journey::JetStreamJournal::existing(
            self.inner.client.clone(),
            &self.inner.opts.prefix,
        )
        .await
    }

    pub fn node(&self) -> &str {
        &self.inner.opts.node
    }

    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }
}
