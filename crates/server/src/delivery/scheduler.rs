//! One instance's scheduler: keeps a window of fetched events in queue order, starts each one
//! as soon as `order::ready` allows (no earlier unfinished event shares a key or a record, a
//! worker is free, its backoff is over), looks up the events next in line ahead of time in
//! shared searches (`ahead`), and takes back the attempts' results. Its state is this struct's
//! fields, each with its reason, rather than a loop's locals.

use super::ahead::{self, ReadAhead};
use super::attempt::{Attempt, attempt, settle};
use super::keys::{self, Key};
use super::order::Who;
use super::{Deliverer, order};
use crate::registry::Active;
use crate::telemetry::{self, InternalEvent};
use closeflow_queue::{Deliver, Delivery, Lease, Millis, Outcome, now_ms};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The lease a scheduler holds for each event of `Q`.
type LeaseOf<Q> = Lease<<Q as Deliver>::Backend>;

struct Slot<L> {
    /// The event as the scheduler sees it (attempts and backoff as of its last attempt).
    d: Delivery,
    /// The event's lease; out with its worker while in flight.
    lease: Option<L>,
    /// Parsed once; `None` when the body is not JSON (settled as a corrupt record).
    event: Option<Value>,
    /// The keys and lookups under the instance version they were computed with.
    keyed: Option<Keyed>,
    /// The records its lookups had matched when it started (what it may write).
    started_with: Vec<Key>,
    /// Whether, and until when, the event is not to be looked up ahead (see `ahead`).
    opaque: ahead::Opaque,
    in_flight: bool,
    /// Close calls read-aheads made for it (shared with other events), for its journey.
    looked_up: Vec<closeflow_close_api::calls::Call>,
}

/// What an event's keys are under one instance version.
pub(super) struct Keyed {
    version: u64,
    keys: Vec<Key>,
    pub(super) payloads: Vec<closeflow_close::payload::Payload>,
    /// Its lookups, as the identity cache names them.
    reqs: Vec<closeflow_close::lookup::LookupRequest>,
}

/// A finished attempt, reported back to the scheduler.
struct Done<L> {
    id: i64,
    /// `Some((t, lease))`: not final, try again at `t` with the lease handed back. `None`: final
    /// (or no longer this process's), forget the event.
    retry: Option<(Millis, L)>,
}

pub(super) struct Scheduler<Q: Deliver> {
    deliverer: Arc<Deliverer<Q>>,
    instance: String,
    /// Fetched, unfinished events by queue id: queue order is key order.
    slots: BTreeMap<i64, Slot<LeaseOf<Q>>>,
    in_flight: usize,
    /// Fetched events that cannot start whatever the workers (see `order::Decision`): they do
    /// not count against the window, or one failing key would stall every other.
    held_back: usize,
    /// A bound on memory when one key's events keep piling up behind its failure.
    most: usize,
    /// When the last fetch failed: the next one waits a second rather than spinning.
    fetch_failed_at: Option<tokio::time::Instant>,
    done_tx: mpsc::UnboundedSender<Done<LeaseOf<Q>>>,
    done_rx: mpsc::UnboundedReceiver<Done<LeaseOf<Q>>>,
    /// The read-ahead's state: at most one search of it under way.
    ahead: ReadAhead,
}

impl<Q: Deliver> Scheduler<Q> {
    pub(super) fn new(deliverer: Arc<Deliverer<Q>>, instance: String) -> Scheduler<Q> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let most = deliverer.policy.window.saturating_mul(25);
        Scheduler {
            deliverer,
            instance,
            slots: BTreeMap::new(),
            in_flight: 0,
            held_back: 0,
            most,
            fetch_failed_at: None,
            done_tx,
            done_rx,
            ahead: ReadAhead::new(),
        }
    }

    /// Until the instance is gone, or the server stops and nothing is in flight.
    pub(super) async fn run(mut self) {
        let wake = self.deliverer.wakers.get(&self.instance);
        let mut stop = self.deliverer.stop.clone();
        loop {
            let stopping = *stop.borrow();
            if stopping && self.in_flight == 0 {
                return;
            }
            let Some(active) = self.deliverer.registry.get(&self.instance) else {
                return;
            };
            if !stopping {
                self.fill().await;
            }
            let next = if stopping {
                None
            } else {
                let d = self.dispatch(&active);
                self.held_back = d.held_back;
                d.next
            };
            let sleep = next.map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t - now_ms()).clamp(1, 1_000) as u64)
            });
            tokio::select! {
                () = wake.notified() => {}
                Some(read) = self.ahead.results.recv() => {
                    self.read(read);
                }
                Some(done) = self.done_rx.recv() => {
                    self.finish(done);
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.finish(done);
                    }
                }
                () = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Fetches events into the window while there is room.
    async fn fill(&mut self) {
        let window = self.deliverer.policy.window;
        let retry_fetch = self
            .fetch_failed_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        let counted = self.slots.len().saturating_sub(self.held_back);
        if counted >= window || self.slots.len() >= self.most || !retry_fetch {
            return;
        }
        let room = (window - counted).min(self.most - self.slots.len());
        match self.deliverer.queue.fetch(&self.instance, room).await {
            Ok(got) => {
                self.fetch_failed_at = None;
                for lease in got {
                    let d = lease.event().clone();
                    let event = serde_json::from_str::<Value>(&d.body)
                        .ok()
                        .filter(Value::is_object);
                    self.slots.insert(
                        d.id,
                        Slot {
                            d,
                            lease: Some(lease),
                            event,
                            keyed: None,
                            started_with: Vec::new(),
                            opaque: ahead::Opaque::default(),
                            in_flight: false,
                            looked_up: Vec::new(),
                        },
                    );
                }
            }
            Err(e) => {
                self.fetch_failed_at = Some(tokio::time::Instant::now());
                telemetry::QueueFailed {
                    what: "fetch",
                    error: &e,
                }
                .emit();
            }
        }
    }

    fn finish(&mut self, done: Done<LeaseOf<Q>>) {
        self.in_flight -= 1;
        self.ahead.finished();
        match done.retry {
            None => {
                self.slots.remove(&done.id);
            }
            Some((at, lease)) => {
                if let Some(s) = self.slots.get_mut(&done.id) {
                    s.in_flight = false;
                    s.lease = Some(lease);
                    s.d.not_before = at;
                    // As the queue recorded it: the next attempt's give-up check counts this one.
                    s.d.attempts += 1;
                }
            }
        }
    }

    /// Takes back what a read-ahead found.
    fn read(&mut self, read: ahead::Read) {
        self.ahead.reading = false;
        for (id, r) in read.results {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.opaque = ahead::Opaque::after(&r);
                slot.looked_up.extend(read.calls.iter().cloned());
            }
        }
    }

    /// Starts every event that may start now, and a read-ahead when one is due; returns the
    /// decision (when the next waiting event is due, how many are held back).
    fn dispatch(&mut self, active: &Arc<Active>) -> order::Decision {
        let lookups = &active.lookups;
        for slot in self.slots.values_mut() {
            if slot
                .keyed
                .as_ref()
                .is_none_or(|k| k.version != active.version)
            {
                let (keys, payloads) = slot
                    .event
                    .as_ref()
                    .map(|ev| keys::of(&active.instance, ev))
                    .unwrap_or_default();
                let reqs = lookups.requests(&payloads);
                slot.keyed = Some(Keyed {
                    version: active.version,
                    keys,
                    payloads,
                    reqs,
                });
            }
        }
        // Each event's keys with the records they matched, and what is known of whom it is about.
        let caching = lookups.caching();
        let now = tokio::time::Instant::now();
        let whom: Vec<(Vec<Key>, Who)> = self
            .slots
            .values()
            .map(|s| {
                let k = s.keyed.as_ref().expect("keyed above");
                let mut keys = k.keys.clone();
                let found = lookups.identity(&k.reqs);
                let records = found.iter().flatten().map(|id| Key::Record(id.clone()));
                if s.in_flight {
                    keys.extend(s.started_with.iter().cloned());
                    keys.extend(records);
                    return (keys, Who::Known);
                }
                if k.reqs.is_empty() {
                    return (keys, Who::Known);
                }
                if !caching || s.opaque.now(now) {
                    return (keys, Who::Opaque);
                }
                let who = if found.is_some() {
                    Who::Known
                } else {
                    Who::Unknown
                };
                keys.extend(records);
                (keys, who)
            })
            .collect();
        let pending: Vec<order::Pending<'_>> = self
            .slots
            .values()
            .zip(&whom)
            .map(|(s, (keys, who))| order::Pending {
                keys,
                who: *who,
                in_flight: s.in_flight,
                not_before: s.d.not_before,
            })
            .collect();
        let concurrency = self.deliverer.policy.concurrency;
        let decision = order::ready(&pending, now_ms(), self.in_flight, concurrency);
        drop(pending);
        let ids: Vec<i64> = self.slots.keys().copied().collect();
        for &i in &decision.start {
            let Some(slot) = self.slots.get_mut(&ids[i]) else {
                continue;
            };
            // Never missing while the event is not in flight: the lease comes back with it.
            let Some(lease) = slot.lease.take() else {
                continue;
            };
            slot.in_flight = true;
            slot.started_with = whom[i]
                .0
                .iter()
                .filter(|k| matches!(k, Key::Record(_)))
                .cloned()
                .collect();
            self.in_flight += 1;
            let names: Vec<String> = slot
                .keyed
                .as_ref()
                .map(|k| k.keys.iter().map(Key::lock_name).collect())
                .unwrap_or_default();
            tokio::spawn(attempt_guarded(
                self.deliverer.queue.clone(),
                active.clone(),
                lease,
                slot.d.clone(),
                slot.event.clone(),
                names,
                self.deliverer.policy.retry.clone(),
                self.done_tx.clone(),
                (
                    self.deliverer.recorder.clone(),
                    self.deliverer
                        .recorder
                        .on()
                        .then(|| std::mem::take(&mut slot.looked_up)),
                ),
            ));
        }
        if caching {
            let key = |i: usize| self.slots[&ids[i]].keyed.as_ref().expect("keyed above");
            let due = self.ahead.due(
                &decision.upcoming,
                |i| whom[i].1 == Who::Unknown,
                |i| lookups.to_look_up(&key(i).payloads),
                concurrency,
                lookups.search_chunk(),
            );
            if !due.is_empty() {
                let events: Vec<(i64, Vec<closeflow_close::payload::Payload>)> = due
                    .into_iter()
                    .map(|i| {
                        let k = self.slots[&ids[i]].keyed.as_ref().expect("keyed above");
                        (ids[i], k.payloads.clone())
                    })
                    .collect();
                self.ahead.start(lookups.clone(), events);
            }
        }
        decision
    }
}

/// Runs one attempt on a task of its own and always reports back. A panic must not leave the
/// slot in flight for ever (its keys, and one of the instance's workers, would be held until a
/// restart): it dead-letters the event, kept with the reason for a replay once fixed, and the
/// key goes on. So the attempt runs on a task of its own, and the lease stays here to settle.
#[allow(clippy::too_many_arguments)]
async fn attempt_guarded<Q: Deliver>(
    queue: Arc<Q>,
    active: Arc<Active>,
    lease: LeaseOf<Q>,
    d: Delivery,
    event: Option<Value>,
    names: Vec<String>,
    retry: super::outcome::RetryPolicy,
    done: mpsc::UnboundedSender<Done<LeaseOf<Q>>>,
    (recorder, looked_up): (
        Arc<crate::journey::Recorder>,
        Option<Vec<closeflow_close_api::calls::Call>>,
    ),
) {
    let id = d.id;
    let active_for_journey = active.clone();
    let names_for_journey = names.clone();
    let running = {
        let d = d.clone();
        tokio::spawn(async move {
            attempt(&*queue, &active, &d, event, &names, &retry, looked_up).await
        })
    };
    let retry = match running.await {
        Ok(Attempt::Forget) => None,
        Ok(Attempt::Later(at)) => Some((at, lease)),
        Ok(Attempt::Settle(outcome, hold, stage)) => {
            let next = settle(lease, &d, outcome, (&recorder, stage)).await;
            // Released after the write and the settle.
            drop(hold);
            next
        }
        Err(e) => {
            let outcome = Outcome::Dead {
                reason: "internal_error".into(),
                error: format!("delivery failed inside closeflow: {e}"),
                last_reply: None,
            };
            if lease.settle(outcome.clone()).await.is_ok() {
                telemetry::EventSettled {
                    delivery: &d,
                    outcome: &outcome,
                }
                .emit();
                let stage = crate::journey::stages::attempt(
                    &active_for_journey.instance,
                    &d,
                    None,
                    None,
                    vec![],
                    &names_for_journey,
                    now_ms(),
                );
                let arrived = (d.attempts == 0)
                    .then(|| crate::journey::stages::arrived(&d))
                    .flatten();
                let stages = arrived.into_iter().chain([stage]).collect();
                recorder.record_all(crate::journey::stages::settled(stages, &outcome));
            }
            None
        }
    };
    let _ = done.send(Done { id, retry });
}
