//! Intake's refusals for a queue that cannot take more: a nearly full disk, or an instance
//! holding its whole share of `--max-queue` / `--max-queue-mib`. Checked before a body is read
//! where the write key is known, so a refused client costs nothing.

use crate::app::App;
use crate::error::Refusal;
use closeflow_queue::Queue;
use std::sync::atomic::Ordering;

/// 503 with `Retry-After` while the disk is nearly full: nothing could be made durable.
pub fn disk_pressure<Q: Queue>(app: &App<Q>) -> Result<(), Refusal> {
    if app.disk_full.load(Ordering::Relaxed) {
        return Err(Refusal::unavailable(
            "disk_full",
            "the queue's disk is nearly full; retry later",
        ));
    }
    Ok(())
}

/// 503 with `Retry-After` when one of `instances` holds its full share of the queue. The
/// shares are equal, so one instance whose Close is down fills only its own.
pub fn back_pressure<Q: Queue>(app: &App<Q>, instances: &[String]) -> Result<(), Refusal> {
    let n = app.registry.intake_count().max(1) as u64;
    let events = app.max_queue / n;
    let bytes = app.max_queue_bytes.map(|b| b / n);
    for inst in instances {
        let load = app.queue.load(inst);
        if load.queued >= events {
            return Err(Refusal::unavailable(
                "queue_full",
                format!(
                    "{} events of instance {inst} are waiting for delivery (its share of the queue is {events}); retry later",
                    load.queued
                ),
            ));
        }
        if let Some(limit) = bytes
            && load.bytes >= limit
        {
            return Err(Refusal::unavailable(
                "queue_full",
                format!(
                    "instance {inst} fills {} MiB of the queue (its share is {} MiB); retry later",
                    load.bytes >> 20,
                    limit.div_ceil(1 << 20)
                ),
            ));
        }
    }
    Ok(())
}
