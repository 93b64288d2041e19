//! A simulator snapshot as a read-only source for `dry-run` and `diff --against sim:`, sized for large
//! snapshots: each lead (with its contacts) is kept as compact JSON text holding only what the
//! planner reads, and indexed by the Company ID and User ID fields of the instances it serves
//! and by normalised email; a lookup parses only the leads it finds. Reading goes lead by lead through the one reading the simulator uses
//! (`closeflow_snapshot`), so the parsed snapshot is never held whole.

use crate::lookup::{LookupRequest, LookupResults};
use crate::model::{Contact, KeyConfig, Lead, norm_email};
use crate::stored::FieldTypes;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Snapshot {
    leads: Texts,
    /// Leads by a lead custom field's text, for each Company ID field indexed.
    by_company: HashMap<String, Index>,
    /// Leads by a contact custom field's text, for each User ID field indexed.
    by_user: HashMap<String, Index>,
    by_email: Index,
    types: FieldTypes,
}

/// The leads' texts, end to end in large blocks (a lead never spans two): one allocation per
/// block rather than per lead, so a large snapshot costs its text and 12 bytes a lead.
#[derive(Debug, Default)]
struct Texts {
    blocks: Vec<String>,
    /// Block, start and end of each text.
    at: Vec<(u32, u32, u32)>,
}

const BLOCK: usize = 1 << 20;

impl Texts {
    fn push(&mut self, text: &str) {
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= text.len());
        if !fits {
            self.blocks
                .push(String::with_capacity(BLOCK.max(text.len())));
        }
        let n = self.blocks.len() - 1;
        let b = &mut self.blocks[n];
        let start = b.len();
        b.push_str(text);
        let to_u32 = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        self.at.push((to_u32(n), to_u32(start), to_u32(b.len())));
    }
    fn get(&self, i: usize) -> Option<&str> {
        let (b, start, end) = *self.at.get(i)?;
        self.blocks
            .get(b as usize)?
            .get(start as usize..end as usize)
    }
    fn len(&self) -> usize {
        self.at.len()
    }
    fn shrink_to_fit(&mut self) {
        if let Some(b) = self.blocks.last_mut() {
            b.shrink_to_fit();
        }
        self.at.shrink_to_fit();
    }
}

use crate::hash_index::{Index, get as slots_of};

fn push(m: &mut Index, key: &str, i: u32) {
    crate::hash_index::add(m, key, i, true);
}

impl Snapshot {
    /// Reads a snapshot file's bytes, indexing by one instance's key fields.
    pub fn load(bytes: &[u8], keys: &KeyConfig) -> Result<Snapshot, String> {
        Snapshot::read(bytes, std::slice::from_ref(keys))
    }

    /// Reads a snapshot as a stream, lead by lead: neither the file nor its parsed form is
    /// held whole. (Leads listed before `custom_fields` and `lead_statuses`, which a lead's
    /// reading needs, are kept as raw text until the end.) Indexed by the key fields of every
    /// instance in `keys` (those it will serve); a lookup on another field reads every lead.
    pub fn read(input: impl std::io::Read, keys: &[KeyConfig]) -> Result<Snapshot, String> {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
            1 << 16,
            input,
        ));
        let mut snapshot = Snapshot::default();
        for k in keys {
            if let Some(f) = &k.company_field {
                snapshot.by_company.entry(f.clone()).or_default();
            }
            if let Some(f) = &k.user_field {
                snapshot.by_user.entry(f.clone()).or_default();
            }
        }
        let mut b = Builder {
            snapshot,
            custom_fields: None,
            lead_statuses: None,
            reader: None,
            waiting: Vec::new(),
            index: 0,
            error: None,
        };
        let read = serde::de::DeserializeSeed::deserialize(&mut b, &mut de);
        if let Some(e) = b.error.take() {
            return Err(e);
        }
        read.map_err(|e| format!("not a simulator snapshot: {e}"))?;
        de.end()
            .map_err(|e| format!("not a simulator snapshot: {e}"))?;
        b.start();
        for (i, raw) in std::mem::take(&mut b.waiting) {
            let v: Value = serde_json::from_str(raw.get())
                .map_err(|e| format!("leads[{i}] is not valid JSON: {e}"))?;
            b.lead(i, &v)?;
        }
        let mut s = b.snapshot;
        s.types =
            FieldTypes::from_snapshot_fields(b.custom_fields.as_ref().and_then(Value::as_object));
        s.leads.shrink_to_fit();
        Ok(s)
    }

    /// A snapshot already parsed (tests, small files).
    pub fn from_value(v: &Value, keys: &KeyConfig) -> Result<Snapshot, String> {
        Snapshot::load(v.to_string().as_bytes(), keys)
    }

    fn add(&mut self, lead: &Lead, contacts: &[Contact]) {
        let i = u32::try_from(self.leads.len()).unwrap_or(u32::MAX);
        for (f, index) in &mut self.by_company {
            if let Some(v) = lead.custom_text(f) {
                push(index, &v, i);
            }
        }
        for c in contacts {
            for (f, index) in &mut self.by_user {
                if let Some(v) = c.custom_text(f) {
                    push(index, &v, i);
                }
            }
            for e in c.email_texts() {
                push(&mut self.by_email, &norm_email(&e), i);
            }
        }
        let mut v = crate::state::lead_json(lead, contacts.iter());
        compact(&mut v);
        self.leads.push(&v.to_string());
    }

    pub fn len(&self) -> usize {
        self.leads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.leads.len() == 0
    }
    pub fn types(&self) -> &FieldTypes {
        &self.types
    }

    fn record(&self, i: u32) -> Option<(Lead, Vec<Contact>)> {
        let mut v: Value = serde_json::from_str(self.leads.get(i as usize)?).ok()?;
        expand(&mut v);
        crate::state::records_of(&v)
    }

    /// Candidate leads for a request: from the index when it is on an indexed field, else every
    /// lead (a field the snapshot was not indexed by; correct, only slower).
    fn candidates(&self, r: &LookupRequest) -> Vec<u32> {
        let all = || (0..u32::try_from(self.leads.len()).unwrap_or(u32::MAX)).collect();
        let at = |index: &Index, key: &str| slots_of(index, key);
        match r {
            LookupRequest::LeadsByCompany { field, value } => match self.by_company.get(field) {
                Some(index) => at(index, value),
                None => all(),
            },
            LookupRequest::ContactsByUser { field, value } => match self.by_user.get(field) {
                Some(index) => at(index, value),
                None => all(),
            },
            LookupRequest::ContactsByEmail { email } => at(&self.by_email, &norm_email(email)),
        }
    }

    /// What Close's searches would return: exactly matching records, and the contacts' leads.
    pub fn lookup(&self, reqs: &[LookupRequest]) -> LookupResults {
        let mut f = LookupResults {
            types: self.types.clone(),
            ..LookupResults::default()
        };
        let mut parsed: HashMap<u32, (Lead, Vec<Contact>)> = HashMap::new();
        for r in reqs {
            for i in self.candidates(r) {
                let (lead, contacts) = match parsed.entry(i) {
                    std::collections::hash_map::Entry::Occupied(o) => &*o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match self.record(i) {
                        Some(rec) => &*v.insert(rec),
                        None => continue,
                    },
                };
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

/// Streams a snapshot's top-level object into a [`Snapshot`].
struct Builder {
    snapshot: Snapshot,
    custom_fields: Option<Value>,
    lead_statuses: Option<Value>,
    /// Set once the leads can be read (`custom_fields` and `lead_statuses` seen, or the end).
    reader: Option<closeflow_snapshot::Reader>,
    waiting: Vec<(usize, Box<RawValue>)>,
    index: usize,
    /// A lead that could not be read (the first one), reported as it is.
    error: Option<String>,
}

impl Builder {
    fn start(&mut self) {
        if self.reader.is_none() {
            self.reader = Some(closeflow_snapshot::Reader::new(
                self.custom_fields.as_ref(),
                self.lead_statuses.as_ref(),
            ));
        }
    }
    fn lead(&mut self, i: usize, v: &Value) -> Result<(), String> {
        self.start();
        let reader = self.reader.as_mut().ok_or("no reader")?;
        let canonical = reader.lead(i, v)?;
        let (lead, contacts) = crate::state::records_of(&canonical)
            .ok_or_else(|| format!("leads[{i}] could not be read"))?;
        self.snapshot.add(&lead, &contacts);
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut Builder {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut Builder {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a simulator snapshot (a JSON object with `leads`)")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "custom_fields" => self.custom_fields = Some(map.next_value()?),
                "lead_statuses" => self.lead_statuses = Some(map.next_value()?),
                "leads" => map.next_value_seed(Leads(&mut *self))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `leads` list, read one lead at a time.
struct Leads<'a>(&'a mut Builder);

impl<'de> serde::de::DeserializeSeed<'de> for Leads<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leads<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("`leads`, a list of leads")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        let ready = b.custom_fields.is_some() && b.lead_statuses.is_some();
        if ready {
            b.start();
        }
        loop {
            let i = b.index;
            if b.reader.is_some() {
                let Some(v) = seq.next_element::<Value>()? else {
                    break;
                };
                if let Err(e) = b.lead(i, &v) {
                    b.error.get_or_insert(e.clone());
                    return Err(serde::de::Error::custom(e));
                }
            } else {
                let Some(raw) = seq.next_element::<Box<RawValue>>()? else {
                    break;
                };
                b.waiting.push((i, raw));
            }
            b.index += 1;
        }
        Ok(())
    }
}

/// The default `type` of each list's entries (the canonical reading gives every entry one).
const LISTS: [(&str, &str); 3] = [("emails", "office"), ("phones", "office"), ("urls", "url")];

/// Drops what [`expand`] puts back: empty text and lists, contacts' `lead_id` (the lead they
/// are nested in) and list entries' default `type`. About a sixth of a lead's text.
fn compact(lead: &mut Value) {
    fn empties(m: &mut serde_json::Map<String, Value>) {
        // Custom fields keep `""` (a value Close stores); the rest default to empty.
        m.retain(|k, v| {
            k.starts_with("custom.")
                || !(matches!(v, Value::Null) || v == "" || v == &Value::Array(vec![]))
        });
    }
    let Some(l) = lead.as_object_mut() else {
        return;
    };
    for c in l
        .get_mut("contacts")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        c.remove("lead_id");
        for (list, default) in LISTS {
            for e in c
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                if e.get("type").and_then(Value::as_str) == Some(default) {
                    e.remove("type");
                }
            }
        }
        empties(c);
    }
    empties(l);
}

fn expand(lead: &mut Value) {
    let Some(l) = lead.as_object_mut() else {
        return;
    };
    let id = l.get("id").cloned().unwrap_or(Value::Null);
    for c in l
        .get_mut("contacts")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        c.insert("lead_id".into(), id.clone());
        for (list, default) in LISTS {
            for e in c
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                e.entry("type").or_insert_with(|| Value::from(default));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leads_read_back_as_they_were_stored() {
        let snap = json!({"leads": [
            {"id": "l1", "name": "Acme", "status_id": "stat_x", "date_created": "2026-01-01T00:00:00Z",
             "custom.cf_company": "c1", "custom.cf_empty": "",
             "contacts": [{"id": "c1", "emails": [{"email": "a@x.com", "type": "home"}, "b@x.com"],
                           "phones": [{"phone": "1", "type": "office"}], "custom.cf_user": "u1"}]}]});
        let keys = KeyConfig {
            company_field: Some("cf_company".into()),
            user_field: Some("cf_user".into()),
        };
        let s = Snapshot::from_value(&snap, &keys).unwrap();
        let want = crate::state::State::from_snapshot(&snap).unwrap();
        let (lead, contacts) = s.record(0).unwrap();
        assert_eq!(&lead, &want.leads()[0]);
        assert_eq!(contacts, want.contacts().to_vec());
        for req in [
            LookupRequest::LeadsByCompany {
                field: "cf_company".into(),
                value: "c1".into(),
            },
            LookupRequest::ContactsByUser {
                field: "cf_user".into(),
                value: "u1".into(),
            },
            LookupRequest::ContactsByEmail {
                email: " B@X.com".into(),
            },
        ] {
            let found = s.lookup(std::slice::from_ref(&req));
            assert_eq!(found, want.lookup(std::slice::from_ref(&req)), "{req:?}");
        }
        assert_eq!(
            s.lookup(&[LookupRequest::ContactsByEmail {
                email: "z@x.com".into()
            }])
            .contacts,
            vec![]
        );
    }

    #[test]
    fn several_instances_keys_are_indexed_and_others_are_read_in_full() {
        let snap = json!({"leads": [
            {"id": "l1", "name": "Acme", "custom.cf_a": "x", "custom.cf_b": "y",
             "contacts": [{"id": "c1", "custom.cf_u": "u1", "custom.cf_v": "v1"}]},
            {"id": "l2", "name": "Beta", "custom.cf_a": "y", "custom.cf_b": "x"}]});
        let keys = [
            KeyConfig {
                company_field: Some("cf_a".into()),
                user_field: Some("cf_u".into()),
            },
            KeyConfig {
                company_field: Some("cf_b".into()),
                user_field: None,
            },
        ];
        let s = Snapshot::read(snap.to_string().as_bytes(), &keys).unwrap();
        assert_eq!(s.by_company.len(), 2);
        assert_eq!(s.by_user.len(), 1);
        let want = crate::state::State::from_snapshot(&snap).unwrap();
        for (field, value) in [("cf_a", "x"), ("cf_b", "x"), ("cf_a", "y"), ("cf_b", "z")] {
            let req = LookupRequest::LeadsByCompany {
                field: field.into(),
                value: value.into(),
            };
            let found = s.lookup(std::slice::from_ref(&req));
            assert_eq!(found, want.lookup(std::slice::from_ref(&req)), "{req:?}");
        }
        // Indexed (cf_u) and not (cf_v): the same answer.
        for field in ["cf_u", "cf_v"] {
            let req = LookupRequest::ContactsByUser {
                field: field.into(),
                value: if field == "cf_u" { "u1" } else { "v1" }.into(),
            };
            let found = s.lookup(std::slice::from_ref(&req));
            assert_eq!(found.contacts.len(), 1, "{req:?}");
            assert_eq!(found, want.lookup(std::slice::from_ref(&req)), "{req:?}");
        }
    }
}
