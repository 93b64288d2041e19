//! The rules of `closeflow diff`, over generated pairs of instance versions and event streams:
//! a version diffed against itself reports nothing, and swapping old and new mirrors every
//! change (verdicts, payload fields, plan steps, renames, additions and removals, the counts).

use closeflow_close::schema;
use closeflow_close::state::State;
use closeflow_close_tools::diff::{
    Differ, EventDiff, FieldChange, MappingDiff, Review, StepChange, Summary,
};
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use proptest::prelude::*;
use serde_json::json;

const TRIGGERS: [&str; 5] = [
    "type = \"identify\"",
    "type = \"identify\" and traits.plan != null",
    "type = \"track\" and event = \"Signed Up\"",
    "type = \"track\"",
    "type = \"group\"",
];

const FIELDS: [&str; 7] = [
    "contact_name: \"{{traits.first_name}} {{traits.last_name}}\"",
    "lead_description: \"Plan: {{traits.plan}}\"",
    "lead_custom_fields: {cf_plan: $.traits.plan}",
    "allow_updating_existing_contacts: false",
    "allow_creating_new_leads: false",
    "contact_title: Boss",
    "lead_external_id: $.groupId",
];

/// One mapping: name, enabled, trigger, and a set of field overrides (bit mask over FIELDS).
type MappingSpec = (usize, bool, usize, u8);

fn yaml(instance: &str, mappings: &[MappingSpec]) -> String {
    let mut s = format!(
        "name: {instance}\nsettings:\n  api_key: test\n  contact_custom_field_id_for_user_id: cf_user\n  lead_custom_field_id_for_company_id: cf_company\nmappings:\n"
    );
    let mut used = Vec::new();
    for (name, enabled, trigger, fields) in mappings {
        if used.contains(name) {
            continue;
        }
        used.push(*name);
        s.push_str(&format!(
            "  - name: m{name}\n    enabled: {enabled}\n    trigger: {}\n    action: create_or_update_contact_and_lead\n",
            serde_json::to_string(TRIGGERS[*trigger]).unwrap()
        ));
        let chosen: Vec<&str> = (0..FIELDS.len())
            .filter(|b| fields & (1 << b) != 0)
            .map(|b| FIELDS[b])
            .collect();
        if !chosen.is_empty() {
            s.push_str("    fields:\n");
            for f in chosen {
                s.push_str(&format!("      {f}\n"));
            }
        }
    }
    s
}

/// A version: the instance "one", and sometimes an instance "two".
type VersionSpec = (Vec<MappingSpec>, Option<Vec<MappingSpec>>);

fn load(v: &VersionSpec) -> Vec<Instance> {
    let mut texts = vec![yaml("one", &v.0)];
    if let Some(two) = &v.1 {
        texts.push(yaml("two", two));
    }
    texts
        .iter()
        .map(|t| {
            let env = |_: &str| None;
            let (inst, diags) =
                closeflow_mapping::instance::load("gen.yaml", t, &schema::destination(), &env);
            inst.unwrap_or_else(|| panic!("generated instance invalid: {diags:?}\n{t}"))
        })
        .collect()
}

fn mapping_spec() -> impl Strategy<Value = MappingSpec> {
    (
        0..5usize,
        prop::bool::weighted(0.85),
        0..TRIGGERS.len(),
        0..(1u8 << FIELDS.len()),
    )
}

fn version() -> impl Strategy<Value = VersionSpec> {
    (
        prop::collection::vec(mapping_spec(), 0..5),
        prop::option::weighted(0.3, prop::collection::vec(mapping_spec(), 0..3)),
    )
}

/// Some edits of a version: the same mappings renamed, fields or triggers changed, dropped,
/// re-enabled, so that renames and small changes come up often, not only unrelated versions.
fn edited(v: VersionSpec) -> impl Strategy<Value = VersionSpec> {
    let n = v.0.len();
    (
        prop::collection::vec((0..4u8, 0..5usize, 0..TRIGGERS.len(), 0..FIELDS.len()), n),
        Just(v),
    )
        .prop_map(|(edits, (one, two))| {
            let one = one
                .into_iter()
                .zip(edits)
                .filter_map(
                    |((name, en, trig, fields), (what, new_name, t, f))| match what {
                        0 => Some((new_name, en, trig, fields)),
                        1 => Some((name, !en, t, fields)),
                        2 => Some((name, en, trig, fields ^ (1 << f))),
                        _ => (new_name != 0).then_some((name, en, trig, fields)),
                    },
                )
                .collect();
            (one, two)
        })
}

fn event() -> impl Strategy<Value = Entry> {
    let users = prop::sample::select(vec!["u1", "u2", "u3"]);
    let plans = prop::option::of(prop::sample::select(vec!["free", "pro"]));
    let companies = prop::option::of(prop::sample::select(vec!["c1", "c2"]));
    (0..4u8, users, plans, companies).prop_map(|(kind, user, plan, company)| {
        let mut traits = json!({"email": format!("{user}@x.com"), "first_name": user, "last_name": "X"});
        if let Some(p) = plan {
            traits["plan"] = json!(p);
        }
        if let Some(c) = company {
            traits["company"] = json!({"id": c, "name": c.to_uppercase()});
        }
        let v = match kind {
            0 | 1 => json!({"type": "identify", "userId": user, "traits": traits}),
            2 => json!({"type": "track", "userId": user, "event": "Signed Up", "properties": {}, "context": {"traits": traits}}),
            _ => json!({"type": "group", "userId": user, "groupId": company.unwrap_or("c9"), "traits": {"name": "G"}}),
        };
        closeflow_mapping::events::check(v)
    })
}

fn state() -> State {
    State::from_snapshot(&json!({"leads": [
        {"id": "lead_1", "name": "C1", "custom.cf_company": "c1",
         "contacts": [{"id": "cont_1", "name": "U1", "title": "Eng", "emails": [{"email": "u1@x.com"}], "custom.cf_user": "u1"}]}
    ]}))
    .unwrap()
}

/// Every event through both versions (with plans against a snapshot when `plans`).
fn run(
    old: &[Instance],
    new: &[Instance],
    events: &[Entry],
    plans: bool,
) -> (Vec<EventDiff>, Summary) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let source = state();
    let mut d = Differ::new(old, new);
    let sources = vec![&source; d.instances().len()];
    let mut review = Review::new(3);
    let diffs: Vec<EventDiff> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ev = if plans {
                rt.block_on(d.event_planned(&sources, i, e))
            } else {
                d.event(i, e)
            };
            review.add(&ev);
            ev
        })
        .collect();
    (diffs, review.finish())
}

fn mirror_field(f: &FieldChange) -> FieldChange {
    FieldChange {
        field: f.field.clone(),
        op: f.op.mirrored(),
        before: f.after.clone(),
        after: f.before.clone(),
    }
}

fn mirror_step(s: &StepChange) -> StepChange {
    StepChange {
        op: s.op.mirrored(),
        old: s.new.clone(),
        new: s.old.clone(),
        fields: s.fields.iter().map(mirror_field).collect(),
    }
}

fn mirror(m: &MappingDiff) -> MappingDiff {
    MappingDiff {
        instance: m.instance.clone(),
        name: m.old_name.clone().unwrap_or_else(|| m.name.clone()),
        old_name: m.old_name.as_ref().map(|_| m.name.clone()),
        status: m.status.mirrored(),
        old: m.new.clone(),
        new: m.old.clone(),
        payload_changes: m.payload_changes.iter().map(mirror_field).collect(),
        plan_changes: m.plan_changes.iter().map(mirror_step).collect(),
    }
}

fn sorted(mut ms: Vec<MappingDiff>) -> Vec<MappingDiff> {
    ms.sort_by(|a, b| (&a.instance, &a.name).cmp(&(&b.instance, &b.name)));
    ms
}

fn counts(s: &Summary) -> [usize; 8] {
    [
        s.events,
        s.changed,
        s.unchanged,
        s.newly_matched,
        s.no_longer_matched,
        s.payload_changed,
        s.plan_changed,
        s.error_changed,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_version_against_itself_reports_nothing(
        v in version(),
        events in prop::collection::vec(event(), 0..10),
        plans in any::<bool>(),
    ) {
        // Two separate loads of the same text, as `--base` gives.
        let (a, b) = (load(&v), load(&v));
        let (diffs, summary) = run(&a, &b, &events, plans);
        for d in &diffs {
            prop_assert!(!d.changed && d.mappings.is_empty(), "event {} reported {:?}", d.index, d.mappings);
        }
        prop_assert_eq!(summary.changed, 0);
        prop_assert_eq!(summary.unchanged, events.len());
        prop_assert!(summary.groups.is_empty());
        let differ = Differ::new(&a, &b);
        prop_assert!(differ.mapping_changes().is_empty());
        prop_assert!(differ.instance_changes().is_empty());
    }

    #[test]
    fn swapping_old_and_new_mirrors_every_change(
        (a, b) in version().prop_flat_map(|v| (Just(v.clone()), prop_oneof![edited(v), version()])),
        events in prop::collection::vec(event(), 1..10),
        plans in any::<bool>(),
    ) {
        let (a, b) = (load(&a), load(&b));
        let (forward, fs) = run(&a, &b, &events, plans);
        let (backward, bs) = run(&b, &a, &events, plans);
        for (f, b) in forward.iter().zip(&backward) {
            prop_assert_eq!(f.changed, b.changed);
            prop_assert_eq!(&f.error, &b.error);
            let mirrored = sorted(f.mappings.iter().map(mirror).collect());
            prop_assert_eq!(mirrored, sorted(b.mappings.clone()), "event {}", f.index);
        }
        let mut swapped = counts(&fs);
        swapped.swap(3, 4);
        prop_assert_eq!(swapped, counts(&bs));
        let fm: Vec<_> = Differ::new(&a, &b).mapping_changes().into_iter().cloned().collect();
        let bm: Vec<_> = Differ::new(&b, &a).mapping_changes().into_iter().cloned().collect();
        prop_assert_eq!(fm.len(), bm.len());
        for m in &fm {
            let back_name = m.old_name.clone().unwrap_or_else(|| m.name.clone());
            let found = bm.iter().find(|x| x.instance == m.instance && x.name == back_name);
            prop_assert!(found.is_some_and(|x| x.status == m.status.mirrored()
                && x.old_name.is_some() == m.old_name.is_some()), "{:?} not mirrored in {:?}", m, bm);
        }
    }
}

#[test]
fn a_rename_is_the_same_definition_under_a_new_name() {
    let a = load(&(vec![(0, true, 0, 0b11), (1, true, 3, 0)], None));
    let b = load(&(vec![(2, true, 0, 0b11), (1, true, 3, 0b1)], None));
    let d = Differ::new(&a, &b);
    let changes: Vec<(String, Option<String>, &str)> = d
        .mapping_changes()
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.old_name.clone(),
                match m.status {
                    closeflow_close_tools::diff::Status::Renamed => "renamed",
                    closeflow_close_tools::diff::Status::Kept => "kept",
                    closeflow_close_tools::diff::Status::Added => "added",
                    closeflow_close_tools::diff::Status::Removed => "removed",
                },
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("m2".to_string(), Some("m0".to_string()), "renamed"),
            ("m1".to_string(), None, "kept"),
        ]
    );
    // Edited and renamed at once is not a rename: a removal and an addition.
    let c = load(&(vec![(3, true, 0, 0b111)], None));
    let statuses: Vec<_> = Differ::new(&a, &c)
        .mapping_changes()
        .iter()
        .map(|m| m.status)
        .collect();
    assert_eq!(
        statuses,
        [
            closeflow_close_tools::diff::Status::Added,
            closeflow_close_tools::diff::Status::Removed,
            closeflow_close_tools::diff::Status::Removed
        ]
    );
    let e = [closeflow_mapping::events::check(
        json!({"type": "identify", "traits": {"plan": "pro"}}),
    )];
    let (diffs, _) = run(&a, &b, &e, false);
    let renamed = diffs[0].mappings.iter().find(|m| m.name == "m2");
    assert!(renamed.is_none(), "a pure rename changes no event");
}
