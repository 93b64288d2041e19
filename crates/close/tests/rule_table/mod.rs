//! The rule table shared by the planner's unit-level test (`rules.rs`) and the end-to-end one
//! in `closeflow-close-api` (`rules_live.rs`): one named example per rule of the action, state
//! before, payload, and the plan it must produce, rendered compactly
//! (`kind id [changed fields] (reason)`), and a view of a state without Close's ids and dates.
#![allow(dead_code)]

use closeflow_close::model::KeyConfig;
use closeflow_close::plan::{Plan, StepKind};
use closeflow_close::state::State;
use serde_json::{Value, json};
pub fn render(p: &Plan) -> String {
    let mut parts: Vec<String> = p
        .steps
        .iter()
        .map(|s| {
            let kind = serde_json::to_value(s.kind).unwrap();
            // A live run's creates carry the id Close gave; the rule is the same.
            let created = matches!(s.kind, StepKind::CreateLead | StepKind::CreateContact);
            let mut t = format!(
                "{} {}",
                kind.as_str().unwrap(),
                if created {
                    "new"
                } else {
                    s.id.as_deref().unwrap_or("new")
                }
            );
            if !s.changes.is_empty() {
                let f: Vec<&str> = s.changes.iter().map(|c| c.field.as_str()).collect();
                t.push_str(&format!(" [{}]", f.join(",")));
            }
            if let Some(r) = &s.reason {
                t.push_str(&format!(" ({r})"));
            }
            t
        })
        .collect();
    for w in &p.warnings {
        parts.push(format!("warning {}", w.code));
    }
    if p.contacts_left > 0 {
        parts.push(format!("left {}", p.contacts_left));
    }
    parts.join("; ")
}

pub fn lead(id: &str, company: Option<&str>, date: &str, contacts: Value) -> Value {
    let mut l =
        json!({"id": id, "name": format!("Lead {id}"), "date_created": date, "contacts": contacts});
    if let Some(c) = company {
        l["custom.cf_company"] = json!(c);
    }
    l
}

pub fn contact(id: &str, email: &str, user: Option<&str>, date: &str) -> Value {
    let mut c = json!({"id": id, "name": "", "date_created": date, "emails": [{"email": email, "type": "office"}]});
    if let Some(u) = user {
        c["custom.cf_user"] = json!(u);
    }
    c
}

pub const D1: &str = "2025-01-01T00:00:00+00:00";
pub const D2: &str = "2025-02-01T00:00:00+00:00";
pub const D3: &str = "2025-03-01T00:00:00+00:00";

pub fn both() -> KeyConfig {
    KeyConfig {
        company_field: Some("cf_company".into()),
        user_field: Some("cf_user".into()),
    }
}

pub type Case = (&'static str, Value, Value, &'static str);

pub fn table() -> Vec<Case> {
    let acme = || {
        lead(
            "lead_a",
            Some("c1"),
            D1,
            json!([contact("cont_a", "ada@acme.com", Some("u1"), D1)]),
        )
    };
    #[rustfmt::skip]
    let table: Vec<(&str, Value, Value, &str)> = vec![
        ("1. lead by company; its contact by user id; both updated",
         json!([acme()]), json!({"lead_external_id": "c1", "lead_name": "Acme", "contact_external_id": "u1", "contact_title": "CTO"}),
         "update_lead lead_a [name]; update_contact cont_a [title]"),
        ("1. under the lead, email matches when no user id does; user id filled in",
         json!([lead("lead_a", Some("c1"), D1, json!([contact("cont_a", "ADA@acme.com ", None, D1)]))]),
         json!({"lead_external_id": "c1", "contact_email": "ada@acme.com", "contact_external_id": "u9"}),
         "unchanged lead_a; update_contact cont_a [custom.cf_user]"),
        ("1. several leads for one company: the oldest, with a warning",
         json!([lead("lead_new", Some("c1"), D2, json!([])), lead("lead_old", Some("c1"), D1, json!([]))]),
         json!({"lead_external_id": "c1", "lead_description": "d"}),
         "update_lead lead_old [description]; skipped new (no_contact_key); warning several_leads_for_company"),
        ("1. no contact of the lead matches: created under it",
         json!([acme()]), json!({"lead_external_id": "c1", "contact_email": "bob@acme.com"}),
         "unchanged lead_a; create_contact new [emails]"),
        ("1. the person exists under another lead and duplicates are not allowed",
         json!([acme(), lead("lead_b", Some("c2"), D1, json!([contact("cont_b", "bob@b.com", None, D1)]))]),
         json!({"lead_external_id": "c1", "contact_email": "bob@b.com", "allow_creating_duplicate_contacts": false}),
         "unchanged lead_a; skipped new (duplicate_contact_not_allowed)"),
        ("2. no company key: contacts by user id, their leads updated",
         json!([acme()]), json!({"contact_external_id": "u1", "lead_name": "Acme Corp"}),
         "update_lead lead_a [name]; unchanged cont_a"),
        ("2. an email match carrying another user id is another person: new lead",
         json!([acme()]), json!({"contact_external_id": "u2", "contact_email": "ada@acme.com"}),
         "create_lead new; create_contact new [emails,custom.cf_user]"),
        ("2. nothing found: one new lead with the contact nested",
         json!([]), json!({"lead_name": "Globex", "contact_email": "g@globex.com"}),
         "create_lead new [name]; create_contact new [emails]"),
        ("2. found under another company's lead: a new lead for this company",
         json!([acme()]), json!({"lead_external_id": "c9", "contact_external_id": "u1"}),
         "create_lead new [custom.cf_company]; create_contact new [custom.cf_user]"),
        ("2. ... unless duplicates are forbidden: the contacts are updated, their leads left alone",
         json!([acme()]), json!({"lead_external_id": "c9", "lead_name": "Other", "contact_external_id": "u1", "contact_title": "CEO", "allow_creating_duplicate_contacts": false}),
         "skipped new (duplicate_contact_not_allowed); update_contact cont_a [title]"),
        ("3. no contact key: only the lead, by company",
         json!([]), json!({"lead_external_id": "c5", "lead_name": "Five"}),
         "create_lead new [name,custom.cf_company]; skipped new (no_contact_key)"),
        ("3. no key at all: nothing",
         json!([acme()]), json!({"lead_name": "Nobody"}),
         "skipped new (no_lookup_key)"),
        ("flags: an update that is not allowed is skipped with the flag's name",
         json!([acme()]), json!({"lead_external_id": "c1", "lead_name": "X", "contact_external_id": "u1", "contact_title": "Y",
                                 "allow_updating_existing_leads": false, "allow_updating_existing_contacts": false}),
         "skipped lead_a [name] (allow_updating_existing_leads); skipped cont_a [title] (allow_updating_existing_contacts)"),
        ("flags: a lead may be created without its contact when it carries a company id",
         json!([]), json!({"lead_external_id": "c7", "contact_email": "z@z.com", "allow_creating_new_contacts": false}),
         "create_lead new [custom.cf_company]; skipped new (allow_creating_new_contacts)"),
        ("flags: no lead creation, no contact either",
         json!([]), json!({"contact_email": "z@z.com", "allow_creating_new_leads": false}),
         "skipped new (allow_creating_new_leads); skipped new (allow_creating_new_leads)"),
        ("append: a phone equal by its digits is not added again; a new url is appended",
         json!([lead("lead_a", Some("c1"), D1, json!([{"id": "cont_p", "date_created": D1, "phones": [{"phone": "+15550100"}], "urls": [{"url": "https://a.io"}], "custom.cf_user": "u1"}]))]),
         json!({"contact_external_id": "u1", "contact_phone": "+1 (555) 0100", "contact_url": "https://b.io"}),
         "unchanged lead_a; update_contact cont_p [urls]"),
        ("custom fields: null clears, \"\" sets empty, absent keys are left alone",
         json!([lead("lead_a", Some("c1"), D1, json!([{"id": "cont_c", "date_created": D1, "custom.cf_user": "u1", "custom.cf_x": "1", "custom.cf_keep": "k"}]))]),
         json!({"contact_external_id": "u1", "contact_custom_fields": {"cf_x": null, "cf_y": ""}}),
         "unchanged lead_a; update_contact cont_c [custom.cf_x,custom.cf_y]"),
    ];
    table
}

/// What a state looks like without the ids and dates Close assigns.
pub fn view(s: &State) -> Vec<String> {
    let mut out: Vec<String> = s
        .leads()
        .iter()
        .map(|l| {
            let mut contacts: Vec<String> = s
                .contacts()
                .iter()
                .filter(|c| c.lead_id == l.id)
                .map(|c| {
                    format!(
                        "{}|{}|{:?}|{:?}|{:?}|{:?}",
                        c.name,
                        c.title,
                        c.email_texts(),
                        c.phone_texts(),
                        c.url_texts(),
                        c.custom
                    )
                })
                .collect();
            contacts.sort();
            format!(
                "{}|{}|{:?} => {contacts:?}",
                l.name, l.description, l.custom
            )
        })
        .collect();
    out.sort();
    out
}
