//! One named example per rule of the action, as a table (`rule_table`): state before, payload,
//! and the plan it must produce. The same table runs end to end against the simulator in
//! `closeflow-close-api`'s `rules_live.rs`.

mod rule_table;

use closeflow_close::lookup;
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close::plan::{Plan, plan};
use closeflow_close::state::State;
use rule_table::*;
use serde_json::{Value, json};

fn check(name: &str, cfg: &KeyConfig, leads: Value, payload: Value, expect: &str) {
    let state = State::from_snapshot(&json!({ "leads": leads })).unwrap();
    let p = Payload::normalise(payload.as_object().unwrap()).unwrap();
    let got = render(&plan(cfg, &p, &state.lookup(&lookup::requests(cfg, &p))));
    assert_eq!(got, expect, "rule: {name}");
}

#[test]
fn the_decision_rule_by_rule() {
    for (name, leads, payload, expect) in table() {
        check(name, &both(), leads, payload, expect);
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
