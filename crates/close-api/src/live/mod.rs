//! The live run's lookups: coalesced across concurrent events and cached per key, because
//! search is Close's scarcest budget (16 requests per 8 s per key).
//!
//! - **Coalescing**: events looking up at the same time (the server's workers, `send`'s
//!   look-ahead) wait a short window; their keys go out as one search (`Searcher::find_many`) and
//!   the results are routed back, each event getting exactly what its own keys match.
//! - **Cache**: key → the ids of the records it matched, and the records by id. A write's reply
//!   refreshes the records it returns and adds them to the cached keys they now match (so a
//!   contact that gains an email is found by that email at once); an error forgets the event's
//!   keys; entries expire after a TTL (a key that matched nothing after a short one). An event
//!   whose keys are all cached and fresh is planned with no call at all.
//!
//! What a stale entry can cause: an edit made in Close's UI (or by another tool) within the TTL
//! is not seen, so an email or phone list may be written back without a value added there in the
//! meantime (once), or a field changed there is left as it is. Our own writes never go stale:
//! every reply refreshes the cache, and a search never overrides a copy refreshed after it began.
//! A key that matched nothing is trusted for 2 seconds at most: a person created elsewhere within
//! them can be created a second time — the same race as without a cache, between a lookup and a
//! create, only seconds wide instead of milliseconds.

mod ahead;
mod cache;
mod coalesce;
mod holds;
mod options;

pub use ahead::EventPayloads;
pub use options::LiveOptions;

use crate::client::CloseError;
use crate::search::{EventLookup, Searcher};
use cache::{Cache, cache_key};
use closeflow_close::lookup::{LookupRequest, LookupResults};
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close::port::{PortError, ReadPort, RecordHold};
use coalesce::Waiting;
use holds::RecordHolds;
use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Counters the benchmark and the tests read.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    /// Coalesced searches sent, and the events they served.
    pub batches: std::sync::atomic::AtomicU64,
    pub batched_events: std::sync::atomic::AtomicU64,
}

/// What every clone of a [`LiveSource`] shares.
struct Shared {
    searcher: Searcher,
    keys: KeyConfig,
    opts: LiveOptions,
    cache: Mutex<Cache>,
    queue: OnceLock<mpsc::UnboundedSender<Waiting>>,
    stats: LiveStats,
    holds: Arc<RecordHolds>,
}

/// Lookups for live runs of one instance (one Close key): see the module doc.
#[derive(Clone)]
pub struct LiveSource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveSource")
    }
}

fn stopped() -> CloseError {
    CloseError::BadReply {
        path: "data/search/".into(),
        message: "the lookup coalescer stopped".into(),
    }
}

impl LiveSource {
    pub fn new(searcher: Searcher, keys: KeyConfig, opts: LiveOptions) -> LiveSource {
        LiveSource {
            shared: Arc::new(Shared {
                searcher,
                keys,
                opts,
                cache: Mutex::new(Cache::default()),
                queue: OnceLock::new(),
                stats: LiveStats::default(),
                holds: Arc::new(RecordHolds::default()),
            }),
        }
    }

    pub fn stats(&self) -> &LiveStats {
        &self.shared.stats
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lookup keys one search carries at most: what a read-ahead gathers before it goes out.
    pub fn search_chunk(&self) -> usize {
        self.shared.searcher.chunk()
    }

    /// Whether lookups are cached (a TTL above zero): without a cache, [`LiveSource::prefetch`]
    /// has nowhere to keep what it would read, and does nothing.
    pub fn caching(&self) -> bool {
        !self.shared.opts.ttl.is_zero()
    }

    fn cached(&self, want: &EventLookup) -> Option<LookupResults> {
        if !self.caching() {
            return None;
        }
        self.cache().hit(want, Instant::now(), &self.shared.opts)
    }

    /// Stores what a search that started at `asked` found.
    fn remember(&self, wants: &[EventLookup], found: &[LookupResults], asked: Instant) {
        if !self.caching() {
            return;
        }
        // What the search asked for: every want's custom fields (`Searcher::find_many`).
        let read = (
            wants.iter().flat_map(|w| w.lead_custom.clone()).collect(),
            wants
                .iter()
                .flat_map(|w| w.contact_custom.clone())
                .collect(),
        );
        let mut c = self.cache();
        for (w, f) in wants.iter().zip(found) {
            c.store(w, f, asked, &read, &self.shared.keys);
        }
        if c.fresh.len() > self.shared.opts.max_keys {
            c.sweep(Instant::now(), &self.shared.opts);
        }
    }

    /// Looks up the keys of upcoming events not cached yet, in as few searches as the chunk
    /// size allows (`send`'s look-ahead). Errors are left for the events themselves to meet.
    pub async fn prefetch(&self, payloads: &[Payload]) {
        if !self.caching() {
            return;
        }
        let mut wants: Vec<EventLookup> = Vec::new();
        for w in self.wants(payloads) {
            if !wants.contains(&w) {
                wants.push(w);
            }
        }
        for chunk in wants.chunks(self.shared.opts.coalesce_max.max(1)) {
            let asked = Instant::now();
            if let Ok(found) = self.shared.searcher.find_many(chunk).await {
                self.bump_batches(chunk.len());
                self.remember(chunk, &found, asked);
            }
        }
    }
}

impl ReadPort for LiveSource {
    fn epoch(&self) -> u64 {
        self.shared.holds.epoch()
    }

    async fn hold(&self, ids: Vec<String>, since: u64) -> RecordHold {
        self.shared.holds.hold(ids, since).await
    }

    async fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<LookupResults, PortError> {
        use std::sync::atomic::Ordering::Relaxed;
        let want = EventLookup::of(cfg, p, reqs);
        let recheck = self.shared.opts.shared_writers && self.cache().company_unmatched(&want);
        if let Some(f) = self.cached(&want).filter(|_| !recheck) {
            self.shared.stats.hits.fetch_add(1, Relaxed);
            return Ok(f);
        }
        self.shared.stats.misses.fetch_add(1, Relaxed);
        if self.shared.opts.coalesce_window.is_zero() {
            let asked = Instant::now();
            let found = self
                .shared
                .searcher
                .find_many(std::slice::from_ref(&want))
                .await
                .map_err(PortError::from)?;
            self.remember(std::slice::from_ref(&want), &found, asked);
            return Ok(found.into_iter().next().unwrap_or_default());
        }
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send(Waiting { want, reply })
            .map_err(|_| stopped())?;
        Ok(answer.await.map_err(|_| stopped())??)
    }

    fn written(&self, reply: &Value) {
        if self.caching() {
            self.cache().refresh(reply, &self.shared.keys);
        }
    }

    fn forget(&self, reqs: &[LookupRequest], found: &[String]) {
        if self.caching() {
            let mut c = self.cache();
            for r in reqs {
                c.fresh.remove(&cache_key(r));
            }
            // A write that failed may still have happened: what the event found is unknown now,
            // under whichever key it is cached.
            for id in found {
                c.evict(id);
            }
        }
    }
}
