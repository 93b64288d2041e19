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
use closeflow_close_api::lookahead::Pace;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long an event whose read-ahead failed runs as opaque (alone, in order) before it is
/// looked up ahead again.
const FAILED_FOR: Duration = Duration::from_secs(5);

/// What a read-ahead found, per event (by queue id).
pub(super) struct Read {
    pub(super) results: Vec<(i64, Result<(), CloseError>)>,
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
    /// search of `chunk` keys. Due when none is under way and either they fill it or one of
    /// them is next in line for a worker.
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
        let (mut want, mut n) = (Vec::new(), std::collections::HashSet::new());
        for &i in upcoming.iter().take(self.pace.lead(2 * workers)) {
            if n.len() >= chunk {
                break;
            }
            let need = keys(i);
            if unknown(i) || !need.is_empty() {
                want.push(i);
                n.extend(need);
            }
        }
        let urgent = upcoming.iter().take(workers).any(|i| want.contains(i));
        if urgent || n.len() >= chunk {
            want
        } else {
            Vec::new()
        }
    }

    pub(super) fn start(&mut self, lookups: LiveSource, events: Vec<(i64, Vec<Payload>)>) {
        self.reading = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let payloads: Vec<Vec<Payload>> = events.iter().map(|(_, p)| p.clone()).collect();
            let found = lookups.read_ahead(&payloads).await;
            let results = events.into_iter().map(|(id, _)| id).zip(found).collect();
            let _ = tx.send(Read { results });
        });
    }
}
