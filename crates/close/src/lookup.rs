//! What an event needs to know about Close before it can be planned, as plain data.
//!
//! A read port ([`crate::port::ReadPort`]; over HTTP, `closeflow-close-api`'s searcher sends one
//! `or` search for the keys of many events, its live cache coalesces and caches them) hands the
//! records back as [`LookupResults`]. The planner filters them exactly itself, so near matches from
//! Close's word search never reach a decision.

use crate::model::{Contact, KeyConfig, Lead};
use crate::payload::Payload;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LookupRequest {
    LeadsByCompany { field: String, value: String },
    ContactsByUser { field: String, value: String },
    ContactsByEmail { email: String },
}

/// The three lookup keys of an event, after the settings have had their say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub company: Option<String>,
    pub user: Option<String>,
    pub email: Option<String>,
}

/// A key given without the custom-field setting that would make it usable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

pub fn keys(cfg: &KeyConfig, p: &Payload) -> (Keys, Vec<Warning>) {
    let mut warnings = Vec::new();
    let mut key = |given: &Option<String>,
                   setting: &Option<String>,
                   code: &'static str,
                   what: &str,
                   name: &str| match (given, setting) {
        (Some(v), Some(_)) => Some(v.clone()),
        (Some(_), None) => {
            warnings.push(Warning {
                code,
                message: format!(
                    "{what} was given but the setting {name} is empty, so it was ignored"
                ),
            });
            None
        }
        _ => None,
    };
    let company = key(
        &p.lead_external_id,
        &cfg.company_field,
        "company_id_without_setting",
        "Lead Company ID",
        crate::schema::COMPANY_SETTING,
    );
    let user = key(
        &p.contact_external_id,
        &cfg.user_field,
        "user_id_without_setting",
        "Contact User ID",
        crate::schema::USER_SETTING,
    );
    let email = p
        .contact_email
        .as_ref()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    (
        Keys {
            company,
            user,
            email,
        },
        warnings,
    )
}

pub fn requests(cfg: &KeyConfig, p: &Payload) -> Vec<LookupRequest> {
    let (k, _) = keys(cfg, p);
    let mut out = Vec::new();
    if let (Some(v), Some(f)) = (k.company, &cfg.company_field) {
        out.push(LookupRequest::LeadsByCompany {
            field: f.clone(),
            value: v,
        });
    }
    if let (Some(v), Some(f)) = (k.user, &cfg.user_field) {
        out.push(LookupRequest::ContactsByUser {
            field: f.clone(),
            value: v,
        });
    }
    if let Some(e) = k.email {
        out.push(LookupRequest::ContactsByEmail { email: e });
    }
    out
}

/// What the lookups returned: candidate records, not yet filtered exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookupResults {
    pub leads_by_company: Vec<Lead>,
    /// Contacts found by user id or email (each at most once).
    pub contacts: Vec<Contact>,
    /// The leads those contacts belong to.
    pub leads: Vec<Lead>,
    /// The organisation's custom field types, to compare values as Close stores them.
    pub types: crate::stored::FieldTypes,
}

impl LookupResults {
    pub fn add_contact(&mut self, c: Contact) {
        if !self.contacts.iter().any(|x| x.id == c.id) {
            self.contacts.push(c);
        }
    }
    pub fn add_lead(&mut self, l: Lead) {
        if !self.leads.iter().any(|x| x.id == l.id) {
            self.leads.push(l);
        }
    }
    /// Ids of the contacts' leads that are not known yet (the second lookup round).
    pub fn missing_lead_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .contacts
            .iter()
            .map(|c| c.lead_id.clone())
            .filter(|id| !id.is_empty() && !self.leads.iter().any(|l| &l.id == id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
