//! Mapping tests (`<instance>.test.yaml`): an event and what must come of it: not triggered,
//! the mapped payload, and/or the plan against a given Close state. The runner returns expected
//! and actual side by side; frontends render the difference.
//!
//! ```yaml
//! state: default.state.json          # optional: the Close state plans are made against
//! tests:
//!   - name: Ada's new address is appended
//!     event: {type: identify, userId: u_42, traits: {email: ada@acme.com}}
//!     mapping: Identify → contact and lead   # optional when one mapping matches
//!     expect:
//!       payload: {contact_email: ada@acme.com, contact_external_id: u_42}
//!       plan:
//!         - unchanged lead_19aKq2
//!         - update_contact: cont_8f2Lm1
//!           changes: {emails: [ada@old.io, ada@acme.com]}
//!   - name: Page views are ignored
//!     event: {type: page, name: Home}
//!     expect: not_triggered
//! ```

use crate::plan::Step;
use crate::run;
use crate::state::State;
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct TestFile {
    pub state: Option<String>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub event: Value,
    pub mapping: Option<String>,
    pub not_triggered: bool,
    pub payload: Option<Value>,
    pub plan: Option<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub failures: Vec<Failure>,
}

/// One unmet expectation: what was expected, what happened (both as JSON for diffing).
#[derive(Debug, Clone)]
pub struct Failure {
    pub what: String,
    pub expected: Value,
    pub actual: Value,
}

fn err<T>(m: impl Into<String>) -> Result<T, String> {
    Err(m.into())
}

/// Reads a test file (already parsed from YAML to JSON).
pub fn parse(v: &Value) -> Result<TestFile, String> {
    let Some(m) = v.as_object() else {
        return err("a test file is a mapping with `tests:`");
    };
    for k in m.keys() {
        if !["state", "tests", "instance"].contains(&k.as_str()) {
            return err(format!("unknown key `{k}` (keys: instance, state, tests)"));
        }
    }
    let state = m.get("state").and_then(Value::as_str).map(str::to_string);
    let Some(Value::Array(tests)) = m.get("tests") else {
        return err("`tests` must be a list");
    };
    let mut cases = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        let Some(t) = t.as_object() else {
            return err(format!("tests[{i}] must be a mapping"));
        };
        for k in t.keys() {
            if !["name", "event", "mapping", "expect"].contains(&k.as_str()) {
                return err(format!(
                    "tests[{i}]: unknown key `{k}` (keys: name, event, mapping, expect)"
                ));
            }
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("test {}", i + 1), str::to_string);
        let Some(event) = t.get("event").cloned() else {
            return err(format!("{name}: no `event`"));
        };
        let mut case = Case {
            name: name.clone(),
            event,
            mapping: t.get("mapping").and_then(Value::as_str).map(str::to_string),
            not_triggered: false,
            payload: None,
            plan: None,
        };
        match t.get("expect") {
            Some(Value::String(s)) if s == "not_triggered" => case.not_triggered = true,
            Some(Value::Object(e)) => {
                for k in e.keys() {
                    if !["payload", "plan", "not_triggered"].contains(&k.as_str()) {
                        return err(format!(
                            "{name}: unknown expectation `{k}` (payload, plan, not_triggered)"
                        ));
                    }
                }
                case.not_triggered = e
                    .get("not_triggered")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                case.payload = e.get("payload").cloned();
                case.plan = match e.get("plan") {
                    None => None,
                    Some(Value::Array(a)) => Some(a.clone()),
                    Some(_) => return err(format!("{name}: `plan` must be a list of steps")),
                };
            }
            _ => {
                return err(format!(
                    "{name}: `expect` must be `not_triggered` or a mapping with payload/plan"
                ));
            }
        }
        cases.push(case);
    }
    Ok(TestFile { state, cases })
}

/// A step as a test states it: `kind`, `kind id`, `{kind: id, changes: {...}}`, `{skipped: reason}`.
fn step_matches(expected: &Value, s: &Step) -> bool {
    let kind = serde_json::to_value(s.kind).unwrap_or_default();
    let kind = kind.as_str().unwrap_or_default();
    match expected {
        Value::String(text) => {
            let mut parts = text.split_whitespace();
            let k = parts.next().unwrap_or_default();
            let rest = parts.next();
            k == kind
                && match rest {
                    None => true,
                    Some(r) if kind == "skipped" => s.reason.as_deref() == Some(r),
                    Some(id) => s.id.as_deref() == Some(id),
                }
        }
        Value::Object(m) => {
            let Some((k, v)) = m.iter().find(|(k, _)| *k != "changes") else {
                return false;
            };
            if k != kind {
                return false;
            }
            let target_ok = match (kind, v) {
                ("skipped", Value::String(r)) => s.reason.as_deref() == Some(r.as_str()),
                (_, Value::String(id)) => s.id.as_deref() == Some(id.as_str()),
                (_, Value::Null) => true,
                _ => false,
            };
            let changes_ok = match m.get("changes") {
                None => true,
                Some(Value::Object(want)) => want
                    .iter()
                    .all(|(f, after)| s.changes.iter().any(|c| &c.field == f && &c.after == after)),
                Some(_) => false,
            };
            target_ok && changes_ok
        }
        _ => false,
    }
}

/// How a step reads in a test file (for showing what actually happened).
pub fn step_text(s: &Step) -> Value {
    let kind = serde_json::to_value(s.kind).unwrap_or_default();
    let kind = kind.as_str().unwrap_or_default().to_string();
    let target = if kind == "skipped" {
        s.reason.clone()
    } else {
        s.id.clone()
    };
    if s.changes.is_empty() {
        return json!(match target {
            Some(t) => format!("{kind} {t}"),
            None => kind,
        });
    }
    let changes: Map<String, Value> = s
        .changes
        .iter()
        .map(|c| (c.field.clone(), c.after.clone()))
        .collect();
    json!({ kind: target, "changes": changes })
}

pub async fn run_case(inst: &Instance, state: &State, case: &Case) -> Outcome {
    let mut failures = Vec::new();
    let entry = closeflow_mapping::events::check(case.event.clone());
    if let Entry::Invalid { message, .. } = &entry {
        failures.push(Failure {
            what: "the event is invalid".into(),
            expected: json!("a valid event"),
            actual: json!(message),
        });
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    }
    let mut overlay = State::default();
    let report = run::dry_run(inst, state, &mut overlay, 0, &entry).await;
    let matched: Vec<&run::MappingReport> = report.mappings.iter().filter(|m| m.matched).collect();
    let names: Vec<&str> = matched.iter().map(|m| m.name.as_str()).collect();
    let chosen = match &case.mapping {
        Some(n) => {
            if !inst.mappings.iter().any(|m| &m.name == n) {
                failures.push(Failure {
                    what: format!("no mapping is named \"{n}\""),
                    expected: json!(n),
                    actual: json!(
                        inst.mappings
                            .iter()
                            .map(|m| m.name.clone())
                            .collect::<Vec<_>>()
                    ),
                });
                return Outcome {
                    name: case.name.clone(),
                    failures,
                };
            }
            matched.iter().find(|m| &m.name == n).copied()
        }
        None => matched.first().copied(),
    };
    if case.not_triggered {
        let fired = match &case.mapping {
            Some(_) => chosen.is_some(),
            None => !matched.is_empty(),
        };
        if fired {
            failures.push(Failure {
                what: "expected no mapping to fire".into(),
                expected: json!([]),
                actual: json!(names),
            });
        }
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    }
    let Some(m) = chosen else {
        failures.push(Failure {
            what: "expected a mapping to fire".into(),
            expected: json!(case.mapping.clone().unwrap_or_else(|| "any mapping".into())),
            actual: json!(names),
        });
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    };
    if case.mapping.is_none() && matched.len() > 1 {
        failures.push(Failure {
            what: "several mappings fire; name the one this test is about with `mapping:`".into(),
            expected: json!("one mapping"),
            actual: json!(names),
        });
    }
    if let Some(e) = &m.error {
        failures.push(Failure {
            what: "the mapping failed".into(),
            expected: json!("no error"),
            actual: json!(e),
        });
    }
    if let Some(want) = &case.payload {
        let got = m.payload.clone().map_or(Value::Null, Value::Object);
        if &got != want {
            failures.push(Failure {
                what: "payload".into(),
                expected: want.clone(),
                actual: got,
            });
        }
    }
    if let Some(want) = &case.plan {
        let ok = want.len() == m.steps.len()
            && want.iter().zip(&m.steps).all(|(w, s)| step_matches(w, s));
        if !ok {
            failures.push(Failure {
                what: "plan".into(),
                expected: Value::Array(want.clone()),
                actual: Value::Array(m.steps.iter().map(step_text).collect()),
            });
        }
    }
    Outcome {
        name: case.name.clone(),
        failures,
    }
}
