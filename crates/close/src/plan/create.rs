//! Create steps for records the lookups did not find: a new lead (its contact nested in the same
//! request) or a new contact under a known lead, gated by the create flags.

use super::fields::{Created, EMAILS, PHONES, URLS};
use super::{Object, Step, StepKind, contact_label};
use crate::lookup::Keys;
use crate::model::KeyConfig;
use crate::payload::Payload;
use serde_json::json;

pub(super) fn create_contact(
    cfg: &KeyConfig,
    keys: &Keys,
    p: &Payload,
    lead_id: Option<&str>,
) -> Step {
    let mut c = Created::default();
    c.text("name", &p.contact_name);
    c.text("title", &p.contact_title);
    c.list(&EMAILS, &p.contact_email);
    c.list(&PHONES, &p.contact_phone);
    c.list(&URLS, &p.contact_url);
    c.customs(
        &p.contact_custom_fields,
        keys.user.as_ref().zip(cfg.user_field.as_ref()),
    );
    if let Some(l) = lead_id {
        c.body.insert("lead_id".into(), json!(l));
    }
    Step {
        kind: StepKind::CreateContact,
        object: Object::Contact,
        id: None,
        lead_id: lead_id.map(str::to_string),
        reason: None,
        changes: c.changes,
        label: contact_label(p),
        body: c.body,
        nested: lead_id.is_none(),
    }
}

/// A new lead (with the contact nested when `with_contact`), gated by the create flags.
pub(super) fn create_lead(
    cfg: &KeyConfig,
    keys: &Keys,
    p: &Payload,
    with_contact: bool,
) -> Vec<Step> {
    let f = p.flags;
    let skip_both = |lead_reason: &str, contact_reason: &str| {
        let mut steps = vec![Step::skipped(
            Object::Lead,
            None,
            None,
            lead_reason,
            p.lead_name.clone(),
        )];
        if with_contact {
            steps.push(Step::skipped(
                Object::Contact,
                None,
                None,
                contact_reason,
                contact_label(p),
            ));
        }
        steps
    };
    if !f.allow_creating_new_leads {
        let contact_reason = if f.allow_creating_new_contacts {
            "allow_creating_new_leads"
        } else {
            "allow_creating_new_contacts"
        };
        return skip_both("allow_creating_new_leads", contact_reason);
    }
    if with_contact && !f.allow_creating_new_contacts && keys.company.is_none() {
        // A lead with no Company ID and no contact could never be found again: every later
        // event would create another one. Nothing is created (as with `no_contact_key`).
        return skip_both("allow_creating_new_contacts", "allow_creating_new_contacts");
    }
    let mut lead = Created::default();
    lead.text("name", &p.lead_name);
    lead.text("description", &p.lead_description);
    lead.text("status_id", &p.lead_status_id);
    lead.customs(
        &p.lead_custom_fields,
        keys.company.as_ref().zip(cfg.company_field.as_ref()),
    );
    let contact =
        (with_contact && f.allow_creating_new_contacts).then(|| create_contact(cfg, keys, p, None));
    if let Some(c) = &contact {
        lead.body.insert("contacts".into(), json!([c.body]));
    }
    let mut steps = vec![Step {
        kind: StepKind::CreateLead,
        object: Object::Lead,
        id: None,
        lead_id: None,
        reason: None,
        changes: lead.changes,
        label: p.lead_name.clone(),
        body: lead.body,
        nested: false,
    }];
    match contact {
        Some(c) => steps.push(c),
        None if with_contact => steps.push(Step::skipped(
            Object::Contact,
            None,
            None,
            "allow_creating_new_contacts",
            contact_label(p),
        )),
        None => {}
    }
    steps
}
