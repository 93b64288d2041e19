//! The live run's lookups: coalesced across concurrent events and cached per key, because
//! search is Close's scarcest budget (16 requests per 8 s per key).
//!
//! - **Coalescing**: events looking up at the same time (the server's workers, `send`'s
//!   look-ahead) wait a short window; their keys go out as one search (`Reader::find_many`) and
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

use crate::client::{CloseError, Reader};
use crate::exec::Source;
use crate::lookup::{Found, LookupRequest};
use crate::model::{Contact, KeyConfig, Lead, norm_email};
use crate::payload::Payload;
use crate::search::Want;
use crate::stored::FieldTypes;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// How long lookups wait for others to share their search (0: no coalescing).
    pub coalesce_window: Duration,
    /// Events whose keys go into one search at most.
    pub coalesce_max: usize,
    /// How long a key's result stays fresh (0: no cache).
    pub ttl: Duration,
    /// How long a key that matched nothing stays fresh (at most `ttl`).
    pub empty_ttl: Duration,
    /// Cached keys at most; past it, expired entries and unreferenced records are swept.
    pub max_keys: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            coalesce_window: Duration::from_millis(5),
            coalesce_max: 50,
            ttl: Duration::from_secs(300),
            empty_ttl: Duration::from_secs(2),
            max_keys: 200_000,
        }
    }
}

impl LiveOptions {
    /// The naive baseline: no coalescing, no cache.
    pub fn off() -> LiveOptions {
        LiveOptions {
            coalesce_window: Duration::ZERO,
            coalesce_max: 1,
            ttl: Duration::ZERO,
            empty_ttl: Duration::ZERO,
            max_keys: 0,
        }
    }
}

/// A cache key: the request with its email normalised as the planner compares it.
fn cache_key(r: &LookupRequest) -> LookupRequest {
    match r {
        LookupRequest::ContactsByEmail { email } => LookupRequest::ContactsByEmail {
            email: norm_email(email),
        },
        other => other.clone(),
    }
}

/// A key whose lookup is known, and since when.
struct Fresh {
    at: Instant,
}

/// A cached record: when it was last read or written, and the custom fields it was read with
/// (`None`: all of them — a write's reply carries the whole record). A want needing a field the
/// record was not read with is a miss: an absent field would look empty to the planner.
struct Cached<T> {
    rec: T,
    seen: Instant,
    fields: Option<BTreeSet<String>>,
}

impl<T> Cached<T> {
    fn has(&self, need: &BTreeSet<String>) -> bool {
        self.fields.as_ref().is_none_or(|f| need.is_subset(f))
    }
}

/// Cached records, the keys each one matches (derived from the records themselves, so a write's
/// reply moves a record to the keys it matches now), and which keys' lookups are known.
#[derive(Default)]
struct Cache {
    leads: HashMap<String, Cached<Lead>>,
    contacts: HashMap<String, Cached<Contact>>,
    members: HashMap<LookupRequest, BTreeSet<String>>,
    /// The keys each cached record is a member of (to move it when it changes).
    member_of: HashMap<String, Vec<LookupRequest>>,
    fresh: HashMap<LookupRequest, Fresh>,
    types: Option<FieldTypes>,
}

/// Counters the benchmark and the tests read.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    /// Coalesced searches sent, and the events they served.
    pub batches: std::sync::atomic::AtomicU64,
    pub batched_events: std::sync::atomic::AtomicU64,
}

struct Waiting {
    want: Want,
    reply: oneshot::Sender<Result<Found, CloseError>>,
}

struct Inner {
    reader: Reader,
    keys: KeyConfig,
    opts: LiveOptions,
    cache: Mutex<Cache>,
    queue: OnceLock<mpsc::UnboundedSender<Waiting>>,
    stats: LiveStats,
    held: Mutex<Held>,
    released: tokio::sync::Notify,
}

/// Records held by events in flight, and when each was last released.
#[derive(Default)]
struct Held {
    now: HashSet<String>,
    released_at: HashMap<String, u64>,
    epoch: u64,
    /// Releases older than this were forgotten (the map is bounded): treat them as recent.
    floor: u64,
}

/// Lookups for live runs of one instance (one Close key): see the module doc.
#[derive(Clone)]
pub struct LiveSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveSource")
    }
}

fn lead_keys(l: &Lead, keys: &KeyConfig) -> Vec<LookupRequest> {
    keys.company_field
        .iter()
        .filter_map(|f| {
            Some(LookupRequest::LeadsByCompany {
                field: f.clone(),
                value: l.custom_text(f)?,
            })
        })
        .collect()
}

fn contact_keys(c: &Contact, keys: &KeyConfig) -> Vec<LookupRequest> {
    let mut out: Vec<LookupRequest> = c
        .email_texts()
        .iter()
        .map(|e| LookupRequest::ContactsByEmail {
            email: norm_email(e),
        })
        .collect();
    if let Some(f) = &keys.user_field
        && let Some(v) = c.custom_text(f)
    {
        out.push(LookupRequest::ContactsByUser {
            field: f.clone(),
            value: v,
        });
    }
    out
}

impl Cache {
    fn fresh(&self, k: &LookupRequest, now: Instant, opts: &LiveOptions) -> Option<&Fresh> {
        let f = self.fresh.get(k)?;
        let empty = self.members.get(k).is_none_or(BTreeSet::is_empty);
        let ttl = if empty {
            opts.empty_ttl.min(opts.ttl)
        } else {
            opts.ttl
        };
        (now.duration_since(f.at) < ttl).then_some(f)
    }

    fn place(&mut self, id: &str, now_keys: Vec<LookupRequest>) {
        for k in self.member_of.remove(id).unwrap_or_default() {
            if let Some(m) = self.members.get_mut(&k) {
                m.remove(id);
            }
        }
        for k in &now_keys {
            self.members
                .entry(k.clone())
                .or_default()
                .insert(id.to_string());
        }
        self.member_of.insert(id.to_string(), now_keys);
    }

    fn upsert_lead(&mut self, l: Lead, fields: Option<BTreeSet<String>>, keys: &KeyConfig) {
        self.place(&l.id, lead_keys(&l, keys));
        let seen = Instant::now();
        self.leads.insert(
            l.id.clone(),
            Cached {
                rec: l,
                seen,
                fields,
            },
        );
    }

    fn upsert_contact(&mut self, c: Contact, fields: Option<BTreeSet<String>>, keys: &KeyConfig) {
        self.place(&c.id, contact_keys(&c, keys));
        let seen = Instant::now();
        self.contacts.insert(
            c.id.clone(),
            Cached {
                rec: c,
                seen,
                fields,
            },
        );
    }

    fn seen(&self, id: &str) -> Option<Instant> {
        self.leads
            .get(id)
            .map(|x| x.seen)
            .or_else(|| self.contacts.get(id).map(|x| x.seen))
    }

    /// Forgets a record and every key it was a member of (what else those keys hold is no
    /// longer known to be complete).
    fn evict(&mut self, id: &str) {
        for k in self.member_of.get(id).cloned().unwrap_or_default() {
            self.fresh.remove(&k);
        }
        self.place(id, Vec::new());
        self.member_of.remove(id);
        self.leads.remove(id);
        self.contacts.remove(id);
    }

    /// Everything `want` needs, if every key is known, fresh and read with its fields.
    fn hit(&self, want: &Want, now: Instant, opts: &LiveOptions) -> Option<Found> {
        let mut f = Found {
            types: self.types.clone()?,
            ..Found::default()
        };
        let lead = |id: &str| {
            self.leads
                .get(id)
                .filter(|l| l.has(&want.lead_custom))
                .map(|l| l.rec.clone())
        };
        for r in &want.reqs {
            let k = cache_key(r);
            self.fresh(&k, now, opts)?;
            for id in self.members.get(&k).into_iter().flatten() {
                match r {
                    LookupRequest::LeadsByCompany { .. } => {
                        let l = lead(id)?;
                        if !f.leads_by_company.iter().any(|x| x.id == l.id) {
                            f.leads_by_company.push(l);
                        }
                    }
                    _ => {
                        let c = self
                            .contacts
                            .get(id)
                            .filter(|c| c.has(&want.contact_custom))?;
                        f.add_contact(c.rec.clone());
                    }
                }
            }
        }
        for id in f.missing_lead_ids() {
            f.add_lead(lead(&id)?);
        }
        Some(f)
    }

    /// Records what a search that started at `asked` found for `want`'s keys. A cached member
    /// the search did not return is dropped from that key — unless a write refreshed it after
    /// the search started (the search could not have seen it yet).
    /// `read` is the custom fields the search asked for (lead, contact).
    fn store(
        &mut self,
        want: &Want,
        found: &Found,
        asked: Instant,
        read: &(BTreeSet<String>, BTreeSet<String>),
        keys: &KeyConfig,
    ) {
        let now = Instant::now();
        self.types = Some(found.types.clone());
        let mut returned: BTreeSet<String> = BTreeSet::new();
        // A copy refreshed since the search began (a write's reply, a later search) is newer
        // than what the search saw: it stays.
        let newer = |c: &Cache, id: &str| c.seen(id).is_some_and(|t| t >= asked);
        for l in found.leads_by_company.iter().chain(&found.leads) {
            returned.insert(l.id.clone());
            if !newer(self, &l.id) {
                self.upsert_lead(l.clone(), Some(read.0.clone()), keys);
            }
        }
        for c in &found.contacts {
            returned.insert(c.id.clone());
            if !newer(self, &c.id) {
                self.upsert_contact(c.clone(), Some(read.1.clone()), keys);
            }
        }
        for r in &want.reqs {
            let k = cache_key(r);
            let stale: Vec<String> = self
                .members
                .get(&k)
                .into_iter()
                .flatten()
                .filter(|id| !returned.contains(*id))
                .filter(|id| self.seen(id).is_none_or(|t| t < asked))
                .cloned()
                .collect();
            if let Some(m) = self.members.get_mut(&k) {
                for id in &stale {
                    m.remove(id);
                }
            }
            self.fresh.insert(k, Fresh { at: now });
        }
    }

    /// A record Close returned after a write (a lead with its nested contacts, or a contact).
    fn refresh(&mut self, reply: &Value, keys: &KeyConfig) {
        let is_lead = reply
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with("lead_"));
        if !is_lead {
            if let Some(c) = Contact::from_api(reply) {
                self.upsert_contact(c, None, keys);
            }
            return;
        }
        if let Some(l) = Lead::from_api(reply) {
            self.upsert_lead(l, None, keys);
        }
        for c in reply
            .get("contacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Contact::from_api)
        {
            self.upsert_contact(c, None, keys);
        }
    }

    /// Drops expired keys, then records no fresh key refers to (with their memberships).
    fn sweep(&mut self, now: Instant, opts: &LiveOptions) {
        let expired: Vec<LookupRequest> = self
            .fresh
            .keys()
            .filter(|k| self.fresh(k, now, opts).is_none())
            .cloned()
            .collect();
        for k in expired {
            self.fresh.remove(&k);
        }
        let mut live: BTreeSet<String> = BTreeSet::new();
        for k in self.fresh.keys() {
            live.extend(self.members.get(k).into_iter().flatten().cloned());
        }
        let leads_of: Vec<String> = live
            .iter()
            .filter_map(|id| self.contacts.get(id).map(|c| c.rec.lead_id.clone()))
            .collect();
        live.extend(leads_of);
        let dead: Vec<String> = self
            .member_of
            .keys()
            .filter(|id| !live.contains(*id))
            .cloned()
            .collect();
        for id in dead {
            self.place(&id, Vec::new());
            self.member_of.remove(&id);
            self.leads.remove(&id);
            self.contacts.remove(&id);
        }
        self.members.retain(|_, m| !m.is_empty());
    }
}

impl LiveSource {
    pub fn new(reader: Reader, keys: KeyConfig, opts: LiveOptions) -> LiveSource {
        LiveSource {
            inner: Arc::new(Inner {
                reader,
                keys,
                opts,
                cache: Mutex::new(Cache::default()),
                queue: OnceLock::new(),
                stats: LiveStats::default(),
                held: Mutex::new(Held::default()),
                released: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn stats(&self) -> &LiveStats {
        &self.inner.stats
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether lookups are cached (a TTL above zero): without a cache, [`LiveSource::prefetch`]
    /// has nowhere to keep what it would read, and does nothing.
    pub fn caching(&self) -> bool {
        !self.inner.opts.ttl.is_zero()
    }

    fn cached(&self, want: &Want) -> Option<Found> {
        if !self.caching() {
            return None;
        }
        self.cache().hit(want, Instant::now(), &self.inner.opts)
    }

    /// Stores what a search that started at `asked` found.
    fn remember(&self, wants: &[Want], found: &[Found], asked: Instant) {
        if !self.caching() {
            return;
        }
        // What the search asked for: every want's custom fields (`Reader::find_many`).
        let read = (
            wants.iter().flat_map(|w| w.lead_custom.clone()).collect(),
            wants
                .iter()
                .flat_map(|w| w.contact_custom.clone())
                .collect(),
        );
        let mut c = self.cache();
        for (w, f) in wants.iter().zip(found) {
            c.store(w, f, asked, &read, &self.inner.keys);
        }
        if c.fresh.len() > self.inner.opts.max_keys {
            c.sweep(Instant::now(), &self.inner.opts);
        }
    }

    /// Looks up the keys of upcoming events not cached yet, in as few searches as the chunk
    /// size allows (`send`'s look-ahead). Errors are left for the events themselves to meet.
    pub async fn prefetch(&self, payloads: &[Payload]) {
        if !self.caching() {
            return;
        }
        let cfg = &self.inner.keys;
        let mut wants: Vec<Want> = Vec::new();
        for p in payloads {
            let reqs = crate::lookup::requests(cfg, p);
            if reqs.is_empty() {
                continue;
            }
            let w = Want::of(cfg, p, &reqs);
            if self.cached(&w).is_none() && !wants.contains(&w) {
                wants.push(w);
            }
        }
        for chunk in wants.chunks(self.inner.opts.coalesce_max.max(1)) {
            let asked = Instant::now();
            if let Ok(found) = self.inner.reader.find_many(chunk).await {
                self.bump_batches(chunk.len());
                self.remember(chunk, &found, asked);
            }
        }
    }

    fn bump_batches(&self, events: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner.stats.batches.fetch_add(1, Relaxed);
        self.inner
            .stats
            .batched_events
            .fetch_add(events as u64, Relaxed);
    }

    /// The coalescer: takes the first waiting lookup, waits the window for more, searches once.
    fn queue(&self) -> &mpsc::UnboundedSender<Waiting> {
        self.inner.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Waiting>();
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    let deadline = tokio::time::Instant::now() + me.inner.opts.coalesce_window;
                    while batch.len() < me.inner.opts.coalesce_max {
                        tokio::select! {
                            Some(w) = rx.recv() => batch.push(w),
                            () = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    me.serve(batch).await;
                }
            });
            tx
        })
    }

    async fn serve(&self, batch: Vec<Waiting>) {
        let wants: Vec<Want> = batch.iter().map(|w| w.want.clone()).collect();
        self.bump_batches(wants.len());
        let asked = Instant::now();
        match self.inner.reader.find_many(&wants).await {
            Ok(found) => {
                self.remember(&wants, &found, asked);
                for (w, f) in batch.into_iter().zip(found) {
                    let _ = w.reply.send(Ok(f));
                }
            }
            // One event's key that Close refuses must not fail its neighbours: alone, each
            // meets only its own answer.
            Err(CloseError::Rejected { .. }) if batch.len() > 1 => {
                for w in batch {
                    let asked = Instant::now();
                    let r = self
                        .inner
                        .reader
                        .find_many(std::slice::from_ref(&w.want))
                        .await;
                    if let Ok(f) = &r {
                        self.remember(std::slice::from_ref(&w.want), f, asked);
                    }
                    let _ = w.reply.send(r.map(|mut v| v.pop().unwrap_or_default()));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl LiveSource {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.inner.released.notify_waiters();
    }
}

impl Source for LiveSource {
    fn epoch(&self) -> u64 {
        self.held().epoch
    }

    async fn hold(&self, ids: Vec<String>, since: u64) -> crate::exec::Hold {
        loop {
            let notified = self.inner.released.notified();
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
                        return crate::exec::Hold::stale();
                    }
                    h.now.extend(ids.iter().cloned());
                    let me = self.clone();
                    return crate::exec::Hold::new(Box::new(move |written: &[String]| {
                        me.release(&ids, written)
                    }));
                }
            }
            notified.await;
        }
    }

    async fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<Found, CloseError> {
        use std::sync::atomic::Ordering::Relaxed;
        let want = Want::of(cfg, p, reqs);
        if let Some(f) = self.cached(&want) {
            self.inner.stats.hits.fetch_add(1, Relaxed);
            return Ok(f);
        }
        self.inner.stats.misses.fetch_add(1, Relaxed);
        if self.inner.opts.coalesce_window.is_zero() {
            let asked = Instant::now();
            let found = self
                .inner
                .reader
                .find_many(std::slice::from_ref(&want))
                .await?;
            self.remember(std::slice::from_ref(&want), &found, asked);
            return Ok(found.into_iter().next().unwrap_or_default());
        }
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send(Waiting { want, reply })
            .map_err(|_| CloseError::BadReply {
                path: "data/search/".into(),
                message: "the lookup coalescer stopped".into(),
            })?;
        answer.await.map_err(|_| CloseError::BadReply {
            path: "data/search/".into(),
            message: "the lookup coalescer stopped".into(),
        })?
    }

    fn written(&self, reply: &Value) {
        if self.caching() {
            self.cache().refresh(reply, &self.inner.keys);
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
