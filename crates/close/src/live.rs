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
//! What a stale entry can cause: an edit made in Close's UI within the TTL is not seen, so an
//! email or phone list may be written back without a value added there in the meantime (once),
//! or a field changed there is left as it is. It never causes a duplicate record: a cached key
//! that matched nothing is kept only briefly, and our own creates are cached at once.

use crate::client::{CloseError, Reader};
use crate::exec::Source;
use crate::lookup::{Found, LookupRequest};
use crate::model::{Contact, KeyConfig, Lead, norm_email};
use crate::payload::Payload;
use crate::search::Want;
use crate::stored::FieldTypes;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
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
            empty_ttl: Duration::from_secs(10),
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

struct Entry {
    at: Instant,
    leads: Vec<String>,
    contacts: Vec<String>,
    /// Custom fields the records were read with (a want needing others is a miss).
    lead_custom: BTreeSet<String>,
    contact_custom: BTreeSet<String>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<LookupRequest, Entry>,
    leads: HashMap<String, Lead>,
    contacts: HashMap<String, Contact>,
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

impl Cache {
    fn fresh(&self, e: &Entry, now: Instant, opts: &LiveOptions) -> bool {
        let ttl = if e.leads.is_empty() && e.contacts.is_empty() {
            opts.empty_ttl.min(opts.ttl)
        } else {
            opts.ttl
        };
        now.duration_since(e.at) < ttl
    }

    /// Everything `want` needs, if every key is cached, fresh and read with its fields.
    fn hit(&self, want: &Want, now: Instant, opts: &LiveOptions) -> Option<Found> {
        let mut f = Found {
            types: self.types.clone()?,
            ..Found::default()
        };
        for r in &want.reqs {
            let e = self.keys.get(&cache_key(r))?;
            if !self.fresh(e, now, opts)
                || !want.lead_custom.is_subset(&e.lead_custom)
                || !want.contact_custom.is_subset(&e.contact_custom)
            {
                return None;
            }
            for id in &e.leads {
                let l = self.leads.get(id)?;
                if !f.leads_by_company.iter().any(|x| x.id == l.id) {
                    f.leads_by_company.push(l.clone());
                }
            }
            for id in &e.contacts {
                f.add_contact(self.contacts.get(id)?.clone());
            }
        }
        for id in f.missing_lead_ids() {
            f.add_lead(self.leads.get(&id)?.clone());
        }
        Some(f)
    }

    /// Records what a search found for `want`'s keys.
    fn store(&mut self, want: &Want, found: &Found, now: Instant, keys: &KeyConfig) {
        self.types = Some(found.types.clone());
        for l in found.leads_by_company.iter().chain(&found.leads) {
            self.leads.insert(l.id.clone(), l.clone());
        }
        for c in &found.contacts {
            self.contacts.insert(c.id.clone(), c.clone());
        }
        for r in &want.reqs {
            let (leads, contacts) = match r {
                LookupRequest::LeadsByCompany { .. } => (
                    found
                        .leads_by_company
                        .iter()
                        .filter(|l| matches_lead(r, l))
                        .map(|l| l.id.clone())
                        .collect(),
                    vec![],
                ),
                _ => (
                    vec![],
                    found
                        .contacts
                        .iter()
                        .filter(|c| matches_contact(r, c, keys))
                        .map(|c| c.id.clone())
                        .collect(),
                ),
            };
            self.keys.insert(
                cache_key(r),
                Entry {
                    at: now,
                    leads,
                    contacts,
                    lead_custom: want.lead_custom.clone(),
                    contact_custom: want.contact_custom.clone(),
                },
            );
        }
    }

    /// A record Close returned after a write: refreshed, and added to every cached key it
    /// matches now (a contact that gained an email, a lead just created with its Company ID).
    fn refresh(&mut self, reply: &Value, keys: &KeyConfig) {
        let is_lead = reply.get("id").and_then(Value::as_str).is_some_and(|id| id.starts_with("lead_"));
        if is_lead {
            if let Some(l) = Lead::from_api(reply) {
                if let Some(f) = &keys.company_field
                    && let Some(v) = l.custom_text(f)
                {
                    let k = LookupRequest::LeadsByCompany { field: f.clone(), value: v };
                    if let Some(e) = self.keys.get_mut(&k)
                        && !e.leads.contains(&l.id)
                    {
                        e.leads.push(l.id.clone());
                    }
                }
                self.leads.insert(l.id.clone(), l);
            }
            for c in reply.get("contacts").and_then(Value::as_array).into_iter().flatten() {
                self.refresh_contact(c, keys);
            }
        } else {
            self.refresh_contact(reply, keys);
        }
    }

    fn refresh_contact(&mut self, v: &Value, keys: &KeyConfig) {
        let Some(c) = Contact::from_api(v) else {
            return;
        };
        let mut matching: Vec<LookupRequest> = c
            .email_texts()
            .iter()
            .map(|e| LookupRequest::ContactsByEmail { email: norm_email(e) })
            .collect();
        if let Some(f) = &keys.user_field
            && let Some(v) = c.custom_text(f)
        {
            matching.push(LookupRequest::ContactsByUser { field: f.clone(), value: v });
        }
        for k in matching {
            if let Some(e) = self.keys.get_mut(&k)
                && !e.contacts.contains(&c.id)
            {
                e.contacts.push(c.id.clone());
            }
        }
        self.contacts.insert(c.id.clone(), c);
    }

    /// Drops expired entries, then records no entry refers to.
    fn sweep(&mut self, now: Instant, opts: &LiveOptions) {
        let expired: Vec<LookupRequest> = self
            .keys
            .iter()
            .filter(|(_, e)| !self.fresh(e, now, opts))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.keys.remove(&k);
        }
        let mut live_leads: BTreeSet<&String> = BTreeSet::new();
        let mut live_contacts: BTreeSet<&String> = BTreeSet::new();
        for e in self.keys.values() {
            live_leads.extend(&e.leads);
            live_contacts.extend(&e.contacts);
        }
        for c in live_contacts.iter().filter_map(|id| self.contacts.get(*id)) {
            live_leads.insert(&c.lead_id);
        }
        let live_leads: BTreeSet<String> = live_leads.into_iter().cloned().collect();
        let live_contacts: BTreeSet<String> = live_contacts.into_iter().cloned().collect();
        self.leads.retain(|id, _| live_leads.contains(id));
        self.contacts.retain(|id, _| live_contacts.contains(id));
    }
}

fn matches_lead(r: &LookupRequest, l: &Lead) -> bool {
    matches!(r, LookupRequest::LeadsByCompany { field, value } if l.custom_text(field).as_deref() == Some(value))
}

fn matches_contact(r: &LookupRequest, c: &Contact, _keys: &KeyConfig) -> bool {
    match r {
        LookupRequest::ContactsByUser { field, value } => c.custom_text(field).as_deref() == Some(value),
        LookupRequest::ContactsByEmail { email } => c.has_email(&norm_email(email)),
        LookupRequest::LeadsByCompany { .. } => false,
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

    fn caching(&self) -> bool {
        !self.inner.opts.ttl.is_zero()
    }

    fn cached(&self, want: &Want) -> Option<Found> {
        if !self.caching() {
            return None;
        }
        self.cache().hit(want, Instant::now(), &self.inner.opts)
    }

    fn remember(&self, wants: &[Want], found: &[Found]) {
        if !self.caching() {
            return;
        }
        let now = Instant::now();
        let mut c = self.cache();
        for (w, f) in wants.iter().zip(found) {
            c.store(w, f, now, &self.inner.keys);
        }
        if c.keys.len() > self.inner.opts.max_keys {
            c.sweep(now, &self.inner.opts);
        }
    }

    /// Looks up the keys of upcoming events not cached yet, in as few searches as the chunk
    /// size allows (`send`'s look-ahead). Errors are left for the events themselves to meet.
    pub async fn prefetch(&self, items: &[(KeyConfig, Payload)]) {
        if !self.caching() {
            return;
        }
        let mut wants: Vec<Want> = Vec::new();
        for (cfg, p) in items {
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
            if let Ok(found) = self.inner.reader.find_many(&self.inner.keys, chunk).await {
                self.bump_batches(chunk.len());
                self.remember(chunk, &found);
            }
        }
    }

    fn bump_batches(&self, events: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner.stats.batches.fetch_add(1, Relaxed);
        self.inner.stats.batched_events.fetch_add(events as u64, Relaxed);
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
        match self.inner.reader.find_many(&self.inner.keys, &wants).await {
            Ok(found) => {
                self.remember(&wants, &found);
                for (w, f) in batch.into_iter().zip(found) {
                    let _ = w.reply.send(Ok(f));
                }
            }
            // One event's key that Close refuses must not fail its neighbours: alone, each
            // meets only its own answer.
            Err(CloseError::Rejected { .. }) if batch.len() > 1 => {
                for w in batch {
                    let r = self.inner.reader.find_many(&self.inner.keys, std::slice::from_ref(&w.want)).await;
                    if let Ok(f) = &r {
                        self.remember(std::slice::from_ref(&w.want), f);
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

impl Source for LiveSource {
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
            let found = self.inner.reader.find_many(cfg, std::slice::from_ref(&want)).await?;
            self.remember(std::slice::from_ref(&want), &found);
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

    fn forget(&self, reqs: &[LookupRequest]) {
        if self.caching() {
            let mut c = self.cache();
            for r in reqs {
                c.keys.remove(&cache_key(r));
            }
        }
    }
}
