//! One attempt at one event: hold its keys against other processes, plan and write it through
//! the action core, classify the result, and settle it with the event's lease. Kept apart from
//! the scheduler, which decides only *when* an attempt may start.

use super::outcome::{self, RetryPolicy};
use crate::journey::{Recorder, stages};
use crate::registry::Active;
use crate::telemetry::{self, InternalEvent};
use closeflow_mapping::events::Entry;
use closeflow_queue::journey::Record;
use closeflow_queue::{Deliver, Delivery, KeyHold, Lease, Millis, Outcome, now_ms};
use serde_json::Value;

/// A failpoint for tests of what a panic in a delivery leaves behind (no event or reply is known
/// to cause one): the delivery of the event whose `messageId` is `CLOSEFLOW_FAILPOINT_PANIC`
/// panics where the instance's Close client and key are in use.
fn failpoint_panic(d: &Delivery) {
    if std::env::var_os("CLOSEFLOW_FAILPOINT_PANIC").is_some_and(|id| id == d.message_id.as_str()) {
        panic!("failpoint CLOSEFLOW_FAILPOINT_PANIC: the delivery of {d:?} panicked");
    }
}

/// What one attempt came to.
pub(super) enum Attempt {
    /// Another node delivers the event now: forget it here, without settling.
    Forget,
    /// The keys could not be held: try again at this time.
    Later(Millis),
    /// The outcome to settle, with the keys held until it is settled, and the attempt's
    /// journey stage (its outcome added once settled).
    Settle(Outcome, KeyHold, Vec<Record>),
}

/// One attempt at one event: its keys held, the event planned and written.
pub(super) async fn attempt<Q: Deliver>(
    queue: &Q,
    active: &Active,
    d: &Delivery,
    event: Option<Value>,
    keys: &[String],
    retry: &RetryPolicy,
    // The read-ahead's calls for it; `None`: journeys are off (no stage is built).
    looked_up: Option<Vec<closeflow_close_api::calls::Call>>,
) -> Attempt {
    let journeys = looked_up.is_some();
    // Other processes sharing the queue must not plan these keys meanwhile; released (by
    // drop) after the write and the settle.
    let hold = match queue.hold_keys(d, keys).await {
        Ok(Some(h)) => h,
        Ok(None) => return Attempt::Forget,
        Err(e) => {
            telemetry::QueueFailed {
                what: "hold_keys",
                error: &e,
            }
            .emit();
            return Attempt::Later(now_ms() + 1_000);
        }
    };
    let started = now_ms();
    let (outcome, stage) = match event {
        None => (
            Outcome::Dead {
                reason: "corrupt_record".into(),
                error: "the queued record is not a JSON object".into(),
                last_reply: None,
            },
            journeys
                .then(|| stages::attempt(&active.instance, d, None, None, vec![], keys, started)),
        ),
        Some(ev) => {
            failpoint_panic(d);
            let entry = Entry::Event(ev);
            let writer = super::fenced::Fenced {
                inner: &active.writer,
                hold: &hold,
                instance: &d.instance,
            };
            let ((report, err), own) = closeflow_close_api::calls::recorded(
                closeflow_close::run::send(&active.instance, &active.lookups, &writer, 0, &entry),
            )
            .await;
            let outcome = outcome::classify(
                &report,
                err.as_ref(),
                d.attempts,
                d.received_at,
                now_ms(),
                retry,
            );
            let ev = match &entry {
                Entry::Event(ev) => Some(ev),
                Entry::Invalid { .. } => None,
            };
            let stage = looked_up.map(|mut calls| {
                calls.extend(own);
                stages::attempt(&active.instance, d, ev, Some(&report), calls, keys, started)
            });
            (outcome, stage)
        }
    };
    // On its first attempt, the event's received stage from what intake stored with it.
    let stages = match stage {
        None => vec![],
        Some(stage) if d.attempts == 0 => stages::arrived(d).into_iter().chain([stage]).collect(),
        Some(stage) => vec![stage],
    };
    Attempt::Settle(outcome, hold, stages)
}

/// Settles an attempt's outcome. Returns when to try again, if ever, with the lease back.
pub(super) async fn settle<L: closeflow_queue::Settles>(
    lease: Lease<L>,
    d: &Delivery,
    outcome: Outcome,
    journey: (&Recorder, Vec<Record>),
) -> Option<(Millis, Lease<L>)> {
    match lease.settle(outcome.clone()).await {
        Ok(kept) => {
            let (recorder, stage) = journey;
            recorder.record_all(stages::settled(stage, &outcome));
            telemetry::EventSettled {
                delivery: d,
                outcome: &outcome,
            }
            .emit();
            match (&outcome, kept) {
                (Outcome::Retry { not_before, .. }, Some(lease)) => Some((*not_before, lease)),
                _ => None,
            }
        }
        // Settled elsewhere meanwhile (nothing to count twice): done with it.
        Err(e) if matches!(e.error, closeflow_queue::QueueError::NotFound(_)) => None,
        Err(e) => {
            telemetry::QueueFailed {
                what: "settle",
                error: &e.error,
            }
            .emit();
            // Not recorded: the event stays queued; attempt it again shortly (planning
            // converges, so a repeat writes nothing that was already written).
            e.lease.map(|lease| (now_ms() + 1_000, lease))
        }
    }
}
