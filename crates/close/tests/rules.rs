//! One named example per rule of the action, as a table: state before, payload, and the
//! plan it must produce, rendered compactly (`kind id [changed fields] (reason)`).

use closeflow_close::lookup;
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close::plan::{Plan, StepKind, plan};
use closeflow_close::state::State;
use serde_json::{Value, json};

fn render(p: &Plan) -> String {
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

fn lead(id: &str, company: Option<&str>, date: &str, contacts: Value) -> Value {
    let mut l =
        json!({"id": id, "name": format!("Lead {id}"), "date_created": date, "contacts": contacts});
    if let Some(c) = company {
        l["custom.cf_company"] = json!(c);
    }
    l
}

fn contact(id: &str, email: &str, user: Option<&str>, date: &str) -> Value {
    let mut c = json!({"id": id, "name": "", "date_created": date, "emails": [{"email": email, "type": "office"}]});
    if let Some(u) = user {
        c["custom.cf_user"] = json!(u);
    }
    c
}

const D1: &str = "2025-01-01T00:00:00+00:00";
const D2: &str = "2025-02-01T00:00:00+00:00";
const D3: &str = "2025-03-01T00:00:00+00:00";

fn check(name: &str, cfg: &KeyConfig, leads: Value, payload: Value, expect: &str) {
    let state = State::from_snapshot(&json!({ "leads": leads })).unwrap();
    let p = Payload::normalise(payload.as_object().unwrap()).unwrap();
    let got = render(&plan(cfg, &p, &state.lookup(&lookup::requests(cfg, &p))));
    assert_eq!(got, expect, "rule: {name}");
}

fn both() -> KeyConfig {
    KeyConfig {
        company_field: Some("cf_company".into()),
        user_field: Some("cf_user".into()),
    }
}

type Case = (&'static str, Value, Value, &'static str);

fn table() -> Vec<Case> {
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

#[test]
fn the_decision_rule_by_rule() {
    for (name, leads, payload, expect) in table() {
        check(name, &both(), leads, payload, expect);
    }
}

/// What a state looks like without the ids and dates Close assigns.
fn view(s: &State) -> Vec<String> {
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

/// The same table end to end: the executor against the simulator over loopback HTTP. The plan
/// must be the same, the simulator's state after must be what the plan says, and planning the
/// event again must write nothing.
#[tokio::test]
async fn every_rule_end_to_end_against_the_simulator() {
    use closeflow_close::client::{ClientConfig, Writer};
    use closeflow_close::exec;
    for (name, leads, payload, expect) in table() {
        let snapshot = json!({"api_keys": ["k"], "leads": leads});
        let sim = closeflow_sim::Sim::from_snapshot(Some(&snapshot)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(closeflow_sim::serve(listener, sim.clone()));
        let w = Writer::new(ClientConfig::new(
            format!("http://{addr}/api/v1/"),
            "k".to_string().into(),
        ))
        .unwrap();
        let p = Payload::normalise(payload.as_object().unwrap()).unwrap();
        let before = State::from_snapshot(&sim.snapshot()).unwrap();
        let applied = exec::apply(&w, &both(), &p).await.unwrap();
        assert_eq!(render(&applied.plan), expect, "rule (live): {name}");
        let mut expected = before.clone();
        expected.apply(&applied.plan);
        let after = State::from_snapshot(&sim.snapshot()).unwrap();
        assert_eq!(view(&after), view(&expected), "rule (state after): {name}");
        let again = exec::apply(&w, &both(), &p).await.unwrap();
        assert_eq!(
            again.plan.writes().count(),
            0,
            "rule (replay): {name}: {}",
            render(&again.plan)
        );
    }
}

#[test]
fn at_most_ten_oldest_contacts() {
    let contacts: Vec<Value> = (0..12)
        .map(|i| {
            contact(
                &format!("cont_{i:02}"),
                "same@x.com",
                None,
                if i < 2 { D3 } else { D1 },
            )
        })
        .collect();
    let leads = json!([lead("lead_a", None, D1, Value::Array(contacts))]);
    let expect = (2..12)
        .map(|i| format!("update_contact cont_{i:02} [name]"))
        .collect::<Vec<_>>();
    check(
        "the ten oldest matches are updated; two are left",
        &both(),
        leads,
        json!({"contact_email": "same@x.com", "contact_name": "Same"}),
        &format!("unchanged lead_a; {}; left 2", expect.join("; ")),
    );
}

#[test]
fn keys_without_their_settings_are_ignored_with_a_warning() {
    let none = KeyConfig::default();
    check(
        "Company ID and User ID without settings",
        &none,
        json!([]),
        json!({"lead_external_id": "c1", "contact_external_id": "u1", "contact_email": "a@b.c"}),
        "create_lead new; create_contact new [emails]; warning company_id_without_setting; warning user_id_without_setting",
    );
}

/// A state with typed custom fields, as a snapshot gives them.
fn typed(leads: Value) -> State {
    State::from_snapshot(&json!({
        "custom_fields": {"lead": [{"id": "cf_company", "name": "Company ID", "type": "text"},
                                   {"id": "cf_seen", "name": "Seen", "type": "datetime"},
                                   {"id": "cf_day", "name": "Day", "type": "date"},
                                   {"id": "cf_mrr", "name": "MRR", "type": "number"},
                                   {"id": "cf_tags", "name": "Tags", "type": "text"}]},
        "leads": leads}))
    .unwrap()
}

fn plan_typed(state: &State, payload: Value) -> Plan {
    let p = Payload::normalise(payload.as_object().unwrap()).unwrap();
    plan(&both(), &p, &state.lookup(&lookup::requests(&both(), &p)))
}

#[test]
fn custom_values_compare_as_close_stores_them() {
    let state = typed(json!([{"id": "lead_1", "custom.cf_company": "c1",
        "custom.cf_seen": "2026-01-01T10:00:00+00:00", "custom.cf_day": "2026-01-05", "custom.cf_mrr": 99}]));
    let same = plan_typed(
        &state,
        json!({"lead_external_id": "c1", "lead_custom_fields": {
            "cf_seen": "2026-01-01T12:00:00+02:00", "cf_day": "2026-01-05T23:00:00Z", "cf_mrr": "99"}}),
    );
    assert_eq!(
        render(&same),
        "unchanged lead_1; skipped new (no_contact_key)"
    );
    let moved = plan_typed(
        &state,
        json!({"lead_external_id": "c1", "lead_custom_fields": {"cf_seen": "2026-01-01T10:00:01Z", "cf_day": "2026-01-06"}}),
    );
    assert_eq!(
        render(&moved),
        "update_lead lead_1 [custom.cf_seen,custom.cf_day]; skipped new (no_contact_key)"
    );
}

#[test]
fn the_oldest_lead_is_the_oldest_instant_not_the_smallest_text() {
    // 09:00 at +05:00 is 04:00 UTC: older than 05:00 UTC, though its text sorts after.
    let state = typed(json!([
        {"id": "lead_b", "custom.cf_company": "c1", "date_created": "2026-01-01T05:00:00+00:00"},
        {"id": "lead_a", "custom.cf_company": "c1", "date_created": "2026-01-01T09:00:00+05:00"}]));
    let p = plan_typed(&state, json!({"lead_external_id": "c1", "lead_name": "X"}));
    assert_eq!(
        render(&p),
        "update_lead lead_a [name]; skipped new (no_contact_key); warning several_leads_for_company"
    );
}

#[test]
fn add_and_remove_are_list_edits_that_converge() {
    let mut state =
        typed(json!([{"id": "lead_1", "custom.cf_company": "c1", "custom.cf_tags": ["a"]}]));
    let with = |k: &str, v: Value| json!({"lead_external_id": "c1", "lead_custom_fields": {k: v}});
    assert_eq!(
        render(&plan_typed(&state, with("cf_tags.add", json!("a")))),
        "unchanged lead_1; skipped new (no_contact_key)"
    );
    assert_eq!(
        render(&plan_typed(&state, with("cf_tags.remove", json!("z")))),
        "unchanged lead_1; skipped new (no_contact_key)"
    );
    let add = plan_typed(&state, with("cf_tags.add", json!("b")));
    assert_eq!(add.steps[0].body["custom.cf_tags"], json!(["a", "b"]));
    state.apply(&add);
    assert_eq!(
        plan_typed(&state, with("cf_tags.add", json!("b")))
            .writes()
            .count(),
        0
    );
    let remove = plan_typed(&state, with("cf_tags.remove", json!("a")));
    assert_eq!(remove.steps[0].body["custom.cf_tags"], json!(["b"]));
    state.apply(&remove);
    assert_eq!(
        plan_typed(&state, with("cf_tags.remove", json!("a")))
            .writes()
            .count(),
        0
    );
    // A new lead gets the list of the values added.
    let new = plan_typed(
        &state,
        json!({"lead_external_id": "c9", "lead_custom_fields": {"cf_tags.add": "x", "cf_tags.remove": "y"}}),
    );
    assert_eq!(new.steps[0].body["custom.cf_tags"], json!(["x"]));
}
