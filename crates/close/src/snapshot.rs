//! A simulator snapshot as a read-only source for `dry-run --against sim:`, sized for large
//! snapshots: each lead (with its contacts) is kept as compact JSON text holding only what the
//! planner reads, and indexed by Company ID, User ID and normalised email; a lookup parses only
//! the leads it finds. Reading goes lead by lead through the one reading the simulator uses
//! (`closeflow_snapshot`), so the parsed snapshot is never held whole.

use crate::lookup::{Found, LookupRequest};
use crate::model::{Contact, KeyConfig, Lead, norm_email};
use crate::stored::FieldTypes;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Snapshot {
    leads: Vec<Box<str>>,
    by_company: HashMap<Box<str>, Vec<u32>>,
    by_user: HashMap<Box<str>, Vec<u32>>,
    by_email: HashMap<Box<str>, Vec<u32>>,
    keys: KeyConfig,
    types: FieldTypes,
}

/// The top of a snapshot file; leads stay raw text until each is read.
#[derive(serde::Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    leads: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    custom_fields: Option<Value>,
    #[serde(default)]
    lead_statuses: Option<Value>,
}

fn push(m: &mut HashMap<Box<str>, Vec<u32>>, key: &str, i: u32) {
    let v = m.entry(key.into()).or_default();
    if v.last() != Some(&i) {
        v.push(i);
    }
}

impl Snapshot {
    /// Reads a snapshot file's bytes, indexing by the instance's key fields.
    pub fn load(bytes: &[u8], keys: &KeyConfig) -> Result<Snapshot, String> {
        let top: Top<'_> = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a simulator snapshot: {e}"))?;
        let mut reader =
            closeflow_snapshot::Reader::new(top.custom_fields.as_ref(), top.lead_statuses.as_ref());
        let mut s = Snapshot {
            keys: keys.clone(),
            types: FieldTypes::from_snapshot_fields(
                top.custom_fields.as_ref().and_then(Value::as_object),
            ),
            ..Snapshot::default()
        };
        for (i, raw) in top.leads.unwrap_or_default().into_iter().enumerate() {
            let v: Value = serde_json::from_str(raw.get())
                .map_err(|e| format!("leads[{i}] is not valid JSON: {e}"))?;
            let canonical = reader.lead(i, &v)?;
            let (lead, contacts) = crate::state::records_of(&canonical)
                .ok_or_else(|| format!("leads[{i}] could not be read"))?;
            s.add(&lead, &contacts);
        }
        s.leads.shrink_to_fit();
        Ok(s)
    }

    /// A snapshot already parsed (tests, small files).
    pub fn from_value(v: &Value, keys: &KeyConfig) -> Result<Snapshot, String> {
        Snapshot::load(v.to_string().as_bytes(), keys)
    }

    fn add(&mut self, lead: &Lead, contacts: &[Contact]) {
        let i = u32::try_from(self.leads.len()).unwrap_or(u32::MAX);
        if let Some(v) = self
            .keys
            .company_field
            .as_deref()
            .and_then(|f| lead.custom_text(f))
        {
            push(&mut self.by_company, &v, i);
        }
        for c in contacts {
            if let Some(v) = self
                .keys
                .user_field
                .as_deref()
                .and_then(|f| c.custom_text(f))
            {
                push(&mut self.by_user, &v, i);
            }
            for e in c.email_texts() {
                push(&mut self.by_email, &norm_email(&e), i);
            }
        }
        let text = crate::state::lead_json(lead, contacts.iter()).to_string();
        self.leads.push(text.into_boxed_str());
    }

    pub fn len(&self) -> usize {
        self.leads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.leads.is_empty()
    }
    pub fn types(&self) -> &FieldTypes {
        &self.types
    }

    fn read(&self, i: u32) -> Option<(Lead, Vec<Contact>)> {
        let v: Value = serde_json::from_str(self.leads.get(i as usize)?).ok()?;
        crate::state::records_of(&v)
    }

    /// Candidate leads for a request: from the index when it is on an indexed field, else every
    /// lead (a field the snapshot was not indexed by; correct, only slower).
    fn candidates(&self, r: &LookupRequest) -> Vec<u32> {
        let all = || (0..u32::try_from(self.leads.len()).unwrap_or(u32::MAX)).collect();
        let indexed = |index: &HashMap<Box<str>, Vec<u32>>, by: &Option<String>, field, key| {
            if by.as_deref() == Some(field) {
                index.get(key).cloned().unwrap_or_default()
            } else {
                all()
            }
        };
        match r {
            LookupRequest::LeadsByCompany { field, value } => {
                indexed(&self.by_company, &self.keys.company_field, field.as_str(), value.as_str())
            }
            LookupRequest::ContactsByUser { field, value } => {
                indexed(&self.by_user, &self.keys.user_field, field.as_str(), value.as_str())
            }
            LookupRequest::ContactsByEmail { email } => self
                .by_email
                .get(norm_email(email).as_str())
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// What Close's searches would return: exactly matching records, and the contacts' leads.
    pub fn lookup(&self, reqs: &[LookupRequest]) -> Found {
        let mut f = Found {
            types: self.types.clone(),
            ..Found::default()
        };
        let mut parsed: HashMap<u32, (Lead, Vec<Contact>)> = HashMap::new();
        for r in reqs {
            for i in self.candidates(r) {
                if !parsed.contains_key(&i) {
                    match self.read(i) {
                        Some(rec) => parsed.insert(i, rec),
                        None => continue,
                    };
                }
                let (lead, contacts) = &parsed[&i];
                match r {
                    LookupRequest::LeadsByCompany { field, value } => {
                        if lead.custom_text(field).as_deref() == Some(value.as_str())
                            && !f.leads_by_company.iter().any(|x| x.id == lead.id)
                        {
                            f.leads_by_company.push(lead.clone());
                        }
                    }
                    LookupRequest::ContactsByUser { field, value } => {
                        for c in contacts
                            .iter()
                            .filter(|c| c.custom_text(field).as_deref() == Some(value.as_str()))
                        {
                            f.add_contact(c.clone());
                            f.add_lead(lead.clone());
                        }
                    }
                    LookupRequest::ContactsByEmail { email } => {
                        for c in contacts.iter().filter(|c| c.has_email(email)) {
                            f.add_contact(c.clone());
                            f.add_lead(lead.clone());
                        }
                    }
                }
            }
        }
        f
    }
}
