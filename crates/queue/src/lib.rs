//! The durable queue between intake and delivery: the embedded SQLite file ([`sqlite`]) or a
//! shared NATS JetStream cluster ([`jetstream`]), behind role traits ([`roles`]) so that each
//! consumer asks only for what it uses.
//!
//! The contract (checked for every backend by `tests/contract.rs`, and against a model by
//! `tests/model.rs`):
//! - `enqueue` answers only after the events are durable; an event whose `messageId` the
//!   instance accepted within the dedup window is a [`Enqueued::Duplicate`], stored once.
//! - `fetch` hands out each queued event of an instance once per process (a [`Lease`] held by
//!   the caller), oldest first; an event that is not settled comes back after a restart.
//! - [`Lease::settle`] consumes the lease (settled once, by the type system) and records an event's final outcome (or a retry) and counts it, in one durable step,
//!   so that `accepted + replayed = applied + skipped + dead_lettered + queued` always holds.
//! - dead letters can be listed, shown, replayed (queued again, at the back) and dropped.

#![forbid(unsafe_code)]

pub mod jetstream;
pub mod journey;
mod roles;
pub mod sqlite;

pub use roles::{
    DeadLetters, Deliver, Fence, Inspect, Intake, KeyHold, Lease, Queue, SettleError, Settles,
    Upkeep,
};

use serde::Serialize;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// How long a `messageId` seen again is a duplicate, and settled events are kept for it, unless
/// the server is told otherwise (`--dedup-window`): Segment's own window.
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// A cluster's default ack deadline (`--ack-wait`): an event held longer without being settled
/// or extended goes to another node.
pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// How the event arrived, for its journey (route, write key by place, client): stored with
    /// the event in the same write, handed back with it, opaque to the queue. `None` for
    /// events queued without it (a replay, an older server).
    pub meta: Option<String>,
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
    /// What intake stored with it ([`NewEvent::meta`]).
    pub meta: Option<String>,
}

/// What happened to a delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
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
