//! What the server's scheduler asks of the lookups before an event starts: who the event is
//! about (the records its keys matched, so that two events about one person are ordered even
//! when they share no key), and a read-ahead that looks up the next events in shared searches.

use super::LiveSource;
use super::cache::cache_key;
use crate::client::CloseError;
use crate::search::EventLookup;
use closeflow_close::lookup::{self, LookupRequest};
use closeflow_close::payload::Payload;
use std::collections::BTreeSet;
use std::time::Instant;

/// One event's lookups, as the read-ahead takes them: the payloads its mappings produced.
pub type EventPayloads = Vec<Payload>;

impl LiveSource {
    /// The ids of the records (leads and contacts, with each contact's lead) that these
    /// payloads' keys matched when last looked up, however long ago: what the event may write.
    /// Our own writes keep it current (a write's reply moves a record to the keys it matches
    /// now), so only an edit made elsewhere since can make it wrong, as with any cached answer.
    /// `None` when a key was never looked up, its answer was forgotten, or nothing is cached.
    /// `reqs` as [`LiveSource::requests`] gives them.
    pub fn identity(&self, reqs: &[LookupRequest]) -> Option<Vec<String>> {
        if !self.caching() {
            return None;
        }
        let c = self.cache();
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for k in reqs {
            if !c.fresh.contains_key(k) {
                return None;
            }
            for id in c.members.get(k).into_iter().flatten() {
                ids.insert(id.clone());
                if let Some(contact) = c.contacts.get(id) {
                    ids.insert(contact.rec.lead_id.clone());
                }
            }
        }
        Some(ids.into_iter().collect())
    }

    /// The lookups these payloads need, as the cache names them: computed once per event by
    /// the caller, so that [`LiveSource::identity`] is cheap enough to ask on every decision.
    pub fn requests(&self, payloads: &[Payload]) -> Vec<LookupRequest> {
        let mut out: Vec<LookupRequest> = payloads
            .iter()
            .flat_map(|p| lookup::requests(&self.shared.keys, p))
            .map(|r| cache_key(&r))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What these payloads' lookups still need from Close: for each one not answered from the
    /// cache, its keys that are not fresh there, with its company key whenever a contact key is
    /// among them (all of them when the cached records lack a field it needs). A search that
    /// carries only these leaves room for other events' keys.
    pub(super) fn wants(&self, payloads: &[Payload]) -> Vec<EventLookup> {
        let cfg = &self.shared.keys;
        let now = Instant::now();
        payloads
            .iter()
            .filter_map(|p| {
                let reqs = lookup::requests(cfg, p);
                if reqs.is_empty() {
                    return None;
                }
                let mut w = EventLookup::of(cfg, p, &reqs);
                if self.cached(&w).is_some() {
                    return None;
                }
                if self.caching() {
                    let c = self.cache();
                    let stale: Vec<LookupRequest> = w
                        .reqs
                        .iter()
                        .filter(|r| c.fresh(&cache_key(r), now, &self.shared.opts).is_none())
                        .cloned()
                        .collect();
                    // A contact found without its lead in the same search costs a `GET
                    // /lead/` (an "other" call, the write budget): its company key goes along.
                    let contact =
                        |r: &LookupRequest| !matches!(r, LookupRequest::LeadsByCompany { .. });
                    if stale.iter().any(contact) {
                        w.reqs.retain(|r| !contact(r) || stale.contains(r));
                    } else if !stale.is_empty() {
                        w.reqs = stale;
                    }
                }
                Some(w)
            })
            .collect()
    }

    /// The keys [`LiveSource::wants`] would search for, as the cache names them.
    pub fn to_look_up(&self, payloads: &[Payload]) -> Vec<LookupRequest> {
        let mut out: Vec<LookupRequest> = self
            .wants(payloads)
            .iter()
            .flat_map(|w| w.reqs.iter().map(cache_key))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Looks up these events' keys in as few searches as the chunk size allows and keeps the
    /// answers in the cache. Per event: `Ok`, or the error its lookup met — when Close refuses
    /// the shared search, each event is searched alone, so one bad key fails only its event.
    pub async fn read_ahead(&self, events: &[EventPayloads]) -> Vec<Result<(), CloseError>> {
        let wants: Vec<Vec<EventLookup>> = events.iter().map(|ps| self.wants(ps)).collect();
        let all: Vec<EventLookup> = wants.iter().flatten().cloned().collect();
        if all.is_empty() {
            return events.iter().map(|_| Ok(())).collect();
        }
        match self.search(&all).await {
            Ok(()) => events.iter().map(|_| Ok(())).collect(),
            Err(CloseError::Rejected { .. }) if wants.len() > 1 => {
                let mut out = Vec::with_capacity(wants.len());
                for w in &wants {
                    out.push(if w.is_empty() {
                        Ok(())
                    } else {
                        self.search(w).await
                    });
                }
                out
            }
            Err(e) => events.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn search(&self, wants: &[EventLookup]) -> Result<(), CloseError> {
        let asked = Instant::now();
        let found = self.shared.searcher.find_many(wants).await?;
        self.bump_batches(wants.len());
        self.remember(wants, &found, asked);
        Ok(())
    }
}
