//! Close records held in memory: a snapshot to plan against (`dry-run --against sim:…`, mapping
//! tests), the overlay a dry-run accumulates, and the model the property tests apply plans to.
//! Plans are applied through the very request bodies the executor would send.

use crate::lookup::{Found, LookupRequest};
use crate::model::{Contact, Lead};
use crate::plan::{Object, Plan, StepKind};
use serde_json::{Map, Value, json};

/// Marks the ids this state gives to records a plan creates (Close has not given them one).
const PLANNED: &str = "_planned";

/// Whether an id was made up by [`State::apply`] for a record that does not exist in Close yet.
pub fn is_planned_id(id: &str) -> bool {
    id.contains(PLANNED)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub leads: Vec<Lead>,
    pub contacts: Vec<Contact>,
    seq: u64,
}

impl State {
    pub fn new(leads: Vec<Lead>, contacts: Vec<Contact>) -> State {
        State {
            leads,
            contacts,
            seq: 0,
        }
    }

    /// Reads a simulator snapshot (`{"leads": [{…, "contacts": [...]}]}`); short hand-written
    /// snapshots are fine, missing keys take the API's defaults.
    pub fn from_snapshot(v: &Value) -> Result<State, String> {
        let mut s = State::default();
        let leads = match v.get("leads") {
            None | Some(Value::Null) => return Ok(s),
            Some(Value::Array(l)) => l,
            Some(_) => return Err("`leads` must be a list".into()),
        };
        for (i, l) in leads.iter().enumerate() {
            let lead = Lead::from_api(l).ok_or_else(|| format!("leads[{i}] needs an `id`"))?;
            if let Some(Value::Array(cs)) = l.get("contacts") {
                for (j, c) in cs.iter().enumerate() {
                    let mut c = Contact::from_api(c)
                        .ok_or_else(|| format!("leads[{i}].contacts[{j}] needs an `id`"))?;
                    if c.lead_id.is_empty() {
                        c.lead_id.clone_from(&lead.id);
                    }
                    s.contacts.push(c);
                }
            }
            s.leads.push(lead);
        }
        Ok(s)
    }

    /// The state as a snapshot, in the same shape `from_snapshot` reads.
    pub fn to_snapshot(&self) -> Value {
        let leads: Vec<Value> = self
            .leads
            .iter()
            .map(|l| {
                let mut m = Map::new();
                m.insert("id".into(), json!(l.id));
                m.insert("name".into(), json!(l.name));
                m.insert("description".into(), json!(l.description));
                m.insert("status_id".into(), json!(l.status_id));
                m.insert("date_created".into(), json!(l.date_created));
                for (k, v) in &l.custom {
                    m.insert(format!("custom.{k}"), v.clone());
                }
                let contacts: Vec<Value> = self
                    .contacts
                    .iter()
                    .filter(|c| c.lead_id == l.id)
                    .map(contact_json)
                    .collect();
                m.insert("contacts".into(), Value::Array(contacts));
                Value::Object(m)
            })
            .collect();
        json!({ "leads": leads })
    }

    /// What Close's searches would return for these requests (exactly matching records, plus
    /// the leads of the contacts found).
    pub fn lookup(&self, reqs: &[LookupRequest]) -> Found {
        let mut f = Found::default();
        for r in reqs {
            match r {
                LookupRequest::LeadsByCompany { field, value } => {
                    for l in self
                        .leads
                        .iter()
                        .filter(|l| l.custom_text(field).as_deref() == Some(value.as_str()))
                    {
                        if !f.leads_by_company.iter().any(|x| x.id == l.id) {
                            f.leads_by_company.push(l.clone());
                        }
                    }
                }
                LookupRequest::ContactsByUser { field, value } => {
                    for c in self
                        .contacts
                        .iter()
                        .filter(|c| c.custom_text(field).as_deref() == Some(value.as_str()))
                    {
                        f.add_contact(c.clone());
                    }
                }
                LookupRequest::ContactsByEmail { email } => {
                    for c in self.contacts.iter().filter(|c| c.has_email(email)) {
                        f.add_contact(c.clone());
                    }
                }
            }
        }
        for id in f.missing_lead_ids() {
            if let Some(l) = self.leads.iter().find(|l| l.id == id) {
                f.add_lead(l.clone());
            }
        }
        f
    }

    /// Adds records read elsewhere that this state does not know yet (known ones may already
    /// carry this run's changes, so they win).
    pub fn absorb(&mut self, found: &Found) {
        for l in found.leads_by_company.iter().chain(&found.leads) {
            if !self.leads.iter().any(|x| x.id == l.id) {
                self.leads.push(l.clone());
            }
        }
        for c in &found.contacts {
            if !self.contacts.iter().any(|x| x.id == c.id) {
                self.contacts.push(c.clone());
            }
        }
    }

    fn next_id(&mut self, prefix: &str) -> (String, String) {
        self.seq += 1;
        (
            format!("{prefix}{PLANNED}{}", self.seq),
            // Later than every real record, in creation order.
            format!("9999-12-31T00:00:00.{:06}+00:00", self.seq),
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
                    self.leads.push(lead);
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
                    if let Some(l) = self.leads.iter_mut().find(|l| Some(&l.id) == s.id.as_ref()) {
                        apply_lead(l, &s.body);
                    }
                }
                (StepKind::UpdateContact, Object::Contact) => {
                    if let Some(c) = self
                        .contacts
                        .iter_mut()
                        .find(|c| Some(&c.id) == s.id.as_ref())
                    {
                        apply_contact(c, &s.body);
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
        self.contacts.push(c);
        id
    }
}

fn apply_custom(
    custom: &mut std::collections::BTreeMap<String, Value>,
    k: &str,
    v: &Value,
) -> bool {
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

fn contact_json(c: &Contact) -> Value {
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
