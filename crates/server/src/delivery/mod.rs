//! Delivery: one scheduler per instance takes events from the queue and runs them through the
//! Close action core (`close::run::send`, the same path as `closeflow send`).
//!
//! Ordering: events are concurrent across lookup keys and strictly serial per key. The
//! scheduler keeps the events it has fetched in queue order; walking them oldest first, an
//! event may start only when none of its keys belongs to an event before it that has not
//! finished — in flight, or waiting out a retry's backoff. So a failing key holds back only
//! its own later events, and two events for one new person never both create it.
//!
//! Isolation: each instance has its own scheduler, worker limit and Close client (its own
//! rate-limit pacing), so one instance's failing or throttled Close key never slows another.

pub mod keys;
pub mod order;
pub mod outcome;

use crate::queue::{Delivery, Millis, Queue, Settle, now_ms};
use crate::registry::{Active, Registry};
use crate::telemetry::{self, InternalEvent};
use closeflow_mapping::events::Entry;
use keys::Key;
use outcome::RetryPolicy;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

#[derive(Debug, Clone)]
pub struct Policy {
    /// Events in flight at once, per instance.
    pub concurrency: usize,
    /// Events a scheduler holds in memory (fetched, not finished).
    pub window: usize,
    pub retry: RetryPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            concurrency: 8,
            window: 2_000,
            retry: RetryPolicy::default(),
        }
    }
}

/// Wakes an instance's scheduler when something arrives (intake, a replay).
#[derive(Debug, Default)]
pub struct Wakers {
    by_instance: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    pub fn get(&self, instance: &str) -> Arc<Notify> {
        self.by_instance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(instance.to_string())
            .or_default()
            .clone()
    }
    pub fn wake(&self, instance: &str) {
        self.get(instance).notify_one();
    }
    pub fn wake_all(&self) {
        for n in self
            .by_instance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            n.notify_one();
        }
    }
}

struct Slot {
    d: Delivery,
    /// Parsed once; `None` when the body is not JSON (settled as a corrupt record).
    event: Option<Value>,
    /// The keys under the instance version they were computed with.
    keys: Option<(u64, Vec<Key>)>,
    in_flight: bool,
}

/// A finished attempt, reported back to the scheduler.
struct Done {
    id: i64,
    /// `Some(t)`: not final, try again at `t`. `None`: final, forget the event.
    retry_at: Option<Millis>,
}

/// Runs every instance's scheduler until `stop` turns true, then lets in-flight work finish.
pub struct Deliverer<Q: Queue> {
    pub queue: Arc<Q>,
    pub registry: Arc<Registry>,
    pub wakers: Arc<Wakers>,
    pub policy: Policy,
    pub stop: watch::Receiver<bool>,
}

impl<Q: Queue> Deliverer<Q> {
    /// Starts a scheduler for every instance it does not serve yet. Called at start and after
    /// each reload; returns the handles of the new schedulers.
    pub fn start_new(
        self: &Arc<Self>,
        running: &mut HashSet<String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut out = Vec::new();
        for name in self.registry.all_names() {
            if running.insert(name.clone()) {
                let me = self.clone();
                out.push(tokio::spawn(async move { me.schedule(name).await }));
            }
        }
        out
    }

    async fn schedule(self: Arc<Self>, instance: String) {
        let wake = self.wakers.get(&instance);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut stop = self.stop.clone();
        let mut slots: BTreeMap<i64, Slot> = BTreeMap::new();
        let mut in_flight = 0usize;
        let mut fetch_failed_at: Option<tokio::time::Instant> = None;
        // Fetched events that cannot start whatever the workers (see `order::Decision`).
        let mut held_back = 0usize;
        // A bound on memory when one key's events keep piling up behind its failure.
        let most = self.policy.window.saturating_mul(25);
        loop {
            let stopping = *stop.borrow();
            if stopping && in_flight == 0 {
                return;
            }
            let Some(active) = self.registry.get(&instance) else {
                return;
            };
            let retry_fetch = fetch_failed_at.is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            let counted = slots.len().saturating_sub(held_back);
            if !stopping && counted < self.policy.window && slots.len() < most && retry_fetch {
                let room = (self.policy.window - counted).min(most - slots.len());
                match self.queue.fetch(&instance, room).await {
                    Ok(got) => {
                        fetch_failed_at = None;
                        for d in got {
                            let event = serde_json::from_str::<Value>(&d.body)
                                .ok()
                                .filter(Value::is_object);
                            slots.insert(
                                d.id,
                                Slot {
                                    d,
                                    event,
                                    keys: None,
                                    in_flight: false,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        fetch_failed_at = Some(tokio::time::Instant::now());
                        telemetry::QueueFailed {
                            what: "fetch",
                            error: &e,
                        }
                        .emit();
                    }
                }
            }
            let next = if stopping {
                None
            } else {
                let d = self.dispatch(&active, &mut slots, &mut in_flight, &done_tx);
                held_back = d.held_back;
                d.next
            };
            let sleep = next.map_or(Duration::from_secs(1), |t| {
                Duration::from_millis((t - now_ms()).clamp(1, 1_000) as u64)
            });
            tokio::select! {
                () = wake.notified() => {}
                Some(done) = done_rx.recv() => {
                    in_flight -= 1;
                    self.finish(&mut slots, done);
                    while let Ok(done) = done_rx.try_recv() {
                        in_flight -= 1;
                        self.finish(&mut slots, done);
                    }
                }
                () = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn finish(&self, slots: &mut BTreeMap<i64, Slot>, done: Done) {
        match done.retry_at {
            None => {
                slots.remove(&done.id);
            }
            Some(at) => {
                if let Some(s) = slots.get_mut(&done.id) {
                    s.in_flight = false;
                    s.d.not_before = at;
                    // As the queue recorded it: the next attempt's give-up check counts this one.
                    s.d.attempts += 1;
                }
            }
        }
    }

    /// Starts every event that may start now; returns the decision (when the next waiting
    /// event is due, how many are held back).
    fn dispatch(
        &self,
        active: &Arc<Active>,
        slots: &mut BTreeMap<i64, Slot>,
        in_flight: &mut usize,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> order::Decision {
        for slot in slots.values_mut() {
            let fresh = matches!(&slot.keys, Some((v, _)) if *v == active.version);
            if !fresh {
                let k = slot
                    .event
                    .as_ref()
                    .map(|ev| keys::of(&active.instance, ev))
                    .unwrap_or_default();
                slot.keys = Some((active.version, k));
            }
        }
        let pending: Vec<order::Pending<'_>> = slots
            .values()
            .map(|s| order::Pending {
                keys: s.keys.as_ref().map_or(&[][..], |(_, k)| k.as_slice()),
                in_flight: s.in_flight,
                not_before: s.d.not_before,
            })
            .collect();
        let decision = order::ready(&pending, now_ms(), *in_flight, self.policy.concurrency);
        drop(pending);
        let ids: Vec<i64> = slots.keys().copied().collect();
        for &i in &decision.start {
            let Some(slot) = slots.get_mut(&ids[i]) else {
                continue;
            };
            slot.in_flight = true;
            *in_flight += 1;
            let d = slot.d.clone();
            let event = slot.event.clone();
            let (active, queue, tx) = (active.clone(), self.queue.clone(), done_tx.clone());
            let retry = self.policy.retry.clone();
            let names: Vec<String> = slot
                .keys
                .as_ref()
                .map(|(_, k)| k.iter().map(Key::lock_name).collect())
                .unwrap_or_default();
            tokio::spawn(async move {
                let id = d.id;
                // A panic must not leave the slot in flight for ever (its keys, and one of the
                // instance's workers, would be held until a restart): it dead-letters the event,
                // kept with the reason for a replay once fixed, and the key goes on.
                let attempt = {
                    let (queue, active, d) = (queue.clone(), active.clone(), d.clone());
                    tokio::spawn(async move {
                        deliver(&*queue, &active, d, event, &names, &retry).await
                    })
                };
                let retry_at = match attempt.await {
                    Ok(r) => r,
                    Err(e) => {
                        let outcome = Settle::Dead {
                            reason: "internal_error".into(),
                            error: format!("delivery failed inside closeflow: {e}"),
                            last_reply: None,
                        };
                        if queue.settle(&d, outcome.clone()).await.is_ok() {
                            telemetry::EventSettled {
                                delivery: &d,
                                outcome: &outcome,
                            }
                            .emit();
                        }
                        None
                    }
                };
                let _ = tx.send(Done { id, retry_at });
            });
        }
        decision
    }
}

/// A failpoint for tests of what a panic in a delivery leaves behind (no event or reply is known
/// to cause one): the delivery of the event whose `messageId` is `CLOSEFLOW_FAILPOINT_PANIC`
/// panics where the instance's Close client and key are in use.
fn failpoint_panic(d: &Delivery) {
    if std::env::var_os("CLOSEFLOW_FAILPOINT_PANIC").is_some_and(|id| id == d.message_id.as_str()) {
        panic!("failpoint CLOSEFLOW_FAILPOINT_PANIC: the delivery of {d:?} panicked");
    }
}

/// One attempt at one event, settled in the queue. Returns when to try again, if ever.
async fn deliver<Q: Queue>(
    queue: &Q,
    active: &Active,
    d: Delivery,
    event: Option<Value>,
    keys: &[String],
    retry: &RetryPolicy,
) -> Option<Millis> {
    // Other processes sharing the queue must not plan these keys meanwhile; released (by
    // drop) after the write and the settle.
    let _hold = match queue.hold_keys(&d, keys).await {
        Ok(Some(h)) => h,
        // Another node delivers it now: forget it here, without settling.
        Ok(None) => return None,
        Err(e) => {
            telemetry::QueueFailed {
                what: "hold_keys",
                error: &e,
            }
            .emit();
            return Some(now_ms() + 1_000);
        }
    };
    let outcome = match event {
        None => Settle::Dead {
            reason: "corrupt_record".into(),
            error: "the queued record is not a JSON object".into(),
            last_reply: None,
        },
        Some(ev) => {
            failpoint_panic(&d);
            let entry = Entry::Event(ev);
            let (report, err) = closeflow_close::run::send(
                &active.instance,
                &active.lookups,
                &active.writer,
                0,
                &entry,
            )
            .await;
            outcome::classify(
                &report,
                err.as_ref(),
                d.attempts,
                d.received_at,
                now_ms(),
                retry,
            )
        }
    };
    let retry_at = match &outcome {
        Settle::Retry { not_before, .. } => Some(*not_before),
        _ => None,
    };
    match queue.settle(&d, outcome.clone()).await {
        // Settled elsewhere meanwhile (nothing to count twice): done with it.
        Err(crate::queue::QueueError::NotFound(_)) => None,
        Ok(()) => {
            telemetry::EventSettled {
                delivery: &d,
                outcome: &outcome,
            }
            .emit();
            retry_at
        }
        Err(e) => {
            telemetry::QueueFailed {
                what: "settle",
                error: &e,
            }
            .emit();
            // Not recorded: the event stays queued; attempt it again shortly (planning
            // converges, so a repeat writes nothing that was already written).
            Some(now_ms() + 1_000)
        }
    }
}
