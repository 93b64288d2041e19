//! One attempt at one event: hold its keys against other processes, plan and write it through
//! the action core, classify the result and settle it in the queue. Kept apart from the
//! scheduler, which decides only *when* an attempt may start.

use super::outcome::{self, RetryPolicy};
use crate::queue::{Delivery, Millis, Queue, QueueError, Settle, now_ms};
use crate::registry::Active;
use crate::telemetry::{self, InternalEvent};
use closeflow_mapping::events::Entry;
use serde_json::Value;

/// A failpoint for tests of what a panic in a delivery leaves behind (no event or reply is known
/// to cause one): the delivery of the event whose `messageId` is `CLOSEFLOW_FAILPOINT_PANIC`
/// panics where the instance's Close client and key are in use.
fn failpoint_panic(d: &Delivery) {
    if std::env::var_os("CLOSEFLOW_FAILPOINT_PANIC").is_some_and(|id| id == d.message_id.as_str()) {
        panic!("failpoint CLOSEFLOW_FAILPOINT_PANIC: the delivery of {d:?} panicked");
    }
}

/// One attempt at one event, settled in the queue. Returns when to try again, if ever.
pub(super) async fn deliver<Q: Queue>(
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
            let (report, err) = closeflow_close::run::send_via(
                &active.instance,
                &active.writer,
                &active.lookups,
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
        Err(QueueError::NotFound(_)) => None,
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
