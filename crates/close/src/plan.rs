//! The decision: (key settings, payload, what the lookups found) → plan. Pure; every rule of
//! the action (keys, lookup, permission flags, what an update writes) lives here once.

use crate::lookup::{self, Found, Keys, Warning};
use crate::model::{Contact, KeyConfig, Lead, by_age, norm_email, norm_phone, norm_url};
use crate::payload::{CustomOp, Payload, custom_key};
use crate::stored::{self, FieldTypes};
use serde::Serialize;
use serde_json::{Map, Value, json};

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
pub fn plan(cfg: &KeyConfig, p: &Payload, found: &Found) -> Plan {
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
    let m = Matcher { cfg, keys: &keys };
    let f = p.flags;

    // 1. The lead by Company ID.
    if let (Some(company), Some(field)) = (&keys.company, &cfg.company_field) {
        let mut leads: Vec<&Lead> = found
            .leads_by_company
            .iter()
            .filter(|l| l.custom_text(field).as_deref() == Some(company.as_str()))
            .collect();
        by_age(&mut leads, |l| (&l.date_created, &l.id));
        leads.dedup_by(|a, b| a.id == b.id);
        if let Some(lead) = leads.first() {
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
            out.steps.push(update_lead(
                lead,
                p,
                &found.types,
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
                return out;
            }
            let under: Vec<&Contact> = found
                .contacts
                .iter()
                .filter(|c| c.lead_id == lead.id)
                .collect();
            let matched = m.select(&under);
            if matched.is_empty() {
                let dup_elsewhere = found
                    .contacts
                    .iter()
                    .any(|c| c.lead_id != lead.id && m.matches(c));
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
                        contact_label(p),
                    ),
                    None => create_contact(cfg, &keys, p, Some(&lead.id)),
                });
            } else {
                m.record(&mut out, &matched);
                for c in matched.iter().take(MAX_CONTACTS) {
                    out.steps.push(update_contact(
                        cfg,
                        &keys,
                        c,
                        p,
                        &found.types,
                        f.allow_updating_existing_contacts,
                    ));
                }
            }
            return out;
        }
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
    let all: Vec<&Contact> = found.contacts.iter().collect();
    let matched = m.select(&all);
    if matched.is_empty() {
        out.steps.extend(create_lead(cfg, &keys, p, true));
        return out;
    }
    m.record(&mut out, &matched);
    let matched: Vec<&Contact> = matched.into_iter().take(MAX_CONTACTS).collect();
    if keys.company.is_some() {
        // The contacts live under leads of another (or no) company: a new lead for this company
        // needs a duplicate contact.
        if f.allow_creating_duplicate_contacts {
            out.steps.extend(create_lead(cfg, &keys, p, true));
        } else {
            out.steps.push(Step::skipped(
                Object::Lead,
                None,
                None,
                "duplicate_contact_not_allowed",
                p.lead_name.clone(),
            ));
            for c in &matched {
                out.steps.push(update_contact(
                    cfg,
                    &keys,
                    c,
                    p,
                    &found.types,
                    f.allow_updating_existing_contacts,
                ));
            }
        }
        return out;
    }
    let mut lead_ids: Vec<&str> = Vec::new();
    for c in &matched {
        if !lead_ids.contains(&c.lead_id.as_str()) {
            lead_ids.push(&c.lead_id);
        }
    }
    for id in lead_ids {
        match found.leads.iter().find(|l| l.id == id) {
            Some(lead) => out.steps.push(update_lead(
                lead,
                p,
                &found.types,
                f.allow_updating_existing_leads,
            )),
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
                out.steps.push(update_lead(
                    &unknown,
                    p,
                    &found.types,
                    f.allow_updating_existing_leads,
                ));
            }
        }
    }
    for c in &matched {
        out.steps.push(update_contact(
            cfg,
            &keys,
            c,
            p,
            &found.types,
            f.allow_updating_existing_contacts,
        ));
    }
    out
}

struct Matcher<'a> {
    cfg: &'a KeyConfig,
    keys: &'a Keys,
}

impl Matcher<'_> {
    fn by_user(&self, c: &Contact) -> bool {
        match (&self.keys.user, &self.cfg.user_field) {
            (Some(u), Some(f)) => c.custom_text(f).as_deref() == Some(u.as_str()),
            _ => false,
        }
    }
    /// By email, excluding contacts that carry a different, non-empty User ID (another person
    /// sharing the address) when a User ID was given.
    fn by_email(&self, c: &Contact) -> bool {
        let Some(e) = &self.keys.email else {
            return false;
        };
        if !c.has_email(e) {
            return false;
        }
        match (&self.keys.user, &self.cfg.user_field) {
            (Some(u), Some(f)) => c.custom_text(f).is_none_or(|theirs| &theirs == u),
            _ => true,
        }
    }
    fn matches(&self, c: &Contact) -> bool {
        self.by_user(c) || self.by_email(c)
    }
    /// Matches by User ID, else by email; oldest first, each once.
    fn select<'c>(&self, pool: &[&'c Contact]) -> Vec<&'c Contact> {
        let mut m: Vec<&Contact> = pool.iter().copied().filter(|c| self.by_user(c)).collect();
        if m.is_empty() {
            m = pool.iter().copied().filter(|c| self.by_email(c)).collect();
        }
        by_age(&mut m, |c| (&c.date_created, &c.id));
        m.dedup_by(|a, b| a.id == b.id);
        m
    }
    fn record(&self, out: &mut Plan, matched: &[&Contact]) {
        out.contacts_matched = matched.len();
        out.contacts_left = matched.len().saturating_sub(MAX_CONTACTS);
    }
}

fn contact_label(p: &Payload) -> Option<String> {
    p.contact_name.clone().or_else(|| p.contact_email.clone())
}

fn set(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    field: &str,
    before: Value,
    after: Value,
) {
    if before != after {
        body.insert(field.to_string(), after.clone());
        changes.push(Change {
            field: field.to_string(),
            before,
            after,
        });
    }
}

fn text_or_null(s: &str) -> Value {
    Value::String(s.to_string())
}

/// The payload's custom fields against a record's: `cf_x` sets a value, `cf_x.add` /
/// `cf_x.remove` edit a multi-value field's list (sent as the whole resulting list, as lists
/// are). Values compare in Close's stored form, so a value Close stores differently but means
/// the same is unchanged.
fn customs(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    current: &crate::model::Customs,
    given: &Map<String, Value>,
    types: &FieldTypes,
) {
    // Field id → (value after every key of the payload, whether any key changed it).
    let mut edits: Vec<(&str, Value, bool)> = Vec::new();
    for (k, v) in given {
        // Normalisation refused any other key.
        let Ok((id, op)) = custom_key(k) else {
            continue;
        };
        let t = types.get(id);
        let slot = match edits.iter().position(|(x, ..)| *x == id) {
            Some(i) => i,
            None => {
                let now = current.get(id).cloned().unwrap_or(Value::Null);
                edits.push((id, now, false));
                edits.len() - 1
            }
        };
        let (_, now, changed) = &mut edits[slot];
        match op {
            CustomOp::Set => {
                if !stored::same(t, now, v) {
                    *now = v.clone();
                    *changed = true;
                }
            }
            CustomOp::Add => {
                let mut list = stored::as_list(now);
                for x in stored::as_list(v) {
                    if !list.iter().any(|y| stored::same(t, y, &x)) {
                        list.push(x);
                        *changed = true;
                    }
                }
                if *changed {
                    *now = Value::Array(list);
                }
            }
            CustomOp::Remove => {
                let gone = stored::as_list(v);
                let list = stored::as_list(now);
                let kept: Vec<Value> = list
                    .iter()
                    .filter(|y| !gone.iter().any(|x| stored::same(t, y, x)))
                    .cloned()
                    .collect();
                if kept.len() != list.len() {
                    *now = Value::Array(kept);
                    *changed = true;
                }
            }
        }
    }
    for (id, after, changed) in edits {
        if changed {
            let before = current.get(id).cloned().unwrap_or(Value::Null);
            let field = format!("custom.{id}");
            body.insert(field.clone(), after.clone());
            changes.push(Change {
                field,
                before,
                after,
            });
        }
    }
}

fn update_lead(lead: &Lead, p: &Payload, types: &FieldTypes, allowed: bool) -> Step {
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

/// One of a contact's lists: its field, the entry key, the type new entries get, and how
/// entries compare.
struct ListSpec {
    field: &'static str,
    key: &'static str,
    entry_type: &'static str,
    norm: fn(&str) -> String,
}

const EMAILS: ListSpec = ListSpec {
    field: "emails",
    key: "email",
    entry_type: "office",
    norm: norm_email,
};
const PHONES: ListSpec = ListSpec {
    field: "phones",
    key: "phone",
    entry_type: "office",
    norm: norm_phone,
};
const URLS: ListSpec = ListSpec {
    field: "urls",
    key: "url",
    entry_type: "url",
    norm: norm_url,
};

/// Appends `value` to a contact list when no entry compares equal (Close's `PUT` replaces the
/// whole list, so the merged list is sent).
fn append(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    spec: &ListSpec,
    current: &[Value],
    value: &str,
) {
    let texts = crate::model::entry_texts(current, spec.key);
    if texts.iter().any(|t| (spec.norm)(t) == (spec.norm)(value)) {
        return;
    }
    let mut merged = current.to_vec();
    merged.push(json!({ spec.key: value, "type": spec.entry_type }));
    let mut after = texts.clone();
    after.push(value.to_string());
    body.insert(spec.field.to_string(), Value::Array(merged));
    changes.push(Change {
        field: spec.field.to_string(),
        before: json!(texts),
        after: json!(after),
    });
}

fn update_contact(
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

/// The body of a create and its field-level changes (everything is new, so `before` is null).
#[derive(Default)]
struct Created {
    body: Map<String, Value>,
    changes: Vec<Change>,
}

impl Created {
    fn put(&mut self, field: &str, sent: Value, shown: Value) {
        self.body.insert(field.to_string(), sent);
        self.changes.push(Change {
            field: field.to_string(),
            before: Value::Null,
            after: shown,
        });
    }
    fn text(&mut self, field: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.put(field, json!(v), json!(v));
        }
    }
    fn list(&mut self, spec: &ListSpec, v: &Option<String>) {
        if let Some(v) = v {
            let v = v.trim();
            self.put(
                spec.field,
                json!([{ spec.key: v, "type": spec.entry_type }]),
                json!([v]),
            );
        }
    }
    /// Custom fields (null ones are simply not set; `.add` sets the list of its values,
    /// `.remove` has nothing to remove), then the lookup key's field: the key wins over a custom
    /// field of the same id.
    fn customs(&mut self, given: &Map<String, Value>, key: Option<(&String, &String)>) {
        let mut lists: Vec<(&str, Vec<Value>)> = Vec::new();
        for (k, v) in given {
            let Ok((id, op)) = custom_key(k) else {
                continue;
            };
            if key.is_some_and(|(_, field)| field == id) {
                continue;
            }
            match op {
                CustomOp::Set if !v.is_null() => {
                    self.put(&format!("custom.{id}"), v.clone(), v.clone());
                }
                CustomOp::Add => match lists.iter_mut().find(|(x, _)| *x == id) {
                    Some((_, l)) => l.extend(stored::as_list(v)),
                    None => lists.push((id, stored::as_list(v))),
                },
                _ => {}
            }
        }
        for (id, mut list) in lists {
            list.dedup();
            if !list.is_empty() {
                let v = Value::Array(list);
                self.put(&format!("custom.{id}"), v.clone(), v);
            }
        }
        if let Some((value, field)) = key {
            self.put(&format!("custom.{field}"), json!(value), json!(value));
        }
    }
}

fn create_contact(cfg: &KeyConfig, keys: &Keys, p: &Payload, lead_id: Option<&str>) -> Step {
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
fn create_lead(cfg: &KeyConfig, keys: &Keys, p: &Payload, with_contact: bool) -> Vec<Step> {
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
