//! dry-run = send, by a generated differential test: random snapshots (with the gaps a
//! hand-written one has: no dates, no status, nested `custom` by name, plain-string emails) and
//! random event streams are planned by a snapshot dry-run (the `--against sim:` path) and
//! applied by `send` to a simulator started from the same snapshot. The plans must be the
//! same, the simulator's final state must be what the dry-run's overlay says, and a second
//! send of every event, in the stream's order, must write nothing but what the action's rules
//! make it write again (the README's "Dry-run = send": fields the stream contests, records
//! created or given the event's keys after it first ran, and a contact of its own for an event
//! whose email another User ID claimed since).

mod generate;

use closeflow_close::StepKind;
use closeflow_close::run::{self, EventReport, key_config};
use closeflow_close::snapshot::Snapshot;
use closeflow_close::state::State;
use closeflow_close_api::search::Searcher;
use closeflow_mapping::events::{Entry, check};
use generate::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

const INSTANCE: &str = r#"
name: diff
settings:
  api_key: test_key
  lead_custom_field_id_for_company_id: cf_company
  contact_custom_field_id_for_user_id: cf_user
mappings:
  - name: people
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
    fields:
      contact_name: "{{traits.first_name}} {{traits.last_name}}"
      allow_creating_duplicate_contacts: $.traits.dup
      lead_custom_fields:
        cf_plan: $.traits.plan
        cf_seen: $.traits.seen
        cf_tags.add: $.traits.tag
      contact_custom_fields:
        cf_day: $.traits.day
        cf_score: $.traits.score
  - name: accounts
    trigger: type = "group"
    action: create_or_update_contact_and_lead
    fields:
      lead_external_id: $.groupId
      lead_name: $.traits.name
      contact_name: null
      contact_email: null
      contact_phone: null
      contact_url: null
      contact_title: null
      contact_external_id: null
"#;

/// A value as Close stores it, for comparing (the test's own reading, not the planner's).
fn stored(t: &str, v: &Value) -> String {
    match (t, v) {
        (_, Value::Array(a)) => format!(
            "[{}]",
            a.iter().map(|x| stored(t, x)).collect::<Vec<_>>().join(",")
        ),
        ("datetime", Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map_or_else(|_| s.clone(), |ts| ts.as_microsecond().to_string()),
        ("date", Value::String(s)) => s.get(..10).unwrap_or(s).to_string(),
        ("number", v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map_or_else(|| v.to_string(), |n| n.to_string()),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

fn customs(c: &closeflow_close::model::Customs) -> String {
    let t = types();
    c.iter()
        .map(|(k, v)| format!("{k}={}", stored(t.get(k.as_str()).unwrap_or(&"text"), v)))
        .collect::<Vec<_>>()
        .join(";")
}

/// Records by (mapped) id, as comparable text.
fn view(s: &State, ids: &BTreeMap<String, String>, out: &mut BTreeMap<String, String>) {
    let id = |x: &str| ids.get(x).cloned().unwrap_or_else(|| x.to_string());
    for l in s.leads() {
        out.insert(
            id(&l.id),
            format!("lead {}|{}|{}", l.name, l.description, customs(&l.custom)),
        );
    }
    for c in s.contacts() {
        let emails: Vec<String> = c.email_texts();
        out.insert(
            id(&c.id),
            format!(
                "contact in {}|{}|{}|{emails:?}|{:?}|{:?}|{}",
                id(&c.lead_id),
                c.name,
                c.title,
                c.phone_texts(),
                c.url_texts(),
                customs(&c.custom)
            ),
        );
    }
}

/// The real ids of the records the dry-run planned to create: the overlay numbers them in
/// creation order, and send's creates come in the same order.
fn learn_ids(sent: &[EventReport]) -> BTreeMap<String, String> {
    let creates = sent
        .iter()
        .flat_map(|r| &r.mappings)
        .flat_map(|m| &m.steps)
        .filter(|s| matches!(s.kind, StepKind::CreateLead | StepKind::CreateContact));
    creates
        .enumerate()
        .filter_map(|(k, s)| {
            let prefix = if s.kind == StepKind::CreateLead {
                "lead"
            } else {
                "cont"
            };
            Some((format!("{prefix}_planned{}", k + 1), s.id.clone()?))
        })
        .collect()
}

/// A plan as comparable text: created records are "new", planned ids are the real ones.
fn steps(r: &EventReport, ids: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for m in &r.mappings {
        out.push(format!(
            "{} matched={} error={:?}",
            m.name, m.matched, m.error
        ));
        for s in &m.steps {
            let map = |x: &Option<String>| {
                x.as_ref()
                    .map(|i| ids.get(i).cloned().unwrap_or_else(|| i.clone()))
            };
            let id = match s.kind {
                StepKind::CreateLead | StepKind::CreateContact => None,
                _ => map(&s.id),
            };
            let lead_id = match (s.kind, s.nested) {
                (StepKind::CreateContact, true) => None,
                _ => map(&s.lead_id),
            };
            let changes: Vec<String> = s
                .changes
                .iter()
                .map(|c| format!("{}→{}", c.field, c.after))
                .collect();
            out.push(format!(
                "  {:?} {:?} {id:?} in {lead_id:?} {:?} {changes:?}",
                s.kind, s.object, s.reason
            ));
        }
    }
    out
}

/// (object, field) pairs the stream sets to more than one value: replaying it rewrites them.
fn contested(reports: &[EventReport]) -> BTreeSet<String> {
    let t = types();
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in reports {
        for m in r.mappings.iter().filter(|m| m.matched) {
            let Some(p) = &m.payload else { continue };
            for (k, v) in p {
                let (obj, fields): (&str, Vec<(String, &Value)>) = match k.as_str() {
                    "lead_name" => ("lead", vec![("name".into(), v)]),
                    "contact_name" => ("contact", vec![("name".into(), v)]),
                    "lead_custom_fields" | "contact_custom_fields" => (
                        if k.starts_with("lead") {
                            "lead"
                        } else {
                            "contact"
                        },
                        v.as_object()
                            .into_iter()
                            .flatten()
                            .map(|(f, x)| (format!("custom.{f}"), x))
                            .collect(),
                    ),
                    _ => continue,
                };
                for (f, x) in fields {
                    let ty = t.get(f.trim_start_matches("custom.")).unwrap_or(&"text");
                    let shown = match x {
                        Value::String(s) => Value::String(s.trim().to_string()),
                        other => other.clone(),
                    };
                    values
                        .entry(format!("{obj} {f}"))
                        .or_default()
                        .insert(stored(ty, &shown));
                }
            }
        }
    }
    values
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect()
}

/// The lookup keys an event's payloads carry: User ID, email (normalised), Company ID.
#[derive(Debug, Default)]
struct Keys {
    user: Option<String>,
    email: Option<String>,
    company: Option<String>,
}

fn event_keys(r: &EventReport) -> Keys {
    let mut k = Keys::default();
    for p in r
        .mappings
        .iter()
        .filter(|m| m.matched)
        .filter_map(|m| m.payload.as_ref())
    {
        let get = |f: &str| {
            p.get(f)
                .and_then(Value::as_str)
                .map(|v| v.trim().to_string())
        };
        k.user = k.user.or(get("contact_external_id"));
        k.email = k.email.or(get("contact_email").map(|e| e.to_lowercase()));
        k.company = k.company.or(get("lead_external_id"));
    }
    k
}

/// A write of a run: when (the event's place: the first send's event j at j, the replay's
/// event k at events + k), the record, whether it created it, and what it set.
struct Write {
    at: usize,
    id: String,
    created: bool,
    changes: Vec<(String, Value)>,
}

fn writes_of(at: usize, r: &EventReport, out: &mut Vec<Write>) {
    for s in r
        .mappings
        .iter()
        .flat_map(|m| &m.steps)
        .filter(|s| s.is_write())
    {
        let Some(id) = s.id.clone() else { continue };
        out.push(Write {
            at,
            id,
            created: matches!(s.kind, StepKind::CreateLead | StepKind::CreateContact),
            changes: s
                .changes
                .iter()
                .map(|c| (c.field.clone(), c.after.clone()))
                .collect(),
        });
    }
}

fn emails_in(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("email").and_then(Value::as_str).or(e.as_str()))
        .map(|e| e.trim().to_lowercase())
        .collect()
}

/// Whether a write in (`from`, `to`) created record `id` or gave it one of `k`'s keys.
fn keyed_between(writes: &[Write], id: &str, k: &Keys, from: usize, to: usize) -> bool {
    writes
        .iter()
        .filter(|w| w.id == id && w.at > from && w.at < to)
        .any(|w| {
            w.created
                || w.changes.iter().any(|(f, v)| match f.as_str() {
                    "emails" => k.email.as_ref().is_some_and(|e| emails_in(v).contains(e)),
                    "custom.cf_user" => k.user.as_deref().is_some_and(|u| v == u),
                    "custom.cf_company" => k.company.as_deref().is_some_and(|c| v == c),
                    _ => false,
                })
        })
}

async fn differential(snapshot: Value, events: Vec<Value>) -> Result<(), TestCaseError> {
    let env = |_: &str| None;
    let (inst, diags) = closeflow_mapping::instance::load(
        "diff.yaml",
        INSTANCE,
        &closeflow_close::schema::destination(),
        &env,
    );
    let inst = inst.unwrap_or_else(|| panic!("{diags:?}"));
    let entries: Vec<Entry> = events.into_iter().map(check).collect();

    // The dry-run, as `dry-run --against sim:` runs it.
    let source = Snapshot::load(snapshot.to_string().as_bytes(), &key_config(&inst)).unwrap();
    let mut overlay = closeflow_close::overlay::Overlay::default();
    let mut planned = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        planned.push(run::dry_run(&inst, &source, &mut overlay, i, e).await);
    }

    // The same events sent to a simulator started from the same snapshot.
    let (sim, url) = closeflow_e2e::procs::sim_in_process(&snapshot).await;
    let writer = closeflow_close_api::client::Writer::new(
        closeflow_close_api::client::ClientConfig::new(url, "test_key".to_string().into()),
    )
    .unwrap();
    let mut sent = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (r, err) = run::send(
            &inst,
            &Searcher::from(writer.reader().clone()),
            &writer,
            i,
            e,
        )
        .await;
        prop_assert!(err.is_none(), "send failed: {err:?}");
        sent.push(r);
    }

    let ids = learn_ids(&sent);
    for (i, (a, b)) in planned.iter().zip(&sent).enumerate() {
        prop_assert_eq!(steps(a, &ids), steps(b, &ids), "event {} plans differ", i);
    }

    // The simulator ends where the overlay (over the snapshot) says it would.
    let mut expected = BTreeMap::new();
    view(
        &State::from_snapshot(&snapshot).unwrap(),
        &BTreeMap::new(),
        &mut expected,
    );
    view(&overlay.to_state(), &ids, &mut expected);
    let mut actual = BTreeMap::new();
    view(
        &State::from_snapshot(&sim.snapshot()).unwrap(),
        &BTreeMap::new(),
        &mut actual,
    );
    prop_assert_eq!(expected, actual, "the final state is not the overlay");

    // The second send: every event again, in stream order, on the state the first send left.
    // It writes nothing new, except what follows from the action's rules (the README's "Dry-run
    // = send" states them):
    // - a field the stream contests (sets to different values) is set again by each event
    //   that sets it;
    // - an event updates every record its keys find: replayed, that includes a record that was
    //   created, or given one of its keys, after it first ran (and that record's lead);
    // - an event with a User ID whose email was claimed by another User ID after it first ran
    //   no longer finds that contact by email (it is another person's): it creates its own.
    let contested = contested(&sent);
    let n = entries.len();
    let mut writes = Vec::new();
    for (j, r) in sent.iter().enumerate() {
        writes_of(j, r, &mut writes);
    }
    for (i, e) in entries.iter().enumerate() {
        let now = State::from_snapshot(&sim.snapshot()).unwrap();
        let (r, err) = run::send(
            &inst,
            &Searcher::from(writer.reader().clone()),
            &writer,
            i,
            e,
        )
        .await;
        prop_assert!(err.is_none(), "send failed: {err:?}");
        let k = event_keys(&sent[i]);
        let new_to_it = |id: &str| keyed_between(&writes, id, &k, i, n + i);
        let steps: Vec<_> = r
            .mappings
            .iter()
            .flat_map(|m| &m.steps)
            .filter(|s| s.is_write())
            .collect();
        // Leads of the contacts the event finds for the first time (written or not).
        let new_leads: BTreeSet<String> = r
            .mappings
            .iter()
            .flat_map(|m| &m.steps)
            .filter(|s| s.object == closeflow_close::plan::Object::Contact)
            .filter_map(|s| s.id.as_deref())
            .filter(|id| new_to_it(id))
            .filter_map(|id| now.contact(id).map(|c| c.lead_id.clone()))
            .collect();
        for s in &steps {
            if matches!(s.kind, StepKind::CreateLead | StepKind::CreateContact) {
                let claimed = writes.iter().filter(|w| w.at > i && w.at < n + i).any(|w| {
                    w.changes.iter().any(|(f, v)| {
                        f == "custom.cf_user"
                            && k.user.as_deref().is_some_and(|u| v.as_str() != Some(u))
                            && now
                                .contact(&w.id)
                                .is_some_and(|c| k.email.as_deref().is_some_and(|e| c.has_email(e)))
                    })
                });
                prop_assert!(
                    s.kind == StepKind::CreateContact && claimed,
                    "event {} creates again, though no other User ID claimed its email since: {:?}",
                    i,
                    s
                );
                continue;
            }
            let id = s.id.as_deref().unwrap_or_default();
            if new_to_it(id) || new_leads.contains(id) {
                continue;
            }
            let obj = format!("{:?}", s.object).to_lowercase();
            for c in &s.changes {
                prop_assert!(
                    contested.contains(&format!("{obj} {}", c.field)),
                    "event {} rewrites {} {} ({} → {}) though the stream never contests it",
                    i,
                    obj,
                    c.field,
                    c.before,
                    c.after
                );
            }
        }
        writes_of(n + i, &r, &mut writes);
    }
    Ok(())
}

/// Found by the generator: the first event's replay gives the second contact with user id u1
/// (created under company c1's new lead, after the first event ran) the email a@x.com, which
/// the third event's replay then also finds and gives its score: both writes go to a record
/// given the event's key after it first ran.
#[test]
fn a_replay_that_spreads_a_key_is_not_taken_for_a_rewrite() {
    use proptest::strategy::ValueTree;
    let mut snapshot = snapshot_strategy()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    snapshot["leads"] = json!([]);
    let events = vec![
        json!({"type": "identify", "userId": "u1", "traits": {"email": "a@x.com"}}),
        json!({"type": "identify", "userId": "u1", "traits": {"company": {"id": "c1", "name": "Co c1"}}}),
        json!({"type": "identify", "traits": {"email": "a@x.com", "score": 3}}),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(differential(snapshot, events)).unwrap();
}

/// Found by the generator: u4 claims a@x.com, whose contact (under another company's lead,
/// without a user id) makes it a refused duplicate; then u1 claims it and the contact becomes
/// u1's. Replayed, u4 is now another person than the email's owner and gets a contact: the one
/// create a replay may make.
#[test]
fn an_email_claimed_by_a_later_user_id_makes_the_earlier_one_another_person() {
    use proptest::strategy::ValueTree;
    let mut snapshot = snapshot_strategy()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    snapshot["leads"] = json!([]);
    let events = vec![
        json!({"type": "identify", "traits": {"email": "a@x.com", "company": {"id": "c1", "name": "Co c1"}}}),
        json!({"type": "group", "groupId": "c4", "traits": {}}),
        json!({"type": "identify", "userId": "u4",
               "traits": {"email": "a@x.com", "company": {"id": "c4", "name": "Co c4"}, "dup": false}}),
        json!({"type": "identify", "userId": "u1", "traits": {"email": "a@x.com"}}),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(differential(snapshot, events)).unwrap();
}

/// Found by the generator: u1's contact is given a@x.com by the last event, after the second
/// event (a@x.com, plan free) created a contact of its own for it. Replayed, the second event
/// finds both contacts by email and sets the plan on both leads: u1's lead is the lead of a
/// contact given the event's key after it first ran.
#[test]
fn a_replay_writing_the_lead_of_a_contact_that_got_its_email_later_is_not_taken_for_a_rewrite() {
    use proptest::strategy::ValueTree;
    let mut snapshot = snapshot_strategy()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    snapshot["leads"] = json!([]);
    let events = vec![
        json!({"type": "identify", "userId": "u1", "traits": {}}),
        json!({"type": "identify", "traits": {"email": "a@x.com", "plan": "free"}}),
        json!({"type": "identify", "userId": "u1", "traits": {"email": "a@x.com"}}),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(differential(snapshot, events)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dry_run_against_a_snapshot_is_what_send_does(
        snapshot in snapshot_strategy(),
        events in proptest::collection::vec(event_strategy(), 1..7),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(differential(snapshot, events))?;
    }
}
