//! `send`'s read-ahead: the lookups of the next events go out as one search (or a few) while
//! the events before them are applied, one by one and in order, from the cache those searches
//! filled (and that every write refreshes): most events cost their writes only, and the search
//! budget is spent beside the write budget, not in front of it. The CLI only takes events from
//! [`LookAhead::next`] and sends them.

use crate::live::LiveSource;
use closeflow_close::payload::Payload;
use closeflow_close::run;
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use std::collections::VecDeque;

/// A stream of events with the lookups of up to `depth` upcoming ones sent ahead.
pub struct LookAhead<'a, I> {
    inst: &'a Instance,
    source: LiveSource,
    entries: std::iter::Enumerate<I>,
    depth: usize,
    /// Events already read (and their lookups sent), not yet handed out.
    ahead: VecDeque<(usize, Entry)>,
    exhausted: bool,
    first: bool,
    /// Events the caller will not send (`--resume`): read, handed out, not looked up.
    skip: Box<dyn Fn(&Entry) -> bool + 'a>,
}

impl<'a, I, E> LookAhead<'a, I>
where
    I: Iterator<Item = Result<Entry, E>>,
{
    /// Reads ahead only into a cache (not with the naive baseline or a TTL of 0): nothing else
    /// keeps what a prefetch finds, so without one `depth` is 0.
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
            first: true,
            skip: Box::new(skip),
        }
    }

    /// The next event (with its index in the stream), after sending the lookups of the events
    /// behind it when the read-ahead runs low. The first batch is waited for (the first event
    /// needs it); later ones run in the background (on the current tokio runtime) while the
    /// caller applies the events before them. A bad entry in the stream is returned as read.
    pub async fn next(&mut self) -> Result<Option<(usize, Entry)>, E> {
        if !self.exhausted && self.ahead.len() <= self.depth {
            let mut batch: Vec<Payload> = Vec::new();
            let mut read = 0;
            for (i, e) in self.entries.by_ref().take(self.depth.max(1)) {
                let e = e?;
                read += 1;
                if self.depth > 0 && !(self.skip)(&e) {
                    batch.extend(run::prepare(self.inst, i, &e).1.into_iter().map(|(_, p)| p));
                }
                self.ahead.push_back((i, e));
            }
            self.exhausted = read < self.depth.max(1);
            if !batch.is_empty() {
                if self.first {
                    self.source.prefetch(&batch).await;
                } else {
                    let source = self.source.clone();
                    tokio::spawn(async move { source.prefetch(&batch).await });
                }
            }
            self.first = false;
        }
        Ok(self.ahead.pop_front())
    }
}
