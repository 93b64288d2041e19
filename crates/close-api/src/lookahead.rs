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

/// Whether an event's keys still to look up (`need`) join a search that already holds `keys`
/// without passing `chunk`: one key over would cost a second search, of that key alone. The
/// first event always fits (a search of more keys than a chunk is split anyway).
pub fn fits<K: std::hash::Hash + Eq>(keys: &HashSet<K>, need: &[K], chunk: usize) -> bool {
    keys.is_empty() || keys.len() + need.iter().filter(|k| !keys.contains(k)).count() <= chunk
}

/// The one filling rule of `send`'s look-ahead and the server's read-ahead: which of the
/// upcoming events (by position, `0` next) go into a read-ahead now, if one is due. `need(pos)`
/// is `None` for an event not to look up, else its keys still to look up. Within the first
/// `lead` events, in order, until their keys fill a search of `chunk` (never one key over: it
/// would cost a search of its own). Due when they fill it, or when one of the first `urgent`
/// needs it — and then filled from past the lead too: the search budget is the scarcest, and a
/// run waiting on it measures a slow pace, so searches sized to that pace would keep it slow.
/// Every event looked up adds a key, so no more than `chunk` events past the lead are read.
pub fn gather<K: std::hash::Hash + Eq>(
    upcoming: usize,
    lead: usize,
    urgent: usize,
    chunk: usize,
    mut need: impl FnMut(usize) -> Option<Vec<K>>,
) -> Vec<usize> {
    let (mut picks, mut keys) = (Vec::new(), HashSet::new());
    let (mut full, mut is_urgent) = (false, false);
    for pos in 0..upcoming.min(lead.max(chunk)) {
        if pos >= lead && !is_urgent {
            break;
        }
        let Some(k) = need(pos) else { continue };
        if !fits(&keys, &k, chunk) {
            full = true;
            break;
        }
        keys.extend(k);
        picks.push(pos);
        is_urgent |= pos < urgent;
    }
    if is_urgent || full || keys.len() >= chunk {
        picks
    } else {
        Vec::new()
    }
}

/// An event read, not yet handed out.
struct Ahead {
    index: usize,
    entry: Entry,
    payloads: Vec<Payload>,
    /// How many read-aheads covered it (a first one, or none needed: 1).
    looks: u8,
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
    /// The read-ahead under way, and the stream indexes it covers: an event it covers is handed
    /// out only once it is done (else the event would search for itself meanwhile); one it does
    /// not cover goes on meanwhile (a read-ahead waiting on the search budget must not hold up
    /// events already looked up).
    under_way: Option<(tokio::task::JoinHandle<()>, HashSet<usize>)>,
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
        while self.depth > 0 {
            self.look_ahead();
            // The front waits for the read-ahead under way when that covers it, or when it was
            // never looked up (the read-ahead was busy, with later events, as it came up): the
            // next one then takes it along, rather than it searching alone. Bounded: after one
            // wait the front is covered, after two it is looked up.
            let (Some(front), Some((_, covers))) = (self.ahead.front(), &self.under_way) else {
                break;
            };
            let wait = covers.contains(&front.index)
                || front.looks == 0 && !self.source.to_look_up(&front.payloads).is_empty();
            if !wait {
                break;
            }
            if let Some((task, _)) = self.under_way.take() {
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
                    let wanted = self.depth > 0 && !(self.skip)(&e);
                    let payloads = if wanted {
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
                        looks: u8::from(!wanted),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends the lookups of the next events not looked up yet, as [`gather`] picks them; one
    /// read-ahead at a time.
    fn look_ahead(&mut self) {
        if self
            .under_way
            .as_ref()
            .is_some_and(|(t, _)| !t.is_finished())
        {
            return;
        }
        self.under_way = None;
        let (ahead, source) = (&self.ahead, &self.source);
        let picks = gather(
            ahead.len(),
            self.pace.lead(LEAST),
            LEAST,
            source.search_chunk(),
            |n| {
                let a = &ahead[n];
                // Looked up once already, and its answer expired before its turn came (the
                // run waited on the budget): it goes into the next shared search rather than
                // searching alone when sent. Once only, so that a key Close refuses is not
                // searched for ever.
                let again = a.looks == 1 && n < LEAST;
                if a.looks > 0 && !again {
                    return None;
                }
                Some(source.to_look_up(&a.payloads)).filter(|k| !k.is_empty())
            },
        );
        if picks.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut covers = HashSet::new();
        for n in picks {
            let a = &mut self.ahead[n];
            a.looks += 1;
            batch.extend(a.payloads.iter().cloned());
            covers.insert(a.index);
        }
        let source = self.source.clone();
        let task = tokio::spawn(async move { source.prefetch(&batch).await });
        self.under_way = Some((task, covers));
    }
}
