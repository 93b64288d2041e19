//! A dry-run's overlay: what the run would have created or changed so far, and nothing it only
//! read (the source answers for that). Kept compactly, for runs of many events over large
//! snapshots: each record as its JSON text without empty fields (a contact with its lead's id),
//! indexed by the hashes of its lookup keys (the tracked Company ID and User ID fields, and
//! normalised emails); a lookup parses only the records it lands on.
//!
//! An event is planned over a small [`State`], its view: the records the source found, each in
//! the overlay's version where the run changed it, and the overlay's records that match its
//! lookups (created by the run, or changed to match). The plan is applied to that view, and the
//! records it wrote (with the lead of each contact written) are stored back.

use crate::lookup::{LookupRequest, LookupResults};
use crate::model::{Contact, KeyConfig, Lead, custom_text_of, norm_email};
use crate::plan::{Object, Plan, StepKind};
use crate::state::{State, contact_json, lead_json};
use crate::stored::FieldTypes;
use serde_json::Value;
use std::collections::HashMap;

use crate::hash_index::{Index, get as slots, remove};

/// The overlay adds records in any order (an update re-adds one it holds).
fn add(index: &mut Index, key: &str, i: u32) {
    crate::hash_index::add(index, key, i, false);
}

/// A record's JSON without what reads back the same when absent (empty text and lists, null).
fn text(mut v: Value) -> Box<str> {
    if let Value::Object(m) = &mut v {
        m.retain(|k, v| {
            k.starts_with("custom.") || !(v.is_null() || v == "" || v == &Value::Array(vec![]))
        });
    }
    v.to_string().into_boxed_str()
}

fn lead_text(l: &Lead) -> Box<str> {
    text(lead_json(l, std::iter::empty()))
}

#[derive(Debug, Default)]
pub struct Overlay {
    leads: Vec<Box<str>>,
    contacts: Vec<Box<str>>,
    lead_at: HashMap<Box<str>, u32>,
    contact_at: HashMap<Box<str>, u32>,
    /// Leads by each tracked lead custom field's text.
    lead_custom: HashMap<String, Index>,
    /// Contacts by each tracked contact custom field's text.
    contact_custom: HashMap<String, Index>,
    by_email: Index,
    types: FieldTypes,
    /// Numbers the records plans create, as [`State::apply`] does.
    seq: u64,
}

impl Overlay {
    /// Indexes the custom fields that hold these lookup keys.
    pub fn track_keys(&mut self, cfg: &KeyConfig) {
        if let Some(f) = &cfg.company_field
            && !self.lead_custom.contains_key(f)
        {
            let mut index = Index::new();
            for (i, l) in self.leads.iter().enumerate() {
                if let Some(t) = read_lead(l).and_then(|l| l.custom_text(f)) {
                    add(&mut index, &t, slot(i));
                }
            }
            self.lead_custom.insert(f.clone(), index);
        }
        if let Some(f) = &cfg.user_field
            && !self.contact_custom.contains_key(f)
        {
            let mut index = Index::new();
            for (i, c) in self.contacts.iter().enumerate() {
                if let Some(t) = read_contact(c).and_then(|c| c.custom_text(f)) {
                    add(&mut index, &t, slot(i));
                }
            }
            self.contact_custom.insert(f.clone(), index);
        }
    }

    pub fn lead(&self, id: &str) -> Option<Lead> {
        read_lead(&self.leads[*self.lead_at.get(id)? as usize])
    }
    pub fn contact(&self, id: &str) -> Option<Contact> {
        read_contact(&self.contacts[*self.contact_at.get(id)? as usize])
    }

    /// Every record held, as a [`State`] (for tests and inspection).
    pub fn to_state(&self) -> State {
        State::new(
            self.leads.iter().filter_map(|t| read_lead(t)).collect(),
            self.contacts
                .iter()
                .filter_map(|t| read_contact(t))
                .collect(),
        )
    }

    /// The overlay's records that may answer these requests (checked exactly by the view).
    fn candidates(&self, reqs: &[LookupRequest]) -> (Vec<u32>, Vec<u32>) {
        let (mut leads, mut contacts) = (Vec::new(), Vec::new());
        let all = |n: usize| (0..n).map(slot).collect::<Vec<u32>>();
        for r in reqs {
            match r {
                LookupRequest::LeadsByCompany { field, value } => {
                    leads.extend(match self.lead_custom.get(field) {
                        Some(index) => slots(index, value),
                        None => all(self.leads.len()),
                    });
                }
                LookupRequest::ContactsByUser { field, value } => {
                    contacts.extend(match self.contact_custom.get(field) {
                        Some(index) => slots(index, value),
                        None => all(self.contacts.len()),
                    });
                }
                LookupRequest::ContactsByEmail { email } => {
                    contacts.extend(slots(&self.by_email, &norm_email(email)));
                }
            }
        }
        leads.sort_unstable();
        leads.dedup();
        contacts.sort_unstable();
        contacts.dedup();
        (leads, contacts)
    }

    /// What a dry-run's lookup sees (see the module's documentation), and the view it was read
    /// from, which [`Overlay::apply`] applies the plan to.
    pub fn lookup_over(
        &mut self,
        found: &LookupResults,
        reqs: &[LookupRequest],
    ) -> (LookupResults, State) {
        if self.types.is_empty() && !found.types.is_empty() {
            self.types = found.types.clone();
        }
        let mut view = State::default();
        view.set_types(self.types.clone());
        view.track_fields(
            self.lead_custom.keys().cloned(),
            self.contact_custom.keys().cloned(),
        );
        for l in found.leads_by_company.iter().chain(&found.leads) {
            let mine = self.lead(&l.id);
            view.add_lead(mine.unwrap_or_else(|| l.clone()));
        }
        for c in &found.contacts {
            let c = self.contact(&c.id).unwrap_or_else(|| c.clone());
            if let Some(l) = self.lead(&c.lead_id) {
                view.add_lead(l);
            }
            view.add_contact(c);
        }
        let (leads, contacts) = self.candidates(reqs);
        for i in leads {
            if let Some(l) = read_lead(&self.leads[i as usize]) {
                view.add_lead(l);
            }
        }
        for i in contacts {
            if let Some(c) = read_contact(&self.contacts[i as usize]) {
                if let Some(l) = self.lead(&c.lead_id) {
                    view.add_lead(l);
                }
                view.add_contact(c);
            }
        }
        (view.lookup(reqs), view)
    }

    /// Applies a plan made over `view` (from [`Overlay::lookup_over`]) and keeps the records it
    /// wrote, each contact's lead with it; returns the ids given to created records, in order.
    pub fn apply(&mut self, plan: &Plan, mut view: State) -> Vec<String> {
        view.set_seq(self.seq);
        let created = view.apply(plan);
        self.seq = view.seq();
        let keep_contact = |this: &mut Overlay, id: &str| {
            if let Some(c) = view.contact(id) {
                if !this.lead_at.contains_key(c.lead_id.as_str())
                    && let Some(l) = view.lead(&c.lead_id)
                {
                    this.store_lead(l);
                }
                this.store_contact(c);
            }
        };
        for s in plan.writes() {
            match (s.kind, s.object) {
                (StepKind::UpdateLead, _) => {
                    if let Some(l) = s.id.as_deref().and_then(|id| view.lead(id)) {
                        self.store_lead(l);
                    }
                }
                (StepKind::UpdateContact, Object::Contact) => {
                    if let Some(id) = s.id.as_deref() {
                        keep_contact(self, id);
                    }
                }
                (StepKind::CreateContact, _) if !s.nested => {
                    if let Some(id) = s.lead_id.as_deref()
                        && !self.lead_at.contains_key(id)
                        && let Some(l) = view.lead(id)
                    {
                        self.store_lead(l);
                    }
                }
                _ => {}
            }
        }
        for id in &created {
            if let Some(l) = view.lead(id) {
                self.store_lead(l);
            } else {
                keep_contact(self, id);
            }
        }
        created
    }

    fn lead_keys(&self, l: &Lead) -> Vec<(String, String)> {
        self.lead_custom
            .keys()
            .filter_map(|f| Some((f.clone(), l.custom_text(f)?)))
            .collect()
    }

    fn contact_keys(&self, c: &Contact) -> (Vec<(String, String)>, Vec<String>) {
        let custom = self
            .contact_custom
            .keys()
            .filter_map(|f| Some((f.clone(), custom_text_of(&c.custom, f)?)))
            .collect();
        let emails = c.email_texts().iter().map(|e| norm_email(e)).collect();
        (custom, emails)
    }

    fn store_lead(&mut self, l: &Lead) {
        let i = match self.lead_at.get(l.id.as_str()) {
            Some(&i) => {
                if let Some(old) = read_lead(&self.leads[i as usize]) {
                    for (f, t) in self.lead_keys(&old) {
                        if let Some(index) = self.lead_custom.get_mut(&f) {
                            remove(index, &t, i);
                        }
                    }
                }
                self.leads[i as usize] = lead_text(l);
                i
            }
            None => {
                let i = slot(self.leads.len());
                self.leads.push(lead_text(l));
                self.lead_at.insert(l.id.as_str().into(), i);
                i
            }
        };
        for (f, t) in self.lead_keys(l) {
            if let Some(index) = self.lead_custom.get_mut(&f) {
                add(index, &t, i);
            }
        }
    }

    fn store_contact(&mut self, c: &Contact) {
        let i = match self.contact_at.get(c.id.as_str()) {
            Some(&i) => {
                if let Some(old) = read_contact(&self.contacts[i as usize]) {
                    let (custom, emails) = self.contact_keys(&old);
                    for (f, t) in custom {
                        if let Some(index) = self.contact_custom.get_mut(&f) {
                            remove(index, &t, i);
                        }
                    }
                    for e in emails {
                        remove(&mut self.by_email, &e, i);
                    }
                }
                self.contacts[i as usize] = text(contact_json(c));
                i
            }
            None => {
                let i = slot(self.contacts.len());
                self.contacts.push(text(contact_json(c)));
                self.contact_at.insert(c.id.as_str().into(), i);
                i
            }
        };
        let (custom, emails) = self.contact_keys(c);
        for (f, t) in custom {
            if let Some(index) = self.contact_custom.get_mut(&f) {
                add(index, &t, i);
            }
        }
        for e in emails {
            add(&mut self.by_email, &e, i);
        }
    }
}

fn slot(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn read_lead(text: &str) -> Option<Lead> {
    Lead::from_api(&serde_json::from_str(text).ok()?)
}

fn read_contact(text: &str) -> Option<Contact> {
    Contact::from_api(&serde_json::from_str(text).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_read_back_as_they_were_stored() {
        let snap = json!({"leads": [
            {"id": "l1", "name": "Acme", "status_id": "stat_x", "date_created": "2026-01-01T00:00:00Z",
             "custom.cf_company": "c1", "custom.cf_empty": "",
             "contacts": [{"id": "c1", "title": "", "emails": [{"email": "a@x.com", "type": "home"}, "b@x.com"],
                           "phones": [{"phone": "1", "type": "office"}], "custom.cf_user": "u1"}]}]});
        let state = State::from_snapshot(&snap).unwrap();
        let mut o = Overlay::default();
        o.track_keys(&KeyConfig {
            company_field: Some("cf_company".into()),
            user_field: Some("cf_user".into()),
        });
        o.store_lead(&state.leads()[0]);
        o.store_contact(&state.contacts()[0]);
        assert_eq!(o.to_state(), state);
        let reqs = [
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
        ];
        for r in &reqs {
            let (seen, _) = o.lookup_over(&LookupResults::default(), std::slice::from_ref(r));
            assert_eq!(seen, state.lookup(std::slice::from_ref(r)), "{r:?}");
        }
        // A changed key is found by its new value only.
        let mut c = state.contacts()[0].clone();
        c.custom.insert("cf_user".into(), json!("u2"));
        c.emails = vec![json!({"email": "z@x.com"})];
        o.store_contact(&c);
        let by = |user: &str| LookupRequest::ContactsByUser {
            field: "cf_user".into(),
            value: user.into(),
        };
        assert!(
            o.lookup_over(&LookupResults::default(), &[by("u1")])
                .0
                .contacts
                .is_empty()
        );
        assert_eq!(
            o.lookup_over(&LookupResults::default(), &[by("u2")])
                .0
                .contacts,
            vec![c]
        );
        let email = LookupRequest::ContactsByEmail {
            email: "a@x.com".into(),
        };
        assert!(
            o.lookup_over(&LookupResults::default(), &[email])
                .0
                .contacts
                .is_empty()
        );
    }
}
