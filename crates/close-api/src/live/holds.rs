//! The records held by events in flight, so that no two events write one record at once: an
//! event holds every record its lookups returned, all or nothing, and is sent back to look up
//! again when another event wrote one of them since its lookup (an epoch per release).

use closeflow_close::port::RecordHold;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Records held by events in flight, and when each was last released.
#[derive(Default)]
struct Held {
    now: HashSet<String>,
    released_at: HashMap<String, u64>,
    epoch: u64,
    /// Releases older than this were forgotten (the map is bounded): treat them as recent.
    floor: u64,
}

/// The holds of one instance's live runs.
#[derive(Default)]
pub(super) struct RecordHolds {
    held: Mutex<Held>,
    released: tokio::sync::Notify,
}

impl RecordHolds {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves whenever an event that wrote releases its records.
    pub fn epoch(&self) -> u64 {
        self.held().epoch
    }

    /// Waits until no other event holds any of `ids`, then holds them all (see
    /// [`closeflow_close::port::ReadPort::hold`]); stale when one was written after `since`.
    pub async fn hold(self: &Arc<Self>, ids: Vec<String>, since: u64) -> RecordHold {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut h = self.held();
                if !ids.iter().any(|id| h.now.contains(id)) {
                    let stale = since < h.floor
                        || ids
                            .iter()
                            .any(|id| h.released_at.get(id).is_some_and(|e| *e > since));
                    if stale {
                        // Not taken: the caller looks up again and asks anew.
                        return RecordHold::stale();
                    }
                    h.now.extend(ids.iter().cloned());
                    let me = self.clone();
                    return RecordHold::new(Box::new(move |written: &[String]| {
                        me.release(&ids, written)
                    }));
                }
            }
            notified.await;
        }
    }

    /// Lets go of `ids`; those in `written` were changed in Close, so an event that read them
    /// before now must look again (one that wrote nothing sends nobody back to search).
    fn release(&self, ids: &[String], written: &[String]) {
        {
            let mut h = self.held();
            for id in ids {
                h.now.remove(id);
            }
            if !written.is_empty() {
                h.epoch += 1;
                let e = h.epoch;
                for id in written {
                    h.released_at.insert(id.clone(), e);
                }
            }
            if h.released_at.len() > 100_000 {
                h.released_at.clear();
                h.floor = h.epoch;
            }
        }
        self.released.notify_waiters();
    }
}
