//! The live lookup cache: key → the ids of the records it matched, and the records by id. The
//! records decide which keys they belong to (so a write's reply moves a record to the keys it
//! matches now); a search never overrides a copy refreshed after it began; entries expire after
//! a TTL (a key that matched nothing after a short one). See the parent module for what a
//! stale entry can cause.

use super::options::LiveOptions;
use crate::search::EventLookup;
use closeflow_close::lookup::{LookupRequest, LookupResults};
use closeflow_close::model::{Contact, KeyConfig, Lead, norm_email};
use closeflow_close::stored::FieldTypes;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// A cache key: the request with its email normalised as the planner compares it.
pub(super) fn cache_key(r: &LookupRequest) -> LookupRequest {
    match r {
        LookupRequest::ContactsByEmail { email } => LookupRequest::ContactsByEmail {
            email: norm_email(email),
        },
        other => other.clone(),
    }
}

/// A key whose lookup is known, and since when.
pub(super) struct Fresh {
    at: Instant,
}

/// A cached record: when it was last read or written, and the custom fields it was read with
/// (`None`: all of them — a write's reply carries the whole record). A want needing a field the
/// record was not read with is a miss: an absent field would look empty to the planner.
pub(super) struct Cached<T> {
    pub(super) rec: T,
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
pub(super) struct Cache {
    pub(super) leads: HashMap<String, Cached<Lead>>,
    pub(super) contacts: HashMap<String, Cached<Contact>>,
    pub(super) members: HashMap<LookupRequest, BTreeSet<String>>,
    /// The keys each cached record is a member of (to move it when it changes).
    pub(super) member_of: HashMap<String, Vec<LookupRequest>>,
    pub(super) fresh: HashMap<LookupRequest, Fresh>,
    pub(super) types: Option<FieldTypes>,
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
    pub(super) fn fresh(
        &self,
        k: &LookupRequest,
        now: Instant,
        opts: &LiveOptions,
    ) -> Option<&Fresh> {
        let f = self.fresh.get(k)?;
        let empty = self.members.get(k).is_none_or(BTreeSet::is_empty);
        let ttl = if empty {
            opts.empty_ttl.min(opts.ttl)
        } else {
            opts.ttl
        };
        (now.duration_since(f.at) < ttl).then_some(f)
    }

    pub(super) fn place(&mut self, id: &str, now_keys: Vec<LookupRequest>) {
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

    pub(super) fn upsert_lead(
        &mut self,
        l: Lead,
        fields: Option<BTreeSet<String>>,
        keys: &KeyConfig,
    ) {
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

    pub(super) fn upsert_contact(
        &mut self,
        c: Contact,
        fields: Option<BTreeSet<String>>,
        keys: &KeyConfig,
    ) {
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

    pub(super) fn seen(&self, id: &str) -> Option<Instant> {
        self.leads
            .get(id)
            .map(|x| x.seen)
            .or_else(|| self.contacts.get(id).map(|x| x.seen))
    }

    /// Forgets a record and every key it was a member of (what else those keys hold is no
    /// longer known to be complete).
    pub(super) fn evict(&mut self, id: &str) {
        for k in self.member_of.get(id).cloned().unwrap_or_default() {
            self.fresh.remove(&k);
        }
        self.place(id, Vec::new());
        self.member_of.remove(id);
        self.leads.remove(id);
        self.contacts.remove(id);
    }

    /// Everything `want` needs, if every key is known, fresh and read with its fields.
    /// Whether a Company ID among these lookups matched nothing when cached: the key other
    /// processes may have written meanwhile (a cluster partitions by person, so a person's own
    /// keys are written by one node; a company is everyone's).
    pub(super) fn company_unmatched(&self, want: &EventLookup) -> bool {
        want.reqs.iter().any(|r| {
            matches!(r, LookupRequest::LeadsByCompany { .. })
                && self.members.get(&cache_key(r)).is_none_or(|m| m.is_empty())
        })
    }

    pub(super) fn hit(
        &self,
        want: &EventLookup,
        now: Instant,
        opts: &LiveOptions,
    ) -> Option<LookupResults> {
        let mut f = LookupResults {
            types: self.types.clone()?,
            ..LookupResults::default()
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
    pub(super) fn store(
        &mut self,
        want: &EventLookup,
        found: &LookupResults,
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
    pub(super) fn refresh(&mut self, reply: &Value, keys: &KeyConfig) {
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
    pub(super) fn sweep(&mut self, now: Instant, opts: &LiveOptions) {
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
