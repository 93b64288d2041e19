//! How records are stored and shown: a lead as replies show it (its contacts, labels, custom
//! values by name), `_fields` picking, and custom field values in the form Close stores them.

use crate::search::Obj;
use crate::store::Org;
use serde_json::{Map, Value, json};

pub(super) fn lead_view(st: &Org, l: &Obj) -> Value {
    let mut v = l.clone();
    let id = l.get("id").cloned().unwrap_or(Value::Null);
    let contacts: Vec<Value> = st
        .contacts
        .iter()
        .filter(|c| c.get("lead_id") == Some(&id))
        .map(|c| Value::Object(c.clone()))
        .collect();
    v.insert("contacts".into(), Value::Array(contacts));
    let status = l
        .get("status_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    v.insert("status_label".into(), st.status_label(status));
    let name = l
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    v.insert("display_name".into(), json!(name));
    v.insert(
        "html_url".into(),
        json!(format!(
            "https://app.close.com/lead/{}/",
            id.as_str().unwrap_or_default()
        )),
    );
    v.entry("url").or_insert(Value::Null);
    v.entry("organization_id").or_insert(json!("orga_sim"));
    // Replies also carry the values keyed by the custom field's *name* (a legacy form).
    let custom: Map<String, Value> = l
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("custom.")?;
            Some((custom_name(&st.custom_fields, "lead", id), v.clone()))
        })
        .collect();
    v.insert("custom".into(), Value::Object(custom));
    for k in ["addresses", "opportunities", "tasks", "integration_links"] {
        v.entry(k).or_insert(json!([]));
    }
    for k in ["created_by", "updated_by"] {
        v.entry(k).or_insert(json!("user_sim"));
    }
    for k in ["created_by_name", "updated_by_name"] {
        v.entry(k).or_insert(json!("Sim"));
    }
    Value::Object(v)
}

pub(super) fn pick(v: &Value, fields: Option<&str>) -> Value {
    let Some(fields) = fields else {
        return v.clone();
    };
    let Value::Object(m) = v else {
        return v.clone();
    };
    let wanted: Vec<&str> = fields.split(',').collect();
    Value::Object(
        m.iter()
            .filter(|(k, _)| wanted.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// A custom field's name by id (its id when the org does not define it).
fn custom_name(fields: &Obj, kind: &str, id: &str) -> String {
    [kind, "shared"]
        .iter()
        .filter_map(|k| fields.get(*k).and_then(Value::as_array))
        .flatten()
        .find(|f| f.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|f| f.get("name").and_then(Value::as_str))
        .unwrap_or(id)
        .to_string()
}

/// The type of a custom field by id, from any of the org's custom field lists.
fn custom_type<'a>(fields: &'a Obj, id: &str) -> Option<&'a str> {
    fields
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .find(|f| f.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|f| f.get("type").and_then(Value::as_str))
}

/// Close stores a `date` as `YYYY-MM-DD` and a `datetime` as the same instant in UTC, written
/// `YYYY-MM-DDTHH:MM:SS[.fraction]+00:00` (recorded).
fn stored_form(kind: Option<&str>, v: &Value) -> Value {
    if let Value::Array(items) = v {
        return Value::Array(items.iter().map(|x| stored_form(kind, x)).collect());
    }
    let Some(s) = v.as_str() else {
        return v.clone();
    };
    match kind {
        Some("date") if s.len() >= 10 && s.as_bytes()[4] == b'-' => json!(s[..10]),
        Some("datetime") => utc(s).map_or_else(|| v.clone(), Value::String),
        _ => v.clone(),
    }
}

/// An RFC 3339 time rewritten in UTC; `None` when it is not one.
fn utc(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if s.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    // The fraction is kept as written (none when it is all zeros).
    let mut frac = String::new();
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        rest = &r[digits.len()..];
        if !digits.trim_end_matches('0').is_empty() {
            frac = format!(".{digits}");
        }
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs = crate::store::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let text = crate::store::format_rfc3339(secs, 0);
    Some(format!("{}{frac}+00:00", &text[..19]))
}

pub(super) fn apply_fields(target: &mut Obj, body: &Obj, allowed: &[&str], fields: &Obj) {
    for (k, v) in body {
        if let Some(id) = k.strip_prefix("custom.") {
            if k.ends_with(".add") || k.ends_with(".remove") {
                continue;
            }
            if v.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), stored_form(custom_type(fields, id), v));
            }
        } else if allowed.contains(&k.as_str()) {
            target.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sim;

    #[test]
    fn datetimes_are_stored_as_the_same_instant_in_utc() {
        let dt = |s: &str| stored_form(Some("datetime"), &json!(s));
        assert_eq!(dt("2026-01-01T10:00:00Z"), "2026-01-01T10:00:00+00:00");
        assert_eq!(
            dt("2026-01-01T10:00:00.000+00:00"),
            "2026-01-01T10:00:00+00:00"
        );
        assert_eq!(
            dt("2026-01-01T02:30:00.25+05:30"),
            "2025-12-31T21:00:00.25+00:00"
        );
        assert_eq!(dt("2026-03-01T01:00:00-02:00"), "2026-03-01T03:00:00+00:00");
        assert_eq!(dt("not a time"), "not a time");
        assert_eq!(
            stored_form(Some("date"), &json!(["2026-01-05T10:00:00Z"])),
            json!(["2026-01-05"])
        );
    }

    #[test]
    fn lead_replies_key_custom_by_field_name() {
        let sim = Sim::from_snapshot(Some(&json!({
            "custom_fields": {"lead": [{"id": "cf_plan", "name": "Plan", "type": "text"}]},
            "leads": [{"id": "lead_1", "custom.cf_plan": "pro", "custom.cf_other": 1}]
        })))
        .unwrap();
        let st = sim.lock();
        let v = lead_view(&st, &st.leads[0]);
        assert_eq!(v["custom"], json!({"Plan": "pro", "cf_other": 1}));
        assert_eq!(v["custom.cf_plan"], "pro");
    }
}
