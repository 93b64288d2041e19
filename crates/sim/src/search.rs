//! `POST /data/search/`: the query node types closeflow sends, evaluated over the records.

use serde_json::{Map, Value};

pub(crate) type Obj = Map<String, Value>;

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn text_matches(actual: &Value, mode: &str, want: &str) -> bool {
    let a = match actual {
        Value::String(s) => s.clone(),
        Value::Null => return false,
        other => other.to_string(),
    };
    match mode {
        // Word search, as Close's: every word of the value appears among the field's words, so
        // near matches come back (the client filters exactly).
        "full_words" => {
            let have = words(&a);
            let want = words(want);
            !want.is_empty() && want.iter().all(|w| have.contains(w))
        }
        "phrase" => a.to_lowercase().contains(&want.to_lowercase()),
        _ => a.trim().eq_ignore_ascii_case(want.trim()),
    }
}

fn condition(actual: Option<&Value>, cond: &Value) -> Result<bool, String> {
    let kind = cond.get("type").and_then(Value::as_str).unwrap_or_default();
    Ok(match kind {
        "text" => {
            let mode = cond
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("full_words");
            let want = cond
                .get("value")
                .and_then(Value::as_str)
                .ok_or("text condition needs a value")?;
            actual.is_some_and(|a| text_matches(a, mode, want))
        }
        "term" => {
            let values = cond
                .get("values")
                .and_then(Value::as_array)
                .ok_or("term condition needs values")?;
            actual.is_some_and(|a| values.contains(a))
        }
        "exists" => actual.is_some_and(|a| !a.is_null() && a != ""),
        "boolean" => actual.and_then(Value::as_bool) == cond.get("value").and_then(Value::as_bool),
        "number_range" => {
            let n = actual.and_then(Value::as_f64);
            let gte = cond.get("gte").and_then(Value::as_f64);
            let lte = cond.get("lte").and_then(Value::as_f64);
            n.is_some_and(|n| gte.is_none_or(|g| n >= g) && lte.is_none_or(|l| n <= l))
        }
        other => return Err(format!("unsupported condition type `{other}`")),
    })
}

/// Evaluates a query node against one object (`kind` is `lead`, `contact` or `contact_email`).
pub(crate) fn matches(
    node: &Value,
    kind: &str,
    obj: &Obj,
    contacts_of: &dyn Fn(&Obj) -> Vec<Obj>,
) -> Result<bool, String> {
    let t = node
        .get("type")
        .and_then(Value::as_str)
        .ok_or("every query node needs a `type`")?;
    let r = match t {
        "and" | "or" => {
            let qs = node
                .get("queries")
                .and_then(Value::as_array)
                .ok_or("`and`/`or` need `queries`")?;
            let mut acc = t == "and";
            for q in qs {
                let m = matches(q, kind, obj, contacts_of)?;
                if t == "and" { acc &= m } else { acc |= m }
            }
            acc
        }
        "object_type" => node.get("object_type").and_then(Value::as_str) == Some(kind),
        "id" => node.get("value").and_then(Value::as_str) == obj.get("id").and_then(Value::as_str),
        "text" => {
            let want = node
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            obj.get("name")
                .is_some_and(|n| text_matches(n, "phrase", want))
        }
        "has_related" => {
            let related = node
                .get("related_object_type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let q = node
                .get("related_query")
                .ok_or("has_related needs a related_query")?;
            let items: Vec<Obj> = match related {
                "contact_email" | "contact_phone" | "contact_url" => {
                    let key = &related["contact_".len()..];
                    obj.get(&format!("{key}s"))
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|e| e.as_object().cloned()).collect())
                        .unwrap_or_default()
                }
                "contact" => contacts_of(obj),
                other => return Err(format!("unsupported related_object_type `{other}`")),
            };
            let mut any = false;
            for i in &items {
                if matches(q, related, i, contacts_of)? {
                    any = true;
                    break;
                }
            }
            any
        }
        "field_condition" => {
            let field = node.get("field").ok_or("field_condition needs a field")?;
            let cond = node
                .get("condition")
                .ok_or("field_condition needs a condition")?;
            let actual = match field.get("type").and_then(Value::as_str) {
                Some("regular_field") => {
                    let ot = field
                        .get("object_type")
                        .and_then(Value::as_str)
                        .unwrap_or(kind);
                    if ot != kind {
                        return Ok(false);
                    }
                    let name = field
                        .get("field_name")
                        .and_then(Value::as_str)
                        .ok_or("regular_field needs field_name")?;
                    obj.get(name).cloned()
                }
                Some("custom_field") => {
                    let id = field
                        .get("custom_field_id")
                        .and_then(Value::as_str)
                        .ok_or("custom_field needs custom_field_id")?;
                    obj.get(&format!("custom.{id}")).cloned()
                }
                _ => return Err("unsupported field type".into()),
            };
            condition(actual.as_ref(), cond)?
        }
        other => return Err(format!("unsupported query node type `{other}`")),
    };
    let negate = node.get("negate").and_then(Value::as_bool).unwrap_or(false);
    Ok(r != negate)
}
