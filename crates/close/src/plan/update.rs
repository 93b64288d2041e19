//! Update steps for records the lookups found: what a lead's or a contact's update writes, and
//! whether it is sent, shown as unchanged, or skipped by its permission flag.

use super::fields::{EMAILS, PHONES, URLS, append, customs, set, text_or_null};
use super::{Change, Object, Step, StepKind};
use crate::lookup::Keys;
use crate::model::{Contact, KeyConfig, Lead};
use crate::payload::Payload;
use crate::stored::FieldTypes;
use serde_json::{Map, Value, json};

pub(super) fn update_lead(lead: &Lead, p: &Payload, types: &FieldTypes, allowed: bool) -> Step {
    let mut changes = Vec::new();
    let mut body = Map::new();
    if let Some(n) = &p.lead_name {
        set(
            &mut changes,
            &mut body,
            "name",
            text_or_null(&lead.name),
            json!(n),
        );
    }
    if let Some(d) = &p.lead_description {
        set(
            &mut changes,
            &mut body,
            "description",
            text_or_null(&lead.description),
            json!(d),
        );
    }
    if let Some(s) = &p.lead_status_id {
        set(
            &mut changes,
            &mut body,
            "status_id",
            json!(lead.status_id),
            json!(s),
        );
    }
    customs(
        &mut changes,
        &mut body,
        &lead.custom,
        &p.lead_custom_fields,
        types,
    );
    let label = Some(lead.name.clone()).filter(|n| !n.is_empty());
    finish(
        Object::Lead,
        &lead.id,
        None,
        label,
        changes,
        body,
        allowed,
        "allow_updating_existing_leads",
    )
}

/// An update step: `unchanged` when nothing differs, `skipped` when its flag forbids it (the
/// changes it would have made are kept for display), else the write.
#[allow(clippy::too_many_arguments)]
fn finish(
    object: Object,
    id: &str,
    lead_id: Option<String>,
    label: Option<String>,
    changes: Vec<Change>,
    body: Map<String, Value>,
    allowed: bool,
    flag: &str,
) -> Step {
    let (kind, reason, body) = match (changes.is_empty(), allowed) {
        (true, _) => (StepKind::Unchanged, None, Map::new()),
        (false, false) => (StepKind::Skipped, Some(flag.to_string()), Map::new()),
        (false, true) => (
            if object == Object::Lead {
                StepKind::UpdateLead
            } else {
                StepKind::UpdateContact
            },
            None,
            body,
        ),
    };
    Step {
        kind,
        object,
        id: Some(id.to_string()),
        lead_id,
        reason,
        changes,
        label,
        body,
        nested: false,
    }
}

pub(super) fn update_contact(
    cfg: &KeyConfig,
    keys: &Keys,
    c: &Contact,
    p: &Payload,
    types: &FieldTypes,
    allowed: bool,
) -> Step {
    let mut changes = Vec::new();
    let mut body = Map::new();
    if let Some(n) = &p.contact_name {
        set(
            &mut changes,
            &mut body,
            "name",
            text_or_null(&c.name),
            json!(n),
        );
    }
    if let Some(t) = &p.contact_title {
        set(
            &mut changes,
            &mut body,
            "title",
            text_or_null(&c.title),
            json!(t),
        );
    }
    if let Some(e) = &p.contact_email {
        append(&mut changes, &mut body, &EMAILS, &c.emails, e.trim());
    }
    if let Some(ph) = &p.contact_phone {
        append(&mut changes, &mut body, &PHONES, &c.phones, ph.trim());
    }
    if let Some(u) = &p.contact_url {
        append(&mut changes, &mut body, &URLS, &c.urls, u.trim());
    }
    customs(
        &mut changes,
        &mut body,
        &c.custom,
        &p.contact_custom_fields,
        types,
    );
    if let (Some(u), Some(f)) = (&keys.user, &cfg.user_field)
        && c.custom_text(f).is_none()
    {
        let field = format!("custom.{f}");
        changes.retain(|ch| ch.field != field);
        body.insert(field.clone(), json!(u));
        changes.push(Change {
            field,
            before: c.custom.get(f).cloned().unwrap_or(Value::Null),
            after: json!(u),
        });
    }
    let label = Some(c.label()).filter(|l| !l.is_empty());
    let lead_id = Some(c.lead_id.clone());
    finish(
        Object::Contact,
        &c.id,
        lead_id,
        label,
        changes,
        body,
        allowed,
        "allow_updating_existing_contacts",
    )
}
