//! Close records held in memory: the view a dry-run plans an event over (see
//! [`crate::overlay`]), the model
//! the property tests apply plans to, and small snapshots (mapping tests). Plans are applied
//! through the very request bodies the executor would send.
//!
//! Records are indexed by id, by normalised email and by the text of the custom fields that
//! hold the lookup keys (those given to [`State::track_keys`]; a lookup on another field reads
//! every record), so a lookup costs the records it finds, not the records held.

use crate::lookup::{LookupRequest, LookupResults};
use crate::model::{Contact, Customs, Lead, norm_email};
use crate::plan::{Object, Plan, StepKind};
use crate::stored::FieldTypes;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Marks the ids this state gives to records a plan creates (Close has not given them one).
const PLANNED: &str = "_planned";

/// Whether an id was made up by [`State::apply`] for a record that does not exist in Close yet.
pub fn is_planned_id(id: &str) -> bool {
    id.contains(PLANNED)
}

/// Positions of records by a tracked custom field's text: field id → text → positions.
type ByCustom = HashMap<String, HashMap<String, Vec<usize>>>;

#[derive(Debug, Clone, Default)]
pub struct State {
    leads: Vec<Lead>,
    contacts: Vec<Contact>,
    lead_at: HashMap<String, usize>,
    contact_at: HashMap<String, usize>,
    lead_custom: ByCustom,
    contact_custom: ByCustom,
    by_email: HashMap<String, Vec<usize>>,
    by_lead: HashMap<String, Vec<usize>>,
    types: FieldTypes,
    seq: u64,
}

/// Two states are equal when they hold the same records (indexes follow from them).
impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.leads == other.leads && self.contacts == other.contacts
    }
}

fn add_at(m: &mut HashMap<String, Vec<usize>>, key: String, i: usize) {
    let v = m.entry(key).or_default();
    if !v.contains(&i) {
        v.push(i);
    }
}

fn remove_at(m: &mut HashMap<String, Vec<usize>>, key: &str, i: usize) {
    if let Some(v) = m.get_mut(key) {
        v.retain(|x| *x != i);
        if v.is_empty() {
            m.remove(key);
        }
    }
}

/// The (field, text) pairs of a record's tracked custom fields.
fn custom_keys(custom: &Customs, tracked: &ByCustom) -> Vec<(String, String)> {
    tracked
        .keys()
        .filter_map(|f| Some((f.clone(), crate::model::custom_text_of(custom, f)?)))
        .collect()
}

impl State {
    pub fn new(leads: Vec<Lead>, contacts: Vec<Contact>) -> State {
        let mut s = State::default();
        for l in leads {
            s.push_lead(l);
        }
        for c in contacts {
            s.push_contact(c);
        }
        s
    }

    /// Indexes the custom fields that hold the lookup keys (once; later changes keep the
    /// index current).
    pub fn track_keys(&mut self, cfg: &crate::model::KeyConfig) {
        if let Some(f) = &cfg.company_field
            && !self.lead_custom.contains_key(f)
        {
            let mut by: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, l) in self.leads.iter().enumerate() {
                if let Some(t) = l.custom_text(f) {
                    by.entry(t).or_default().push(i);
                }
            }
            self.lead_custom.insert(f.clone(), by);
        }
        if let Some(f) = &cfg.user_field
            && !self.contact_custom.contains_key(f)
        {
            let mut by: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, c) in self.contacts.iter().enumerate() {
                if let Some(t) = c.custom_text(f) {
                    by.entry(t).or_default().push(i);
                }
            }
            self.contact_custom.insert(f.clone(), by);
        }
    }

    pub fn leads(&self) -> &[Lead] {
        &self.leads
    }
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }
    pub fn types(&self) -> &FieldTypes {
        &self.types
    }
    pub fn set_types(&mut self, t: FieldTypes) {
        self.types = t;
    }
    pub fn lead(&self, id: &str) -> Option<&Lead> {
        self.lead_at.get(id).map(|i| &self.leads[*i])
    }
    pub fn contact(&self, id: &str) -> Option<&Contact> {
        self.contact_at.get(id).map(|i| &self.contacts[*i])
    }
    /// The contacts under a lead, in the order they were added.
    pub fn contacts_of(&self, lead_id: &str) -> impl Iterator<Item = &Contact> {
        self.by_lead
            .get(lead_id)
            .into_iter()
            .flatten()
            .map(|i| &self.contacts[*i])
    }

    fn push_lead(&mut self, l: Lead) {
        if self.lead_at.contains_key(&l.id) {
            return;
        }
        let i = self.leads.len();
        self.lead_at.insert(l.id.clone(), i);
        for (f, t) in custom_keys(&l.custom, &self.lead_custom) {
            add_at(self.lead_custom.entry(f).or_default(), t, i);
        }
        self.leads.push(l);
    }

    fn push_contact(&mut self, c: Contact) {
        if self.contact_at.contains_key(&c.id) {
            return;
        }
        let i = self.contacts.len();
        self.contact_at.insert(c.id.clone(), i);
        add_at(&mut self.by_lead, c.lead_id.clone(), i);
        self.contacts.push(c);
        self.index_contact(i);
    }

    fn index_contact(&mut self, i: usize) {
        let c = &self.contacts[i];
        for (f, t) in custom_keys(&c.custom, &self.contact_custom) {
            add_at(self.contact_custom.entry(f).or_default(), t, i);
        }
        for e in c.email_texts() {
            add_at(&mut self.by_email, norm_email(&e), i);
        }
    }

    fn unindex_contact(&mut self, i: usize) {
        let c = &self.contacts[i];
        for (f, t) in custom_keys(&c.custom, &self.contact_custom) {
            if let Some(m) = self.contact_custom.get_mut(&f) {
                remove_at(m, &t, i);
            }
        }
        for e in c.email_texts() {
            remove_at(&mut self.by_email, &norm_email(&e), i);
        }
    }

    /// Reads a simulator snapshot (`{"leads": [{…, "contacts": [...]}]}`) by the one reading
    /// the simulator uses too (`closeflow_snapshot`); short hand-written snapshots are fine.
    pub fn from_snapshot(v: &Value) -> Result<State, String> {
        let leads = closeflow_snapshot::Reader::leads(v)?;
        let mut s = State {
            types: FieldTypes::from_snapshot_fields(
                v.get("custom_fields").and_then(Value::as_object),
            ),
            ..State::default()
        };
        for l in &leads {
            let (lead, contacts) = records_of(l).ok_or("a lead could not be read")?;
            s.push_lead(lead);
            for c in contacts {
                s.push_contact(c);
            }
        }
        Ok(s)
    }

    /// The state as a snapshot, in the same shape `from_snapshot` reads.
    pub fn to_snapshot(&self) -> Value {
        let leads: Vec<Value> = self
            .leads
            .iter()
            .map(|l| lead_json(l, self.contacts_of(&l.id)))
            .collect();
        json!({ "leads": leads })
    }

    /// What Close's searches would return for these requests (exactly matching records, plus
    /// the leads of the contacts found).
    pub fn lookup(&self, reqs: &[LookupRequest]) -> LookupResults {
        let mut f = LookupResults {
            types: self.types.clone(),
            ..LookupResults::default()
        };
        // A tracked field is looked up in its index, another one scanned.
        let at = |m: &ByCustom, field: &str, value: &str, scan: &dyn Fn() -> Vec<usize>| match m
            .get(field)
        {
            Some(by) => by.get(value).cloned().unwrap_or_default(),
            None => scan(),
        };
        for r in reqs {
            match r {
                LookupRequest::LeadsByCompany { field, value } => {
                    let scan = || {
                        (0..self.leads.len())
                            .filter(|i| self.leads[*i].custom_text(field).as_deref() == Some(value))
                            .collect()
                    };
                    for i in at(&self.lead_custom, field, value, &scan) {
                        let l = &self.leads[i];
                        if !f.leads_by_company.iter().any(|x| x.id == l.id) {
                            f.leads_by_company.push(l.clone());
                        }
                    }
                }
                LookupRequest::ContactsByUser { field, value } => {
                    let scan = || {
                        (0..self.contacts.len())
                            .filter(|i| {
                                self.contacts[*i].custom_text(field).as_deref() == Some(value)
                            })
                            .collect()
                    };
                    for i in at(&self.contact_custom, field, value, &scan) {
                        f.add_contact(self.contacts[i].clone());
                    }
                }
                LookupRequest::ContactsByEmail { email } => {
                    for i in self.by_email.get(&norm_email(email)).into_iter().flatten() {
                        f.add_contact(self.contacts[*i].clone());
                    }
                }
            }
        }
        for id in f.missing_lead_ids() {
            if let Some(l) = self.lead(&id) {
                f.add_lead(l.clone());
            }
        }
        f
    }

    /// Indexes these custom fields (a view over an overlay's records, which tracks the same).
    pub(crate) fn track_fields(
        &mut self,
        lead: impl Iterator<Item = String>,
        contact: impl Iterator<Item = String>,
    ) {
        for f in lead {
            self.lead_custom.entry(f).or_default();
        }
        for f in contact {
            self.contact_custom.entry(f).or_default();
        }
    }
    /// Adds a lead or a contact (one already known by its id is left as it is).
    pub(crate) fn add_lead(&mut self, l: Lead) {
        self.push_lead(l);
    }
    pub(crate) fn add_contact(&mut self, c: Contact) {
        self.push_contact(c);
    }
    /// The counter that numbers created records (carried from one view to the next).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    fn next_id(&mut self, prefix: &str) -> (String, String) {
        self.seq += 1;
        (
            format!("{prefix}{PLANNED}{}", self.seq),
            // Later than every real record, in creation order.
            format!("9999-01-01T00:00:00.{:06}+00:00", self.seq),
        )
    }

    /// Applies a plan's writes; returns the ids given to created records, in order.
    pub fn apply(&mut self, plan: &Plan) -> Vec<String> {
        let mut created = Vec::new();
        for s in plan.writes() {
            match (s.kind, s.object) {
                (StepKind::CreateLead, _) => {
                    let (id, date) = self.next_id("lead");
                    let mut lead = Lead {
                        id: id.clone(),
                        name: String::new(),
                        description: String::new(),
                        status_id: None,
                        date_created: date,
                        custom: Default::default(),
                    };
                    apply_lead(&mut lead, &s.body);
                    self.push_lead(lead);
                    created.push(id.clone());
                    if let Some(Value::Array(cs)) = s.body.get("contacts") {
                        for c in cs.iter().filter_map(Value::as_object) {
                            let cid = self.create_contact(&id, c);
                            created.push(cid);
                        }
                    }
                }
                (StepKind::CreateContact, _) if !s.nested => {
                    let lead_id = s.lead_id.clone().unwrap_or_default();
                    created.push(self.create_contact(&lead_id, &s.body));
                }
                (StepKind::UpdateLead, _) => {
                    if let Some(&i) = s.id.as_ref().and_then(|id| self.lead_at.get(id)) {
                        for (f, t) in custom_keys(&self.leads[i].custom, &self.lead_custom) {
                            if let Some(m) = self.lead_custom.get_mut(&f) {
                                remove_at(m, &t, i);
                            }
                        }
                        apply_lead(&mut self.leads[i], &s.body);
                        for (f, t) in custom_keys(&self.leads[i].custom, &self.lead_custom) {
                            add_at(self.lead_custom.entry(f).or_default(), t, i);
                        }
                    }
                }
                (StepKind::UpdateContact, Object::Contact) => {
                    if let Some(&i) = s.id.as_ref().and_then(|id| self.contact_at.get(id)) {
                        self.unindex_contact(i);
                        apply_contact(&mut self.contacts[i], &s.body);
                        self.index_contact(i);
                    }
                }
                _ => {}
            }
        }
        created
    }

    fn create_contact(&mut self, lead_id: &str, body: &Map<String, Value>) -> String {
        let (id, date) = self.next_id("cont");
        let mut c = Contact {
            id: id.clone(),
            lead_id: lead_id.to_string(),
            name: String::new(),
            title: String::new(),
            date_created: date,
            emails: vec![],
            phones: vec![],
            urls: vec![],
            custom: Default::default(),
        };
        apply_contact(&mut c, body);
        self.push_contact(c);
        id
    }
}

/// A canonical snapshot lead (its contacts nested) as records.
pub(crate) fn records_of(lead: &Value) -> Option<(Lead, Vec<Contact>)> {
    let l = Lead::from_api(lead)?;
    let contacts = lead
        .get("contacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Contact::from_api)
        .collect();
    Some((l, contacts))
}

fn apply_custom(custom: &mut Customs, k: &str, v: &Value) -> bool {
    let Some(id) = k.strip_prefix("custom.") else {
        return false;
    };
    if v.is_null() {
        custom.remove(id);
    } else {
        custom.insert(id.to_string(), v.clone());
    }
    true
}

fn apply_lead(l: &mut Lead, body: &Map<String, Value>) {
    for (k, v) in body {
        if apply_custom(&mut l.custom, k, v) {
            continue;
        }
        match k.as_str() {
            "name" => l.name = v.as_str().unwrap_or_default().to_string(),
            "description" => l.description = v.as_str().unwrap_or_default().to_string(),
            "status_id" => l.status_id = v.as_str().map(str::to_string),
            _ => {}
        }
    }
}

fn apply_contact(c: &mut Contact, body: &Map<String, Value>) {
    for (k, v) in body {
        if apply_custom(&mut c.custom, k, v) {
            continue;
        }
        let list = || v.as_array().cloned().unwrap_or_default();
        match k.as_str() {
            "name" => c.name = v.as_str().unwrap_or_default().to_string(),
            "title" => c.title = v.as_str().unwrap_or_default().to_string(),
            "emails" => c.emails = list(),
            "phones" => c.phones = list(),
            "urls" => c.urls = list(),
            _ => {}
        }
    }
}

/// A lead and its contacts in the snapshot's shape (only what the planner reads).
pub(crate) fn lead_json<'a>(l: &Lead, contacts: impl Iterator<Item = &'a Contact>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(l.id));
    m.insert("name".into(), json!(l.name));
    m.insert("description".into(), json!(l.description));
    m.insert("status_id".into(), json!(l.status_id));
    m.insert("date_created".into(), json!(l.date_created));
    for (k, v) in &l.custom {
        m.insert(format!("custom.{k}"), v.clone());
    }
    let contacts: Vec<Value> = contacts.map(contact_json).collect();
    m.insert("contacts".into(), Value::Array(contacts));
    Value::Object(m)
}

pub(crate) fn contact_json(c: &Contact) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    m.insert("lead_id".into(), json!(c.lead_id));
    m.insert("name".into(), json!(c.name));
    m.insert("title".into(), json!(c.title));
    m.insert("date_created".into(), json!(c.date_created));
    m.insert("emails".into(), json!(c.emails));
    m.insert("phones".into(), json!(c.phones));
    m.insert("urls".into(), json!(c.urls));
    for (k, v) in &c.custom {
        m.insert(format!("custom.{k}"), v.clone());
    }
    Value::Object(m)
}
