//! `send`'s read-ahead: the lookups of the next events go out in shared searches while the
//! events before them are applied, one by one and in order, from the cache those searches
//! filled (and that every write refreshes): most events cost their writes only, and the search
//! budget is spent beside the write budget, not in front of it. The CLI only takes events from
//! [`LookAhead::next`] and sends them.
//!
//! Timed to the pace of the run: a lookup goes out only for the events due in the next second
//! and a half (at the rate events have been handed out), because an answer of "no match" is
//! trusted for two seconds only — looked up earlier, it would expire before its event is sent,
//! and the event would search again on its own. And a search goes out when it is full (the
//! search chunk's keys) or when the run would otherwise wait for it: the search budget is the
//! scarcest, so a search should carry all it can.

use crate::live::LiveSource;
use closeflow_close::payload::Payload;
use closeflow_close::run;
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How far ahead of the run lookups go out.
const LEAD: Duration = Duration::from_millis(1_500);
/// Over how long the pace of the run is measured.
const RATE_SPAN: Duration = Duration::from_secs(3);
/// Events always looked up ahead, whatever the pace (the next ones, and a start).
const LEAST: usize = 4;

/// The pace of a run: how many events went by lately, and so how many of the next ones fall
/// within [`LEAD`] of now. `send`'s look-ahead and the server's read-ahead time themselves by it.
#[derive(Debug, Default)]
pub struct Pace {
    /// When the last events went by (within [`RATE_SPAN`]).
    times: VecDeque<Instant>,
}

impl Pace {
    /// One event went by now.
    pub fn tick(&mut self) {
        let now = Instant::now();
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_SPAN)
        {
            self.times.pop_front();
        }
    }

    /// The events due within [`LEAD`] at the recent pace, at least `least`.
    pub fn lead(&self, least: usize) -> usize {
        let rate = self.times.len() as f64 / RATE_SPAN.as_secs_f64();
        ((rate * LEAD.as_secs_f64()).ceil() as usize).max(least)
    }
}

/// An event read, not yet handed out.
struct Ahead {
    index: usize,
    entry: Entry,
    payloads: Vec<Payload>,
    /// Its lookups went out (or it needs none).
    sent: bool,
}

/// A stream of events with the lookups of the upcoming ones sent ahead (up to `depth` events
/// read).
pub struct LookAhead<'a, I> {
    inst: &'a Instance,
    source: LiveSource,
    entries: std::iter::Enumerate<I>,
    depth: usize,
    ahead: VecDeque<Ahead>,
    exhausted: bool,
    /// The read-ahead under way, and the last stream index it covers: an event it covers is
    /// handed out only once it is done (else the event would search for itself meanwhile).
    under_way: Option<(tokio::task::JoinHandle<()>, usize)>,
    /// How fast events are handed out.
    pace: Pace,
    /// Events the caller will not send (`--resume`): read, handed out, not looked up.
    skip: Box<dyn Fn(&Entry) -> bool + 'a>,
}

impl<'a, I, E> LookAhead<'a, I>
where
    I: Iterator<Item = Result<Entry, E>>,
{
    /// Reads ahead only into a cache (not with the naive baseline or a TTL of 0): nothing else
    /// keeps what a read-ahead finds, so without one `depth` is 0.
    pub fn new(
        inst: &'a Instance,
        source: &LiveSource,
        entries: I,
        depth: usize,
        skip: impl Fn(&Entry) -> bool + 'a,
    ) -> LookAhead<'a, I> {
        LookAhead {
            inst,
            source: source.clone(),
            entries: entries.enumerate(),
            depth: if source.caching() { depth } else { 0 },
            ahead: VecDeque::new(),
            exhausted: false,
            under_way: None,
            pace: Pace::default(),
            skip: Box::new(skip),
        }
    }

    /// The next event (with its index in the stream), its lookups answered when a read-ahead
    /// could answer them. A bad entry in the stream is returned as read.
    pub async fn next(&mut self) -> Result<Option<(usize, Entry)>, E> {
        self.read()?;
        if self.depth > 0 {
            self.look_ahead();
            let front = self.ahead.front().map(|a| a.index);
            if let (Some(i), Some((_, last))) = (front, &self.under_way)
                && i <= *last
                && let Some((task, _)) = self.under_way.take()
            {
                let _ = task.await;
            }
        }
        let Some(a) = self.ahead.pop_front() else {
            return Ok(None);
        };
        self.pace.tick();
        Ok(Some((a.index, a.entry)))
    }

    /// Reads the stream until `depth` events (at least one) wait.
    fn read(&mut self) -> Result<(), E> {
        while !self.exhausted && self.ahead.len() < self.depth.max(1) {
            match self.entries.next() {
                None => self.exhausted = true,
                Some((i, e)) => {
                    let e = e?;
                    let looks = self.depth > 0 && !(self.skip)(&e);
                    let payloads = if looks {
                        run::prepare(self.inst, i, &e)
                            .1
                            .into_iter()
                            .map(|(_, p)| p)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    self.ahead.push_back(Ahead {
                        index: i,
                        entry: e,
                        payloads,
                        sent: !looks,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends the lookups of the next events not looked up yet, when they fill a search or the
    /// next event needs them; one read-ahead at a time.
    fn look_ahead(&mut self) {
        if self
            .under_way
            .as_ref()
            .is_some_and(|(t, _)| !t.is_finished())
        {
            return;
        }
        self.under_way = None;
        let chunk = self.source.search_chunk();
        let (mut picks, mut keys, mut urgent) = (Vec::new(), HashSet::new(), false);
        for (n, a) in self.ahead.iter().take(self.pace.lead(LEAST)).enumerate() {
            if keys.len() >= chunk {
                break;
            }
            if a.sent {
                continue;
            }
            let need = self.source.to_look_up(&a.payloads);
            if need.is_empty() {
                continue;
            }
            keys.extend(need);
            picks.push(n);
            urgent |= n < LEAST;
        }
        if picks.is_empty() || !(urgent || keys.len() >= chunk) {
            return;
        }
        let mut batch = Vec::new();
        let mut last = 0;
        for n in picks {
            let a = &mut self.ahead[n];
            a.sent = true;
            batch.extend(a.payloads.iter().cloned());
            last = a.index;
        }
        let source = self.source.clone();
        let task = tokio::spawn(async move { source.prefetch(&batch).await });
        self.under_way = Some((task, last));
    }
}
