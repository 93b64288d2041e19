//! Lookups over Close's `/data/search/`, the scarcest budget (16 requests per 8 s per key).
//!
//! [`Searcher::find_many`] looks up the keys of many events in one request: an `or` over every
//! distinct key (leads by Company ID, contacts by User ID, contacts by email), with both object
//! types' fields, then splits the results back by the key each one matches **exactly** (Close's
//! word search returns near matches; a near match is never routed to another key). Leads that a
//! contact belongs to are taken from the results when the company lookup already returned them,
//! and fetched with `GET /lead/{id}/` (another budget) only otherwise, once per lead.
//! A query Close refuses as too large (400) is split in halves and each half retried.
//!
//! [`LookupMode::PerKey`] keeps the old way (a search per key per event) as the baseline the
//! delivery benchmark compares against. The [`Searcher`] owns the mode and the chunk size, so
//! the client underneath knows calls only.

use crate::client::{CloseError, Reader};
use closeflow_close::lookup::{LookupRequest, LookupResults};
use closeflow_close::model::{Contact, KeyConfig, Lead, norm_email};
use closeflow_close::payload::Payload;
use closeflow_close::port::{PortError, ReadPort};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// How lookups are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookupMode {
    /// One search for all the keys of one or many events.
    #[default]
    Combined,
    /// One search per key per event (the naive baseline).
    PerKey,
}

/// How lookups are sent: the mode, and how many requests go into one search.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub mode: LookupMode,
    /// Lookup requests per search at most (a 400 on a large query splits it further).
    pub chunk: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            mode: LookupMode::default(),
            chunk: 50,
        }
    }
}

/// Sends lookups over a [`Reader`], as [`SearchOptions`] say: the live read port.
#[derive(Clone, Debug)]
pub struct Searcher {
    reader: Reader,
    opts: SearchOptions,
}

impl Searcher {
    /// Lookup keys one search request carries at most.
    pub fn chunk(&self) -> usize {
        self.opts.chunk.max(1)
    }
}

impl From<Reader> for Searcher {
    /// A searcher with the default options (one combined search, chunks of 50).
    fn from(reader: Reader) -> Searcher {
        Searcher::new(reader, SearchOptions::default())
    }
}

/// What one event needs looked up: its requests and the custom fields its payload compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLookup {
    pub reqs: Vec<LookupRequest>,
    pub lead_custom: BTreeSet<String>,
    pub contact_custom: BTreeSet<String>,
}

impl EventLookup {
    pub fn of(cfg: &KeyConfig, p: &Payload, reqs: &[LookupRequest]) -> EventLookup {
        let id_of = |k: &String| {
            closeflow_close::payload::custom_key(k).map_or(k.clone(), |(id, _)| id.into())
        };
        let mut w = EventLookup {
            reqs: reqs.to_vec(),
            lead_custom: p.lead_custom_fields.keys().map(id_of).collect(),
            contact_custom: p.contact_custom_fields.keys().map(id_of).collect(),
        };
        w.lead_custom.extend(cfg.company_field.clone());
        w.contact_custom.extend(cfg.user_field.clone());
        w
    }
}

const CONTACT_FIELDS: &[&str] = &[
    "id",
    "lead_id",
    "name",
    "title",
    "date_created",
    "emails",
    "phones",
    "urls",
];
const LEAD_FIELDS: &[&str] = &["id", "name", "description", "status_id", "date_created"];

fn fields(base: &[&str], custom: &BTreeSet<String>) -> Vec<String> {
    base.iter()
        .map(|s| s.to_string())
        .chain(custom.iter().map(|c| format!("custom.{c}")))
        .collect()
}

fn and_of(object_type: &str, cond: Value) -> Value {
    json!({"type": "and", "queries": [{"type": "object_type", "object_type": object_type}, cond]})
}

fn custom_equals(field: &str, value: &str) -> Value {
    json!({"type": "field_condition", "field": {"type": "custom_field", "custom_field_id": field},
           "condition": {"type": "text", "mode": "exact_value", "value": value}})
}

fn email_words(email: &str) -> Value {
    json!({"type": "has_related", "this_object_type": "contact", "related_object_type": "contact_email",
           "related_query": {"type": "and", "queries": [{"type": "field_condition",
             "field": {"type": "regular_field", "object_type": "contact_email", "field_name": "email"},
             "condition": {"type": "text", "mode": "full_words", "value": email}}]}})
}

/// The query node of one request.
fn node(r: &LookupRequest) -> Value {
    match r {
        LookupRequest::LeadsByCompany { field, value } => {
            and_of("lead", custom_equals(field, value))
        }
        LookupRequest::ContactsByUser { field, value } => {
            and_of("contact", custom_equals(field, value))
        }
        LookupRequest::ContactsByEmail { email } => and_of("contact", email_words(email)),
    }
}

/// Does a returned record match this request exactly?
fn lead_matches(r: &LookupRequest, l: &Lead) -> bool {
    matches!(r, LookupRequest::LeadsByCompany { field, value } if l.custom_text(field).as_deref() == Some(value))
}

fn contact_matches(r: &LookupRequest, c: &Contact) -> bool {
    match r {
        LookupRequest::ContactsByUser { field, value } => {
            c.custom_text(field).as_deref() == Some(value)
        }
        LookupRequest::ContactsByEmail { email } => c.has_email(&norm_email(email)),
        LookupRequest::LeadsByCompany { .. } => false,
    }
}

/// What the searches of a chunk returned, by id.
#[derive(Default)]
struct Results {
    leads: BTreeMap<String, Lead>,
    contacts: BTreeMap<String, Contact>,
}

impl Searcher {
    pub fn new(reader: Reader, opts: SearchOptions) -> Searcher {
        Searcher { reader, opts }
    }

    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Runs one event's lookups: leads by Company ID, contacts by User ID and by email, and the
    /// leads of the contacts found.
    pub async fn find_one(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<LookupResults, CloseError> {
        let want = EventLookup::of(cfg, p, reqs);
        let mut found = self.find_many(std::slice::from_ref(&want)).await?;
        Ok(found.pop().unwrap_or_default())
    }

    /// Looks up many events' keys at once (see the module doc); one `LookupResults` per want, in order.
    pub async fn find_many(&self, wants: &[EventLookup]) -> Result<Vec<LookupResults>, CloseError> {
        let types = self.reader.field_types().await?;
        let mut results = Results::default();
        let lead_custom: BTreeSet<String> =
            wants.iter().flat_map(|w| w.lead_custom.clone()).collect();
        let contact_custom: BTreeSet<String> = wants
            .iter()
            .flat_map(|w| w.contact_custom.clone())
            .collect();
        let field_sets = json!({
            "lead": fields(LEAD_FIELDS, &lead_custom),
            "contact": fields(CONTACT_FIELDS, &contact_custom),
        });
        match self.opts.mode {
            LookupMode::Combined => {
                let distinct: Vec<&LookupRequest> = wants
                    .iter()
                    .flat_map(|w| &w.reqs)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for chunk in distinct.chunks(self.opts.chunk.max(1)) {
                    self.search_split(chunk, &field_sets, &mut results).await?;
                }
            }
            LookupMode::PerKey => {
                // The baseline: every key of every event searched on its own, no sharing.
                for w in wants {
                    for r in &w.reqs {
                        let kind = match r {
                            LookupRequest::LeadsByCompany { .. } => "lead",
                            _ => "contact",
                        };
                        let one = json!({kind: field_sets[kind].clone()});
                        self.search_into(node(r), &one, &mut results).await?;
                    }
                }
            }
        }
        let mut found: Vec<LookupResults> = wants
            .iter()
            .map(|w| {
                let mut f = LookupResults {
                    types: types.clone(),
                    ..LookupResults::default()
                };
                for l in results.leads.values() {
                    if w.reqs.iter().any(|r| lead_matches(r, l)) {
                        f.leads_by_company.push(l.clone());
                    }
                }
                for c in results.contacts.values() {
                    if w.reqs.iter().any(|r| contact_matches(r, c)) {
                        f.add_contact(c.clone());
                    }
                }
                // A contact's lead that the search returned anyway needs no second read.
                for id in f.missing_lead_ids() {
                    if let Some(l) = results.leads.get(&id) {
                        f.add_lead(l.clone());
                    }
                }
                f
            })
            .collect();
        let missing: BTreeSet<String> = found
            .iter()
            .flat_map(LookupResults::missing_lead_ids)
            .collect();
        let lead_fields = fields(LEAD_FIELDS, &lead_custom).join(",");
        let mut fetched: BTreeMap<String, Lead> = BTreeMap::new();
        for id in missing {
            let path = format!("lead/{id}/?_fields={lead_fields}");
            match self.reader.call(reqwest::Method::GET, &path, None).await {
                Ok(v) => {
                    if let Some(l) = Lead::from_api(&v) {
                        fetched.insert(id, l);
                    }
                }
                // Deleted meanwhile: its contacts are orphans the planner can still update.
                Err(CloseError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for f in &mut found {
            for id in f.missing_lead_ids() {
                if let Some(l) = fetched.get(&id) {
                    f.add_lead(l.clone());
                }
            }
        }
        Ok(found)
    }

    /// Searches a chunk of requests in one `or`; a 400 on more than one request splits it.
    fn search_split<'a>(
        &'a self,
        chunk: &'a [&'a LookupRequest],
        field_sets: &'a Value,
        results: &'a mut Results,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CloseError>> + Send + 'a>>
    {
        Box::pin(async move {
            let query = if chunk.len() == 1 {
                node(chunk[0])
            } else {
                json!({"type": "or", "queries": chunk.iter().map(|r| node(r)).collect::<Vec<_>>()})
            };
            match self.search_into(query, field_sets, results).await {
                Err(CloseError::Rejected { status: 400, .. }) if chunk.len() > 1 => {
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    self.search_split(a, field_sets, results).await?;
                    self.search_split(b, field_sets, results).await
                }
                other => other,
            }
        })
    }

    /// One search, every page of it, into `results`.
    async fn search_into(
        &self,
        query: Value,
        field_sets: &Value,
        results: &mut Results,
    ) -> Result<(), CloseError> {
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let mut body = json!({"query": query, "_fields": field_sets, "_limit": 200});
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let reply = self
                .reader
                .call(reqwest::Method::POST, "data/search/", Some(&body))
                .await?;
            for item in reply
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match item.get("__object_type").and_then(Value::as_str) {
                    Some("lead") => {
                        if let Some(l) = Lead::from_api(item) {
                            results.leads.insert(l.id.clone(), l);
                        }
                    }
                    _ => {
                        let c = Contact::from_api(item).ok_or_else(|| CloseError::BadReply {
                            path: "data/search/".into(),
                            message: "a contact without id".into(),
                        })?;
                        results.contacts.insert(c.id.clone(), c);
                    }
                }
            }
            match reply.get("cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(())
    }
}

impl ReadPort for Searcher {
    async fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<LookupResults, PortError> {
        Ok(self.find_one(cfg, p, reqs).await?)
    }
}
