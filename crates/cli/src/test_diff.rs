//! The diff a failing mapping test prints: expected against actual, by structure rather than
//! by text, so that only the fields that differ are marked. A line diff of pretty-printed JSON
//! would also mark equal fields whose order or trailing comma changed.
//!
//! It reads like a diff of the test file itself: a sign column, then YAML-style lines
//! (`key: value`, `- item`), with values in JSON so that `"5"` and `5` stay apart.

use closeflow_close_tools::testing::Failure;
use serde_json::Value;
use std::fmt::Write as _;

pub fn diff(f: &Failure) -> String {
    let mut lines = Vec::new();
    value(&mut lines, 0, "", None, Some(&f.expected), Some(&f.actual));
    let mut out = String::new();
    let _ = writeln!(out, "      {} differs (- expected, + actual):", f.what);
    for (sign, text) in lines {
        let _ = writeln!(out, "      {sign} {text}");
    }
    out
}

type Lines = Vec<(char, String)>;

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One value on both sides at one place: `lead` is what goes before it on its first line (`- `
/// for a list item), `key` its key in a mapping.
fn value(
    out: &mut Lines,
    indent: usize,
    lead: &str,
    key: Option<&str>,
    e: Option<&Value>,
    a: Option<&Value>,
) {
    let pad = " ".repeat(indent);
    let label = key.map(|k| format!("{k}: ")).unwrap_or_default();
    let line = |sign: char, v: &Value| (sign, format!("{pad}{lead}{label}{}", compact(v)));
    match (e, a) {
        (Some(e), Some(a)) if e == a => out.push(line(' ', e)),
        (Some(Value::Object(e)), Some(Value::Object(a))) => {
            let (first, rest) = children(out, indent, lead, key);
            let keys = e.keys().chain(a.keys().filter(|k| !e.contains_key(*k)));
            for (i, k) in keys.enumerate() {
                let (ind, ld) = if i == 0 { &first } else { &rest };
                value(out, *ind, ld, Some(k), e.get(k), a.get(k));
            }
        }
        (Some(Value::Array(e)), Some(Value::Array(a))) => {
            let (first, rest) = children(out, indent, lead, key);
            let mut at = first;
            for (ei, ai) in align(e, a) {
                value(out, at.0, &format!("{}- ", at.1), None, ei, ai);
                at = rest.clone();
            }
        }
        (e, a) => {
            if let Some(e) = e {
                out.push(line('-', e));
            }
            if let Some(a) = a {
                out.push(line('+', a));
            }
        }
    }
}

/// Where the children of a collection go: a `key:` line of their own first, or (for a list item
/// with no key) the first child on the item's own line. Returns (indent, lead) for the first
/// child and for the others.
fn children(
    out: &mut Lines,
    indent: usize,
    lead: &str,
    key: Option<&str>,
) -> ((usize, String), (usize, String)) {
    match key {
        Some(k) => {
            out.push((' ', format!("{}{lead}{k}:", " ".repeat(indent))));
            let inner = indent + lead.len() + 2;
            ((inner, String::new()), (inner, String::new()))
        }
        None => (
            (indent, lead.to_string()),
            (indent + lead.chars().count(), String::new()),
        ),
    }
}

/// List items paired up: equal items by a sequence diff, and the items between them pairwise
/// (so that a changed step is diffed field by field), the rest as removed or added.
fn align<'v>(e: &'v [Value], a: &'v [Value]) -> Vec<(Option<&'v Value>, Option<&'v Value>)> {
    let es: Vec<String> = e.iter().map(compact).collect();
    let as_: Vec<String> = a.iter().map(compact).collect();
    let mut out = Vec::new();
    let mut removed: Vec<&Value> = Vec::new();
    fn flush<'v>(
        out: &mut Vec<(Option<&'v Value>, Option<&'v Value>)>,
        removed: &mut Vec<&'v Value>,
        added: &'v [Value],
    ) {
        let n = removed.len().max(added.len());
        for i in 0..n {
            out.push((removed.get(i).copied(), added.get(i)));
        }
        removed.clear();
    }
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &es, &as_) {
        match op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                flush(&mut out, &mut removed, &[]);
                for i in 0..len {
                    out.push((Some(&e[old_index + i]), Some(&a[new_index + i])));
                }
            }
            similar::DiffOp::Delete {
                old_index, old_len, ..
            } => removed.extend(&e[old_index..old_index + old_len]),
            similar::DiffOp::Insert {
                new_index, new_len, ..
            } => flush(&mut out, &mut removed, &a[new_index..new_index + new_len]),
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                removed.extend(&e[old_index..old_index + old_len]);
                flush(&mut out, &mut removed, &a[new_index..new_index + new_len]);
            }
        }
    }
    flush(&mut out, &mut removed, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failure(expected: Value, actual: Value) -> String {
        diff(&Failure {
            what: "payload".into(),
            expected,
            actual,
        })
    }

    fn marked(d: &str) -> Vec<&str> {
        d.lines()
            .skip(1)
            .filter(|l| matches!(l.as_bytes().get(6), Some(b'-' | b'+')))
            .collect()
    }

    #[test]
    fn only_fields_that_differ_are_marked() {
        let d = failure(
            json!({"contact_name": "Ada", "contact_email": "ada@acme.com", "lead_custom_fields": {"cf_plan": "free", "cf_seats": 5}}),
            json!({"contact_email": "ada@acme.com", "contact_name": "Ada", "contact_title": "CTO",
                   "lead_custom_fields": {"cf_plan": "pro", "cf_seats": 5}}),
        );
        assert_eq!(
            marked(&d),
            vec![
                "      -   cf_plan: \"free\"",
                "      +   cf_plan: \"pro\"",
                "      + contact_title: \"CTO\"",
            ],
            "{d}"
        );
        assert!(d.contains("        contact_name: \"Ada\""), "{d}");
    }

    #[test]
    fn plan_steps_are_diffed_one_by_one() {
        let d = failure(
            json!(["unchanged lead_1", {"update_contact": "cont_1", "changes": {"title": "CTO"}}]),
            json!(["unchanged lead_1", {"update_contact": "cont_1", "changes": {"title": "CEO"}}, "skipped no_contact_key"]),
        );
        assert_eq!(
            marked(&d),
            vec![
                "      -     title: \"CTO\"",
                "      +     title: \"CEO\"",
                "      + - \"skipped no_contact_key\"",
            ],
            "{d}"
        );
        assert!(d.contains("        - update_contact: \"cont_1\""), "{d}");
    }
}
