//! The durable queue between intake and delivery, behind one interface.
//!
//! The contract (checked for every backend by [`contract`]):
//! - `enqueue` answers only after the events are durable; an event whose `messageId` the
//!   instance accepted within the dedup window is a [`Enqueued::Duplicate`], stored once.
//! - `fetch` hands out each queued event of an instance once per process (a lease held by the
//!   caller), oldest first; an event that is not settled comes back after a restart.
//! - `settle` records an event's final outcome (or a retry) and counts it, in one durable step,
//!   so that `accepted + replayed = applied + skipped + dead_lettered + queued` always holds.
//! - dead letters can be listed, shown, replayed (queued again, at the back) and dropped.

pub mod contract;
pub mod jetstream;
pub mod sqlite;

use serde::Serialize;
use std::future::Future;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// An event accepted at intake, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub message_id: String,
    /// The event as JSON text (enriched at intake: `messageId`, `receivedAt`, `timestamp`).
    pub body: String,
    pub received_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Accepted,
    /// The instance already holds an event with this `messageId` (within the dedup window).
    Duplicate,
}

/// A queued event handed to a delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique and increasing within an instance: queue order.
    pub id: i64,
    pub instance: String,
    pub message_id: String,
    pub body: String,
    pub received_at: Millis,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be attempted before this time (a retry's backoff).
    pub not_before: Millis,
}

/// What happened to a delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Planned and written (or nothing needed writing): final.
    Applied,
    /// Nothing to do for this event (e.g. no mapping matched): final.
    Skipped { reason: String },
    /// Failed for now; try again at `not_before`. Not final: the event stays queued.
    Retry {
        not_before: Millis,
        reason: String,
        error: String,
    },
    /// Given up: final, kept in the dead-letter store.
    Dead {
        reason: String,
        error: String,
        last_reply: Option<String>,
    },
}

/// A dead-lettered event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub instance: String,
    pub message_id: String,
    pub reason: String,
    pub error: String,
    pub last_reply: Option<String>,
    pub attempts: u32,
    pub received_at: Millis,
    pub dead_at: Millis,
    pub body: String,
}

/// An event the queue still retains (queued or settled within the retention window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    pub id: i64,
    pub message_id: String,
    pub received_at: Millis,
    pub body: String,
}

/// Counts and gauges of one instance, as stored durably.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceStats {
    pub instance: String,
    pub accepted: u64,
    pub duplicates: u64,
    pub applied: u64,
    /// By reason.
    pub skipped: Vec<(String, u64)>,
    pub dead_lettered: Vec<(String, u64)>,
    pub retried: Vec<(String, u64)>,
    pub replayed: u64,
    /// Events waiting or in flight.
    pub queued: u64,
    /// Events in the dead-letter store now.
    pub dead_now: u64,
    pub oldest_queued_at: Option<Millis>,
    /// Unreadable records set aside at startup or when read.
    pub quarantined: u64,
    /// Final outcomes and retries by the node that reached them (a shared queue only).
    pub by_node: Vec<NodeCounts>,
}

/// What one node of a cluster did for an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeCounts {
    pub node: String,
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub retried: u64,
}

impl InstanceStats {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.iter().map(|(_, n)| n).sum()
    }
    /// `accepted + replayed = applied + skipped + dead_lettered + queued`.
    pub fn balanced(&self) -> bool {
        self.accepted + self.replayed
            == self.applied + self.skipped_total() + self.dead_lettered_total() + self.queued
    }
}

/// What one instance holds in the queue, as last read from the store itself (never kept by
/// adding and subtracting in memory, which drifts as soon as another process writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Load {
    /// Events waiting or in flight.
    pub queued: u64,
    /// Bytes of the events waiting on someone: queued, and (where the backend keeps them
    /// with the queue) dead letters. Settled events kept for deduplication are not counted.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The disk is full: try again later, nothing was stored.
    #[error("the queue's storage is full: {0}")]
    Full(String),
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    #[error("no such event: {0}")]
    NotFound(i64),
}

/// Held while an event is planned and written (see [`Queue::hold_keys`]); dropping it releases
/// the keys.
#[derive(Debug, Default)]
pub struct KeyHold(pub Option<tokio::sync::oneshot::Sender<()>>);

/// A durable queue of events per instance.
pub trait Queue: Send + Sync + 'static {
    /// Stores events durably (all or nothing) and answers per event.
    fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Enqueued>, QueueError>> + Send;

    /// Up to `max` queued events of `instance` not handed out yet, oldest first.
    fn fetch(
        &self,
        instance: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send;

    /// Records what happened to a fetched event. After `Retry` the caller keeps the lease.
    fn settle(
        &self,
        d: &Delivery,
        outcome: Settle,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    fn dead_letters(
        &self,
        instance: Option<&str>,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send;

    fn dead_letter(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<DeadLetter>, QueueError>> + Send;

    /// Queues a dead letter again (at the back, attempts reset). `false` when it is not there.
    fn replay(&self, id: i64) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Deletes a dead letter for good. `false` when it is not there.
    fn drop_dead(&self, id: i64) -> impl Future<Output = Result<bool, QueueError>> + Send;

    fn stats(&self) -> impl Future<Output = Result<Vec<InstanceStats>, QueueError>> + Send;

    /// What `instance` holds, as last read from the queue's own store (no I/O): what intake's
    /// back-pressure compares with the instance's share of `--max-queue` and `--max-queue-mib`.
    fn load(&self, instance: &str) -> Load;

    /// Events of `instance` still retained (queued, or settled within the retention window)
    /// that were received at or after `since`, in queue order after the event `after` (0: from
    /// the start), at most `limit`: pages for `closeflow capture`.
    fn retained(
        &self,
        instance: &str,
        since: Millis,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Retained>, QueueError>> + Send;

    /// Before an event is planned: holds its lookup keys against other processes that share
    /// the queue, so that two events sharing a key are never planned at once anywhere.
    /// `Ok(None)`: the event is no longer this process's to deliver (another one took it over);
    /// drop it without settling. One process alone needs nothing (its scheduler serialises).
    fn hold_keys(
        &self,
        d: &Delivery,
        keys: &[String],
    ) -> impl Future<Output = Result<Option<KeyHold>, QueueError>> + Send {
        let _ = (d, keys);
        async { Ok(Some(KeyHold::default())) }
    }

    /// Periodic upkeep (pruning settled events), called about once a minute by the server.
    fn maintain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// What this process does in a cluster (node, partitions owned, peers), for the admin
    /// route; `None` for a backend that is not shared.
    fn cluster(&self) -> impl Future<Output = Option<serde_json::Value>> + Send {
        async { None }
    }
}
