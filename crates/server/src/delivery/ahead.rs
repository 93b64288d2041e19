//! The scheduler's read-ahead: the lookups of the events next in line go out in shared
//! searches before those events start, so that most events start with their lookups answered
//! (no search of their own) and the scheduler knows whom each is about (`order::Who`).
//!
//! Timed to the pace of delivery, and filled: it looks among the next second and a half of
//! events only (at the rate events have been finishing; at least two per worker), because an
//! answer of "no match" is trusted for two seconds only — looked up earlier, it would expire
//! before its event starts and the event would search again. And it goes out when it fills a
//! search (the search chunk's keys), or when delivery would otherwise wait for it: the search
//! budget (16 requests per 8 s) is the scarcest, so a search should carry all it can.

use closeflow_close::payload::Payload;
use closeflow_close_api::client::CloseError;
use closeflow_close_api::live::LiveSource;
use closeflow_close_api::lookahead::{Pace, gather};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long an event whose read-ahead failed runs as opaque (alone, in order) before it is
/// looked up ahead again.
const FAILED_FOR: Duration = Duration::from_secs(5);

/// What a read-ahead found, per event (by queue id).
pub(super) struct Read {
    pub(super) results: Vec<(i64, Result<(), CloseError>)>,
    /// The Close calls the read-ahead made, for the journeys of the events it read for.
    pub(super) calls: Vec<closeflow_close_api::calls::Call>,
}

/// Whether an event is not to be looked up ahead, for now or for good.
#[derive(Debug, Default, Clone, Copy)]
pub(super) enum Opaque {
    #[default]
    No,
    /// Its read-ahead failed (Close unavailable, the key refused): it runs alone, in order, and
    /// meets the error itself (retried, or dead-lettered) until then.
    Until(Instant),
    /// Close refused the search of its keys: looking them up ahead again would fail again.
    Always,
}

impl Opaque {
    pub(super) fn after(r: &Result<(), CloseError>) -> Opaque {
        match r {
            Ok(()) => Opaque::No,
            Err(CloseError::Rejected { .. }) => Opaque::Always,
            Err(_) => Opaque::Until(Instant::now() + FAILED_FOR),
        }
    }

    pub(super) fn now(self, now: Instant) -> bool {
        match self {
            Opaque::No => false,
            Opaque::Until(t) => now < t,
            Opaque::Always => true,
        }
    }
}

pub(super) struct ReadAhead {
    /// A read-ahead is under way (one at a time: each waits its turn in the search budget
    /// anyway, and the next one then covers what arrived meanwhile).
    pub(super) reading: bool,
    tx: mpsc::UnboundedSender<Read>,
    pub(super) results: mpsc::UnboundedReceiver<Read>,
    /// How fast events have been finishing.
    pace: Pace,
}

impl ReadAhead {
    pub(super) fn new() -> ReadAhead {
        let (tx, results) = mpsc::unbounded_channel();
        ReadAhead {
            reading: false,
            tx,
            results,
            pace: Pace::default(),
        }
    }

    pub(super) fn finished(&mut self) {
        self.pace.tick();
    }

    /// The events (indexes into the decision's slots) to look up now, if a read-ahead is due:
    /// among the first `lead` of `upcoming`, those unknown or not answered from the cache, in
    /// order, until their keys still to look up (`keys(i)`, counted once across them) fill a
    /// search of `chunk` keys. Due when none is under way and, as [`gather`] decides, either
    /// they fill it or one of them is next in line for a worker.
    pub(super) fn due<K: std::hash::Hash + Eq>(
        &self,
        upcoming: &[usize],
        unknown: impl Fn(usize) -> bool,
        keys: impl Fn(usize) -> Vec<K>,
        workers: usize,
        chunk: usize,
    ) -> Vec<usize> {
        if self.reading {
            return Vec::new();
        }
        gather(
            upcoming.len(),
            self.pace.lead(2 * workers),
            workers,
            chunk,
            |pos| {
                let i = upcoming[pos];
                let need = keys(i);
                (unknown(i) || !need.is_empty()).then_some(need)
            },
        )
        .into_iter()
        .map(|pos| upcoming[pos])
        .collect()
    }

    pub(super) fn start(&mut self, lookups: LiveSource, events: Vec<(i64, Vec<Payload>)>) {
        self.reading = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let payloads: Vec<Vec<Payload>> = events.iter().map(|(_, p)| p.clone()).collect();
            let (found, mut calls) =
                closeflow_close_api::calls::recorded(lookups.read_ahead(&payloads)).await;
            for c in &mut calls {
                c.shared_by = Some(events.len());
            }
            let results = events.into_iter().map(|(id, _)| id).zip(found).collect();
            let _ = tx.send(Read { results, calls });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::ReadAhead;

    /// Event `i`'s keys: three of its own (company, user, email of a new person).
    fn own(i: usize) -> Vec<String> {
        (0..3).map(|k| format!("{i}:{k}")).collect()
    }

    #[test]
    fn a_read_ahead_the_next_worker_needs_is_filled_past_the_lead_but_never_past_a_search() {
        let ahead = ReadAhead::new();
        let upcoming: Vec<usize> = (0..100).collect();
        // Two workers, no pace yet: the lead is 4 events; 16 events' keys (48) fill a search
        // of 50, the 17th would pass it.
        let due = ahead.due(&upcoming, |_| true, own, 2, 50);
        assert_eq!(due, (0..16).collect::<Vec<_>>());
        // Keys shared between events are counted once.
        let shared = |i: usize| vec![format!("company:{}", i % 2), format!("user:{i}")];
        let due = ahead.due(&upcoming, |_| true, shared, 2, 50);
        assert_eq!(due.len(), 48, "2 company keys + 48 user keys");
    }

    #[test]
    fn a_read_ahead_nobody_waits_for_goes_out_only_when_the_lead_fills_a_search() {
        let ahead = ReadAhead::new();
        let upcoming: Vec<usize> = (0..100).collect();
        // The next two (one per worker) are answered already; two more within the lead are not:
        // too few keys to fill a search, and nobody waits for them yet.
        let later = |i: usize| if i < 2 { Vec::new() } else { own(i) };
        assert!(ahead.due(&upcoming, |i| i >= 2, later, 2, 50).is_empty());
        // With a search of 6 keys, the lead's two events fill it: it goes out.
        assert_eq!(ahead.due(&upcoming, |i| i >= 2, later, 2, 6), vec![2, 3]);
        // One under way: nothing more until it is done.
        let mut busy = ReadAhead::new();
        busy.reading = true;
        assert!(busy.due(&upcoming, |_| true, own, 2, 50).is_empty());
    }

    #[test]
    fn an_event_with_more_keys_than_a_search_still_goes_alone() {
        let ahead = ReadAhead::new();
        let many = |i: usize| (0..60).map(|k| format!("{i}:{k}")).collect::<Vec<_>>();
        assert_eq!(ahead.due(&[7, 8], |_| true, many, 1, 50), vec![7]);
    }
}
