//! The differential test's generators: random snapshots with the gaps a hand-written one has,
//! and random event streams over the same people and companies.

use super::*;

pub(super) fn types() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("cf_company", "text"),
        ("cf_plan", "text"),
        ("cf_seen", "datetime"),
        ("cf_tags", "text"),
        ("cf_user", "text"),
        ("cf_day", "date"),
        ("cf_score", "number"),
    ])
}

pub(super) fn pick<T: Clone + std::fmt::Debug + 'static>(
    xs: &'static [T],
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), proptest::sample::select(xs).prop_map(Some)]
}

pub(super) const DATES: &[&str] = &[
    "2026-01-01T05:00:00+00:00",
    "2026-01-01T09:00:00+05:00",
    "2026-01-01T04:30:00Z",
    "2025-06-01T00:00:00.5+00:00",
];
pub(super) const SEEN: &[&str] = &[
    "2026-02-01T10:00:00Z",
    "2026-02-01T10:00:00+00:00",
    "2026-02-01T12:00:00+02:00",
    "2026-02-02T10:00:00.250Z",
];
pub(super) const DAYS: &[&str] = &["2026-03-04", "2026-03-04T22:00:00Z", "2026-03-05"];
pub(super) const EMAILS: &[&str] = &["a@x.com", "A@X.com", "b@x.com", "c@y.org"];

pub(super) type Text = Option<&'static str>;
/// A contact: email, User ID, email given as a plain string, date created, day, score.
pub(super) type ContactParts = (Text, Text, bool, Text, Text, Option<i64>);

pub(super) fn contact_strategy() -> impl Strategy<Value = ContactParts> {
    (
        pick(EMAILS),
        pick(&["u1", "u2", "u3"]),
        any::<bool>(),
        pick(DATES),
        pick(DAYS),
        pick(&[3i64, 7]),
    )
}

pub(super) fn lead_strategy() -> impl Strategy<Value = Value> {
    (
        pick(&["c1", "c2", "c3"]),
        pick(DATES),
        pick(&["stat_a", "stat_b"]),
        pick(&["free", "pro"]),
        any::<bool>(),
        pick(SEEN),
        proptest::collection::vec(contact_strategy(), 0..3),
    )
        .prop_map(|(company, date, status, plan, nested, seen, contacts)| {
            let mut l = Map::new();
            if let Some(c) = company {
                l.insert("custom.cf_company".into(), json!(c));
            }
            if let Some(d) = date {
                l.insert("date_created".into(), json!(d));
            }
            if let Some(s) = status {
                l.insert("status_id".into(), json!(s));
            }
            let mut custom = Map::new();
            if let Some(p) = plan {
                custom.insert("Plan".into(), json!(p));
            }
            if let Some(s) = seen {
                custom.insert("Seen".into(), json!(s));
            }
            if nested {
                l.insert("custom".into(), Value::Object(custom));
            } else {
                for (k, v) in custom {
                    let id = if k == "Plan" { "cf_plan" } else { "cf_seen" };
                    l.insert(format!("custom.{id}"), v);
                }
            }
            let cs: Vec<Value> = contacts
                .into_iter()
                .map(|(email, user, plain, date, day, score)| {
                    let mut c = Map::new();
                    if let Some(e) = email {
                        c.insert(
                            "emails".into(),
                            if plain {
                                json!([e])
                            } else {
                                json!([{"email": e, "type": "office"}])
                            },
                        );
                    }
                    if let Some(u) = user {
                        c.insert("custom.cf_user".into(), json!(u));
                    }
                    if let Some(d) = date {
                        c.insert("date_created".into(), json!(d));
                    }
                    if let Some(d) = day {
                        c.insert("custom.cf_day".into(), json!(d));
                    }
                    if let Some(s) = score {
                        c.insert("custom.cf_score".into(), json!(s));
                    }
                    Value::Object(c)
                })
                .collect();
            l.insert("contacts".into(), Value::Array(cs));
            Value::Object(l)
        })
}

pub(super) fn snapshot_strategy() -> impl Strategy<Value = Value> {
    proptest::collection::vec(lead_strategy(), 0..4).prop_map(|leads| {
        let leads: Vec<Value> = leads
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                l["id"] = json!(format!("lead_{i}"));
                if let Some(cs) = l["contacts"].as_array_mut() {
                    for (j, c) in cs.iter_mut().enumerate() {
                        c["id"] = json!(format!("cont_{i}_{j}"));
                    }
                }
                l
            })
            .collect();
        json!({
            "api_keys": ["test_key"],
            "limits": {"search": 100000, "other": 100000, "delete_lead": 100000, "window_secs": 8.0},
            "custom_fields": {
                "lead": [{"id": "cf_company", "name": "Company ID", "type": "text"},
                         {"id": "cf_plan", "name": "Plan", "type": "text"},
                         {"id": "cf_seen", "name": "Seen", "type": "datetime"},
                         {"id": "cf_tags", "name": "Tags", "type": "text", "accepts_multiple_values": true}],
                "contact": [{"id": "cf_user", "name": "User ID", "type": "text"},
                            {"id": "cf_day", "name": "Day", "type": "date"},
                            {"id": "cf_score", "name": "Score", "type": "number"}]},
            "lead_statuses": [{"id": "stat_a", "label": "A"}, {"id": "stat_b", "label": "B"}],
            "leads": leads,
        })
    })
}

pub(super) fn event_strategy() -> impl Strategy<Value = Value> {
    let identify = (
        pick(&["u1", "u2", "u4"]),
        pick(EMAILS),
        pick(&["Ada", "Bob"]),
        pick(&["Lovelace"]),
        pick(&["c1", "c2", "c4"]),
        (
            pick(&["free", "pro"]),
            pick(SEEN),
            pick(&["vip", "beta"]),
            pick(DAYS),
            pick(&["3", "\"7\"", "7.0"]),
        ),
        pick(&[false, true]),
    )
        .prop_map(
            |(user, email, first, last, company, (plan, seen, tag, day, score), dup)| {
                let mut t = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        t.insert(k.into(), v);
                    }
                };
                put("email", email.map(|e| json!(e)));
                put("first_name", first.map(|e| json!(e)));
                put("last_name", last.map(|e| json!(e)));
                put(
                    "company",
                    company.map(|c| json!({"id": c, "name": format!("Co {c}")})),
                );
                put("plan", plan.map(|e| json!(e)));
                put("seen", seen.map(|e| json!(e)));
                put("tag", tag.map(|e| json!(e)));
                put("day", day.map(|e| json!(e)));
                put("score", score.map(|s| serde_json::from_str(s).unwrap()));
                put("dup", dup.map(|e| json!(e)));
                let mut e = json!({"type": "identify", "traits": t});
                if let Some(u) = user {
                    e["userId"] = json!(u);
                }
                e
            },
        );
    let group = (
        proptest::sample::select(&["c1", "c2", "c4"][..]),
        pick(&["Acme", "Beta"]),
    )
        .prop_map(|(g, name)| {
            let mut e = json!({"type": "group", "groupId": g, "traits": {}});
            if let Some(n) = name {
                e["traits"]["name"] = json!(n);
            }
            e
        });
    prop_oneof![3 => identify, 1 => group]
}
