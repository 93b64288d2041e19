//! Comparing one mapping's outcome under two versions: payloads field by field, plans step by
//! step. Every result is ordered by what it is about (field path; record), never by which
//! version listed it first, so swapping the versions mirrors the result exactly.

use super::{MappingChange, MappingDiff, Side};
use closeflow_close::plan::{Object, Step, StepKind};
use closeflow_close::run::MappingReport;
use serde::Serialize;
use serde_json::{Map, Value};

/// `+` only in the new version, `-` only in the old one, `~` in both, different.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "+")]
    Added,
    #[serde(rename = "-")]
    Removed,
    #[serde(rename = "~")]
    Changed,
}

impl Op {
    pub fn marker(self) -> char {
        match self {
            Op::Added => '+',
            Op::Removed => '-',
            Op::Changed => '~',
        }
    }
    pub fn mirrored(self) -> Op {
        match self {
            Op::Added => Op::Removed,
            Op::Removed => Op::Added,
            Op::Changed => Op::Changed,
        }
    }
}

/// One payload field (a dotted path into nested objects) that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub op: Op,
    /// The old version's value; absent for `+`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The new version's value; absent for `-`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

impl FieldChange {
    fn new(field: String, before: Option<&Value>, after: Option<&Value>) -> FieldChange {
        let op = match (before, after) {
            (None, _) => Op::Added,
            (_, None) => Op::Removed,
            _ => Op::Changed,
        };
        FieldChange {
            field,
            op,
            before: before.cloned(),
            after: after.cloned(),
        }
    }
}

/// One step of a plan that appears (`+`), disappears (`-`) or changes (`~`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepChange {
    pub op: Op,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Step>,
    /// For `~`: the fields the step writes differently (`before`/`after` are what each version
    /// would write).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

impl StepChange {
    /// A one-line description for grouping, e.g. `update_contact title → skipped:
    /// allow_updating_existing_contacts`.
    pub fn brief(&self) -> String {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => {
                let (o, n) = (brief(o), brief(n));
                if o == n {
                    format!("{n} (other values)")
                } else {
                    format!("{o} → {n}")
                }
            }
            (None, Some(n)) => format!("+ {}", brief(n)),
            (Some(o), None) => format!("- {}", brief(o)),
            (None, None) => String::new(),
        }
    }
}

/// The fields a brief names at most (then `…`).
const BRIEF_FIELDS: usize = 4;

fn brief(s: &Step) -> String {
    match s.kind {
        StepKind::Skipped => format!(
            "skipped {}: {}",
            s.object.as_str(),
            s.reason.as_deref().unwrap_or("skipped")
        ),
        StepKind::Unchanged => format!("unchanged {}", s.object.as_str()),
        k => {
            let mut fields: Vec<&str> = s
                .changes
                .iter()
                .take(BRIEF_FIELDS)
                .map(|c| c.field.as_str())
                .collect();
            if s.changes.len() > BRIEF_FIELDS {
                fields.push("…");
            }
            if fields.is_empty() {
                k.as_str().to_string()
            } else {
                format!("{} {}", k.as_str(), fields.join(", "))
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(
    prefix: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<FieldChange>,
) {
    for (k, o) in old {
        match new.get(k) {
            None => out.push(FieldChange::new(join(prefix, k), Some(o), None)),
            Some(n) if n == o => {}
            Some(n) => match (o, n) {
                (Value::Object(o), Value::Object(n)) => walk(&join(prefix, k), o, n, out),
                _ => out.push(FieldChange::new(join(prefix, k), Some(o), Some(n))),
            },
        }
    }
    for (k, n) in new {
        if !old.contains_key(k) {
            out.push(FieldChange::new(join(prefix, k), None, Some(n)));
        }
    }
}

/// Payload fields that differ, descending into nested objects (custom fields), sorted by path.
/// A field absent on one side is `+`/`-`; `null` is a value (the engine keeps it).
pub fn payload_changes(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn step_fields(o: &Step, n: &Step) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for c in &o.changes {
        match n.changes.iter().find(|x| x.field == c.field) {
            None => out.push(FieldChange::new(c.field.clone(), Some(&c.after), None)),
            Some(x) if x.after == c.after => {}
            Some(x) => out.push(FieldChange::new(
                c.field.clone(),
                Some(&c.after),
                Some(&x.after),
            )),
        }
    }
    for x in &n.changes {
        if !o.changes.iter().any(|c| c.field == x.field) {
            out.push(FieldChange::new(x.field.clone(), None, Some(&x.after)));
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// What a step is about: the record (object and id; records to be created have no id yet and
/// are told apart by their order among such steps).
type StepKey<'s> = (u8, Option<&'s str>, usize);

fn keys(steps: &[Step]) -> Vec<StepKey<'_>> {
    let mut seen: Vec<(u8, Option<&str>)> = Vec::new();
    steps
        .iter()
        .map(|s| {
            let k = (
                match s.object {
                    Object::Lead => 0,
                    Object::Contact => 1,
                },
                s.id.as_deref(),
            );
            let nth = seen.iter().filter(|x| **x == k).count();
            seen.push(k);
            (k.0, k.1, nth)
        })
        .collect()
}

/// Steps that appear, disappear or change, pairing the two plans' steps by the record they are
/// about (so "update_contact cont_1" becoming "skipped: …" for cont_1 is one change).
pub fn plan_changes(old: &[Step], new: &[Step]) -> Vec<StepChange> {
    let (ok, nk) = (keys(old), keys(new));
    let mut out: Vec<(StepKey<'_>, StepChange)> = Vec::new();
    for (o, k) in old.iter().zip(&ok) {
        match nk.iter().position(|x| x == k) {
            Some(j) if new[j] == *o => {}
            Some(j) => out.push((
                *k,
                StepChange {
                    op: Op::Changed,
                    old: Some(o.clone()),
                    new: Some(new[j].clone()),
                    fields: step_fields(o, &new[j]),
                },
            )),
            None => out.push((
                *k,
                StepChange {
                    op: Op::Removed,
                    old: Some(o.clone()),
                    new: None,
                    fields: vec![],
                },
            )),
        }
    }
    for (n, k) in new.iter().zip(&nk) {
        if !ok.contains(k) {
            out.push((
                *k,
                StepChange {
                    op: Op::Added,
                    old: None,
                    new: Some(n.clone()),
                    fields: vec![],
                },
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, c)| c).collect()
}

fn same_outcome(a: Option<&MappingReport>, b: Option<&MappingReport>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.matched == b.matched
                && a.error == b.error
                && a.payload == b.payload
                && a.steps == b.steps
        }
        // A mapping absent from a version (added, removed, disabled) matches nothing there.
        _ => !a.is_some_and(|r| r.matched) && !b.is_some_and(|r| r.matched),
    }
}

/// The difference for one mapping, or `None` when both versions did the same with the event.
pub fn mapping(
    mc: &MappingChange,
    old: Option<&MappingReport>,
    new: Option<&MappingReport>,
) -> Option<MappingDiff> {
    if same_outcome(old, new) {
        return None;
    }
    let (old, new) = (Side::of(old), Side::of(new));
    let both = old.matched && new.matched;
    let payload_changes = match (&old.payload, &new.payload) {
        (Some(o), Some(n)) if both => payload_changes(o, n),
        _ => vec![],
    };
    let plan_changes = if both {
        plan_changes(&old.steps, &new.steps)
    } else {
        vec![]
    };
    Some(MappingDiff {
        instance: mc.instance.clone(),
        name: mc.name.clone(),
        old_name: mc.old_name.clone(),
        status: mc.status,
        old,
        new,
        payload_changes,
        plan_changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeflow_close::plan::Change;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn payload_fields_descend_into_objects_and_keep_null_as_a_value() {
        let old = map(json!({"a": 1, "b": {"x": "1", "y": "2"}, "gone": null, "same": "s"}));
        let new = map(json!({"a": 2, "b": {"x": "1", "z": "3"}, "added": true, "same": "s"}));
        let c = payload_changes(&old, &new);
        let got: Vec<(&str, char)> = c
            .iter()
            .map(|c| (c.field.as_str(), c.op.marker()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", '~'),
                ("added", '+'),
                ("b.y", '-'),
                ("b.z", '+'),
                ("gone", '-')
            ]
        );
        assert_eq!(c[4].before, Some(Value::Null));
        assert_eq!(c[4].after, None);
    }

    fn step(kind: StepKind, id: Option<&str>, fields: &[(&str, Value)]) -> Step {
        Step {
            kind,
            object: Object::Contact,
            id: id.map(str::to_string),
            lead_id: None,
            reason: (kind == StepKind::Skipped).then(|| "allow_updating_existing_contacts".into()),
            changes: fields
                .iter()
                .map(|(f, v)| Change {
                    field: f.to_string(),
                    before: Value::Null,
                    after: v.clone(),
                })
                .collect(),
            label: None,
            body: Map::new(),
            nested: false,
        }
    }

    #[test]
    fn steps_pair_by_record_and_briefs_read_as_before_after() {
        let old = [
            step(
                StepKind::UpdateContact,
                Some("cont_1"),
                &[("title", json!("CTO"))],
            ),
            step(StepKind::Unchanged, Some("cont_2"), &[]),
        ];
        let new = [
            step(
                StepKind::Skipped,
                Some("cont_1"),
                &[("title", json!("CTO"))],
            ),
            step(StepKind::UpdateContact, None, &[]),
        ];
        let c = plan_changes(&old, &new);
        let briefs: Vec<String> = c.iter().map(StepChange::brief).collect();
        assert_eq!(
            briefs,
            [
                "+ update_contact",
                "update_contact title → skipped contact: allow_updating_existing_contacts",
                "- unchanged contact"
            ]
        );
        assert!(
            c[1].fields.is_empty(),
            "the same field written: no field change"
        );
    }
}
