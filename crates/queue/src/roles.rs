//! The queue's roles, one trait each, so that a consumer asks only for the role it uses (intake
//! for [`Intake`], the scheduler for [`Deliver`], `closeflow dlq` for [`DeadLetters`], `/metrics`
//! and `capture` for [`Inspect`]) and a test double overrides one role without forwarding the
//! others. [`Queue`] is every role at once, for the server's wiring.
//!
//! Delivery hands out a [`Lease`] per event; [`Lease::settle`] consumes it, so an event is
//! settled at most once by the process that holds it, and only a retry hands the lease back.

use crate::{
    DeadLetter, Delivery, Enqueued, InstanceStats, Load, Millis, NewEvent, Outcome, QueueError,
    Retained,
};
use std::future::Future;

/// Accepting events: what intake needs.
pub trait Intake: Send + Sync + 'static {
    /// Stores events durably (all or nothing) and answers per event.
    fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Enqueued>, QueueError>> + Send;

    /// What `instance` holds, as last read from the queue's own store (no I/O): what intake's
    /// back-pressure compares with the instance's share of `--max-queue` and `--max-queue-mib`.
    fn load(&self, instance: &str) -> Load;
}

/// The backend step behind [`Lease::settle`]. Only the queue's backends implement it: a lease
/// is made by their `fetch`, and settled by the backend that made it.
pub trait Settles: Clone + Send + Sync + 'static {
    /// Records what happened to a leased event; after a retry the lease comes back with its
    /// attempts and backoff as recorded.
    fn settle(
        &self,
        lease: Lease<Self>,
        outcome: Outcome,
    ) -> impl Future<Output = Result<Option<Lease<Self>>, SettleError<Self>>> + Send;
}

/// Taking events out to deliver them: what the scheduler needs.
pub trait Deliver: Send + Sync + 'static {
    /// The backend whose leases this hands out (a double that wraps a backend hands out its).
    type Backend: Settles;

    /// Up to `max` queued events of `instance` not handed out yet, oldest first.
    fn fetch(
        &self,
        instance: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Lease<Self::Backend>>, QueueError>> + Send;

    /// Before an event is planned: holds its lookup keys against other processes that share
    /// the queue, so that two events sharing a key are never planned at once anywhere.
    /// `Ok(None)`: the event is no longer this process's to deliver (another one took it over);
    /// drop its lease without settling. One process alone needs nothing (its scheduler
    /// serialises).
    fn hold_keys(
        &self,
        d: &Delivery,
        keys: &[String],
    ) -> impl Future<Output = Result<Option<KeyHold>, QueueError>> + Send {
        let _ = (d, keys);
        async { Ok(Some(KeyHold::default())) }
    }
}

/// The dead-letter store: what `closeflow dlq` and the admin routes need.
pub trait DeadLetters: Send + Sync + 'static {
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
}

/// Reading what the queue holds: `/metrics`, `/admin/cluster` and `closeflow capture`.
pub trait Inspect: Send + Sync + 'static {
    fn stats(&self) -> impl Future<Output = Result<Vec<InstanceStats>, QueueError>> + Send;

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

    /// What this process does in a cluster (node, partitions owned, peers), for the admin
    /// route; `None` for a backend that is not shared.
    fn cluster(&self) -> impl Future<Output = Option<serde_json::Value>> + Send {
        async { None }
    }
}

/// Periodic upkeep.
pub trait Upkeep: Send + Sync + 'static {
    /// Pruning settled events and the like, called about once a minute by the server.
    fn maintain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Every role: what the server wires between intake, delivery and the admin routes.
pub trait Queue: Intake + Deliver + DeadLetters + Inspect + Upkeep {}

impl<T: Intake + Deliver + DeadLetters + Inspect + Upkeep> Queue for T {}

/// Held while an event is planned and written (see [`Deliver::hold_keys`]); dropping it
/// releases the keys.
#[derive(Debug, Default)]
pub struct KeyHold {
    /// Told when the hold is dropped (a shared queue then releases its locks).
    pub release: Option<tokio::sync::oneshot::Sender<()>>,
    /// Whether the keys are still this process's.
    pub fence: std::sync::Arc<Fence>,
}

impl KeyHold {
    /// Whether the keys are still held: a write must not go out when they are not.
    pub fn holds(&self) -> bool {
        self.fence.holds()
    }
}

/// Whether a hold on keys still stands. One process's holds always do; a cluster's key locks
/// are lost when a renewal finds another holder, or when none succeeded for as long as a lock
/// lives (another node may have taken the key since).
#[derive(Debug, Default)]
pub struct Fence {
    lost: std::sync::atomic::AtomicBool,
    /// Until when the last successful renewal keeps the locks (`None`: no expiry).
    until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Fence {
    /// A fence whose locks stand until `until` unless renewed.
    pub fn until(until: std::time::Instant) -> Fence {
        Fence {
            lost: false.into(),
            until: std::sync::Mutex::new(Some(until)),
        }
    }

    pub fn holds(&self) -> bool {
        !self.lost.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none_or(|t| std::time::Instant::now() < t)
    }

    /// Every lock was renewed: they stand until `until`.
    pub fn renewed(&self, until: std::time::Instant) {
        *self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    /// A lock is another's now: lost for good.
    pub fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One fetched event, this process's to settle. Not `Clone`: settling consumes it. Dropped
/// unsettled, the event stays queued (and comes back after a restart, or once a shared queue's
/// lease on it lapses).
pub struct Lease<B> {
    event: Delivery,
    backend: B,
}

impl<B> std::fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lease").field(&self.event).finish()
    }
}

impl<B> std::ops::Deref for Lease<B> {
    type Target = Delivery;
    fn deref(&self) -> &Delivery {
        &self.event
    }
}

impl<B: Settles> Lease<B> {
    /// Only the backends make leases.
    pub(crate) fn new(backend: B, event: Delivery) -> Lease<B> {
        Lease { event, backend }
    }

    /// The event as the lease was handed out (or as a retry left it).
    pub fn event(&self) -> &Delivery {
        &self.event
    }

    pub(crate) fn event_mut(&mut self) -> &mut Delivery {
        &mut self.event
    }

    /// Records what happened to the event, in one durable step with its count. `Ok(None)`: a
    /// final outcome, the event has left the queue; `Ok(Some(lease))`: a retry, the event stays
    /// queued and the lease is kept for the next attempt.
    ///
    /// A lease settles once; a second settle of it does not compile:
    /// ```compile_fail
    /// # async fn twice(q: closeflow_queue::sqlite::SqliteQueue) {
    /// use closeflow_queue::{Deliver, Outcome};
    /// let lease = q.fetch("a", 1).await.unwrap().remove(0);
    /// let _ = lease.settle(Outcome::Applied).await;
    /// let _ = lease.settle(Outcome::Applied).await;
    /// # }
    /// ```
    pub async fn settle(self, outcome: Outcome) -> Result<Option<Lease<B>>, SettleError<B>> {
        let backend = self.backend.clone();
        backend.settle(self, outcome).await
    }
}

/// A settle that was not recorded.
pub struct SettleError<B> {
    pub error: QueueError,
    /// The lease back, to try again; `None` when the event is no longer this process's to
    /// settle ([`QueueError::NotFound`]: settled already, or taken over by another node).
    pub lease: Option<Lease<B>>,
}

impl<B> SettleError<B> {
    pub(crate) fn kept(error: QueueError, lease: Lease<B>) -> SettleError<B> {
        let lease = (!matches!(error, QueueError::NotFound(_))).then_some(lease);
        SettleError { error, lease }
    }
}

impl<B> std::fmt::Display for SettleError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<B> std::fmt::Debug for SettleError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleError")
            .field("error", &self.error)
            .field("lease", &self.lease)
            .finish()
    }
}

impl<B> std::error::Error for SettleError<B> {}
