//! The decision: (key settings, payload, what the lookups found) → plan. Pure; every rule of
//! the action (keys, lookup, permission flags, what an update writes) lives here once.
//!
//! This file holds the plan's types and the decisions in their order (lookup outcome → lead →
//! contacts); which contacts match is in `matcher`, the steps a decision yields in `update` and
//! `create`, and how their field values are formed in `fields`.

mod create;
mod fields;
mod matcher;
mod update;

use crate::lookup::{self, Keys, LookupResults, Warning};
use crate::model::{Contact, KeyConfig, Lead, by_age};
use crate::payload::Payload;
use create::{create_contact, create_lead};
use matcher::Matcher;
use serde::Serialize;
use serde_json::{Map, Value};
use update::{update_contact, update_lead};

/// Contacts updated per event at most (the oldest matches).
pub const MAX_CONTACTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    CreateLead,
    CreateContact,
    UpdateLead,
    UpdateContact,
    Unchanged,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    Lead,
    Contact,
}

impl StepKind {
    /// The name a step's `kind` is serialized as.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::CreateLead => "create_lead",
            StepKind::CreateContact => "create_contact",
            StepKind::UpdateLead => "update_lead",
            StepKind::UpdateContact => "update_contact",
            StepKind::Unchanged => "unchanged",
            StepKind::Skipped => "skipped",
        }
    }
}

impl Object {
    /// The name a step's `object` is serialized as.
    pub fn as_str(self) -> &'static str {
        match self {
            Object::Lead => "lead",
            Object::Contact => "contact",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub kind: StepKind,
    pub object: Object,
    /// The record's id; `None` for one to be created (or not created).
    pub id: Option<String>,
    /// For contacts: the lead they are (or would be) under; `None` for a lead created by this step.
    pub lead_id: Option<String>,
    pub reason: Option<String>,
    pub changes: Vec<Change>,
    /// A human name for the record (lead name, contact name or email).
    pub label: Option<String>,
    /// The request body to send, in the API's shape (empty for unchanged and skipped steps).
    #[serde(skip)]
    pub body: Map<String, Value>,
    /// A contact created inside its new lead's `POST /lead/` (no request of its own).
    #[serde(skip)]
    pub nested: bool,
}

impl Step {
    pub fn is_write(&self) -> bool {
        matches!(
            self.kind,
            StepKind::CreateLead
                | StepKind::CreateContact
                | StepKind::UpdateLead
                | StepKind::UpdateContact
        )
    }
    fn skipped(
        object: Object,
        id: Option<String>,
        lead_id: Option<String>,
        reason: &str,
        label: Option<String>,
    ) -> Step {
        Step {
            kind: StepKind::Skipped,
            object,
            id,
            lead_id,
            reason: Some(reason.to_string()),
            changes: vec![],
            label,
            body: Map::new(),
            nested: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub warnings: Vec<Warning>,
    /// Leads whose Company ID matched (more than one: the oldest was used).
    pub leads_matched: usize,
    /// Contacts that matched the event.
    pub contacts_matched: usize,
    /// Matching contacts left untouched because only the 10 oldest are updated.
    pub contacts_left: usize,
}

impl Plan {
    pub fn writes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.is_write())
    }
}

/// Plans one event. `found` may hold near matches and unrelated records; only exact matches
/// count.
pub fn plan(cfg: &KeyConfig, p: &Payload, found: &LookupResults) -> Plan {
    let (keys, warnings) = lookup::keys(cfg, p);
    let mut out = Plan {
        warnings,
        ..Plan::default()
    };
    let has_contact_key = keys.user.is_some() || keys.email.is_some();
    if keys.company.is_none() && !has_contact_key {
        out.steps.push(Step::skipped(
            Object::Contact,
            None,
            None,
            "no_lookup_key",
            None,
        ));
        return out;
    }
    let planner = Planner {
        cfg,
        keys: &keys,
        p,
        found,
        m: Matcher { cfg, keys: &keys },
    };

    // 1. The lead by Company ID.
    if let Some(lead) = planner.company_lead(&mut out) {
        planner.under_company_lead(&mut out, lead, has_contact_key);
        return out;
    }

    // 3. No contact key: only the lead, by Company ID (none matched above).
    if !has_contact_key {
        out.steps.extend(create_lead(cfg, &keys, p, false));
        out.steps.push(Step::skipped(
            Object::Contact,
            None,
            None,
            "no_contact_key",
            None,
        ));
        return out;
    }

    // 2. Contacts by User ID, then by email.
    planner.by_contacts(&mut out);
    out
}

/// One event's inputs, shared by the decisions [`plan`] takes in turn.
struct Planner<'a> {
    cfg: &'a KeyConfig,
    keys: &'a Keys,
    p: &'a Payload,
    found: &'a LookupResults,
    m: Matcher<'a>,
}

impl<'a> Planner<'a> {
    /// The oldest lead carrying the event's Company ID, counted (and warned about when several
    /// carry it) in `out`.
    fn company_lead(&self, out: &mut Plan) -> Option<&'a Lead> {
        let (Some(company), Some(field)) = (&self.keys.company, &self.cfg.company_field) else {
            return None;
        };
        let mut leads: Vec<&Lead> = self
            .found
            .leads_by_company
            .iter()
            .filter(|l| l.custom_text(field).as_deref() == Some(company.as_str()))
            .collect();
        by_age(&mut leads, |l| (&l.date_created, &l.id));
        leads.dedup_by(|a, b| a.id == b.id);
        let lead = *leads.first()?;
        out.leads_matched = leads.len();
        if leads.len() > 1 {
            out.warnings.push(Warning {
                code: "several_leads_for_company",
                message: format!(
                    "{} leads carry Company ID \"{company}\"; the oldest ({}) was used",
                    leads.len(),
                    lead.id
                ),
            });
        }
        Some(lead)
    }

    /// The company's lead was found: update it, then its matching contacts, or create the
    /// contact under it.
    fn under_company_lead(&self, out: &mut Plan, lead: &Lead, has_contact_key: bool) {
        let f = self.p.flags;
        out.steps.push(update_lead(
            lead,
            self.p,
            &self.found.types,
            f.allow_updating_existing_leads,
        ));
        if !has_contact_key {
            out.steps.push(Step::skipped(
                Object::Contact,
                None,
                Some(lead.id.clone()),
                "no_contact_key",
                None,
            ));
            return;
        }
        let under: Vec<&Contact> = self
            .found
            .contacts
            .iter()
            .filter(|c| c.lead_id == lead.id)
            .collect();
        let matched = self.m.select(&under);
        if matched.is_empty() {
            let dup_elsewhere = self
                .found
                .contacts
                .iter()
                .any(|c| c.lead_id != lead.id && self.m.matches(c));
            let reason = if !f.allow_creating_new_contacts {
                Some("allow_creating_new_contacts")
            } else if dup_elsewhere && !f.allow_creating_duplicate_contacts {
                Some("duplicate_contact_not_allowed")
            } else {
                None
            };
            out.steps.push(match reason {
                Some(r) => Step::skipped(
                    Object::Contact,
                    None,
                    Some(lead.id.clone()),
                    r,
                    contact_label(self.p),
                ),
                None => create_contact(self.cfg, self.keys, self.p, Some(&lead.id)),
            });
        } else {
            self.m.record(out, &matched);
            self.update_contacts(out, matched.iter().take(MAX_CONTACTS));
        }
    }

    /// No lead by Company ID: the contacts decide, by User ID then email. None matched: a new
    /// lead with its contact; matched under another company's lead: a new lead (needing a
    /// duplicate contact); else their leads and the contacts are updated.
    fn by_contacts(&self, out: &mut Plan) {
        let f = self.p.flags;
        let all: Vec<&Contact> = self.found.contacts.iter().collect();
        let matched = self.m.select(&all);
        if matched.is_empty() {
            out.steps
                .extend(create_lead(self.cfg, self.keys, self.p, true));
            return;
        }
        self.m.record(out, &matched);
        let matched: Vec<&Contact> = matched.into_iter().take(MAX_CONTACTS).collect();
        if self.keys.company.is_some() {
            // The contacts live under leads of another (or no) company: a new lead for this
            // company needs a duplicate contact.
            if f.allow_creating_duplicate_contacts {
                out.steps
                    .extend(create_lead(self.cfg, self.keys, self.p, true));
            } else {
                out.steps.push(Step::skipped(
                    Object::Lead,
                    None,
                    None,
                    "duplicate_contact_not_allowed",
                    self.p.lead_name.clone(),
                ));
                self.update_contacts(out, matched.iter());
            }
            return;
        }
        self.update_their_leads(out, &matched);
        self.update_contacts(out, matched.iter());
    }

    /// Updates each lead the matched contacts live under, once, in the contacts' order.
    fn update_their_leads(&self, out: &mut Plan, matched: &[&Contact]) {
        let allowed = self.p.flags.allow_updating_existing_leads;
        let mut lead_ids: Vec<&str> = Vec::new();
        for c in matched {
            if !lead_ids.contains(&c.lead_id.as_str()) {
                lead_ids.push(&c.lead_id);
            }
        }
        for id in lead_ids {
            match self.found.leads.iter().find(|l| l.id == id) {
                Some(lead) => out
                    .steps
                    .push(update_lead(lead, self.p, &self.found.types, allowed)),
                None => {
                    // The lead could not be read; update it blind with what the payload gives.
                    let unknown = Lead {
                        id: id.to_string(),
                        name: String::new(),
                        description: String::new(),
                        status_id: None,
                        date_created: String::new(),
                        custom: Default::default(),
                    };
                    out.steps
                        .push(update_lead(&unknown, self.p, &self.found.types, allowed));
                }
            }
        }
    }

    fn update_contacts<'c>(&self, out: &mut Plan, matched: impl Iterator<Item = &'c &'c Contact>) {
        for c in matched {
            out.steps.push(update_contact(
                self.cfg,
                self.keys,
                c,
                self.p,
                &self.found.types,
                self.p.flags.allow_updating_existing_contacts,
            ));
        }
    }
}

fn contact_label(p: &Payload) -> Option<String> {
    p.contact_name.clone().or_else(|| p.contact_email.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_names() {
        for k in [
            StepKind::CreateLead,
            StepKind::CreateContact,
            StepKind::UpdateLead,
            StepKind::UpdateContact,
            StepKind::Unchanged,
            StepKind::Skipped,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for o in [Object::Lead, Object::Contact] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
