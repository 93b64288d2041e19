//! Custom field values as Close stores them. Close keeps a `date` as `YYYY-MM-DD`, a `datetime`
//! as an instant (rewritten in UTC) and a `number` as a number, so the text a mapping sends and
//! the text Close gives back can differ while the value is the same; the planner compares values
//! here, so that replaying an applied event writes nothing.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A custom field's type, as `GET /custom_field/…` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Number,
    Date,
    Datetime,
    /// Any other type (choices, user, …), or a field whose type is unknown: compared as text.
    Other,
}

impl FieldType {
    pub fn parse(s: &str) -> FieldType {
        match s {
            "text" => FieldType::Text,
            "number" => FieldType::Number,
            "date" => FieldType::Date,
            "datetime" => FieldType::Datetime,
            _ => FieldType::Other,
        }
    }
}

/// The organisation's custom field types by field id (lead and contact fields together: their
/// ids differ, and a shared field has one type).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTypes(Arc<HashMap<String, FieldType>>);

impl FieldTypes {
    /// From lists of custom field definitions (`[{"id", "type", …}]`), as the API and the
    /// simulator snapshot's `custom_fields` give them.
    pub fn from_definitions<'a>(lists: impl IntoIterator<Item = &'a Value>) -> FieldTypes {
        let mut m = HashMap::new();
        for f in lists.into_iter().filter_map(Value::as_array).flatten() {
            if let (Some(id), Some(t)) = (
                f.get("id").and_then(Value::as_str),
                f.get("type").and_then(Value::as_str),
            ) {
                m.insert(id.to_string(), FieldType::parse(t));
            }
        }
        FieldTypes(Arc::new(m))
    }
    /// From a snapshot's `custom_fields` object (`{"lead": [...], "contact": [...]}`).
    pub fn from_snapshot_fields(v: Option<&Map<String, Value>>) -> FieldTypes {
        FieldTypes::from_definitions(v.into_iter().flat_map(|m| m.values()))
    }
    pub fn get(&self, id: &str) -> FieldType {
        self.0.get(id).copied().unwrap_or(FieldType::Other)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An instant from RFC 3339 text (`…Z`, `…+00:00`, `…+05:00`); text without an offset is UTC.
pub fn instant(s: &str) -> Option<jiff::Timestamp> {
    let s = s.trim();
    s.parse::<jiff::Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

fn date(s: &str) -> Option<jiff::civil::Date> {
    s.trim().get(..10)?.parse().ok()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// Whether two values of a field of type `t` are the same once Close has stored them.
pub fn same(t: FieldType, a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            return x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(t, a, b));
        }
        (Value::Null, _) | (_, Value::Null) | (Value::Array(_), _) | (_, Value::Array(_)) => {
            return false;
        }
        _ => {}
    }
    let as_str = |v: &Value| v.as_str().map(str::to_string);
    match t {
        FieldType::Number => number(a).zip(number(b)).is_some_and(|(x, y)| x == y),
        FieldType::Date => as_str(a)
            .and_then(|s| date(&s))
            .zip(as_str(b).and_then(|s| date(&s)))
            .is_some_and(|(x, y)| x == y),
        FieldType::Datetime => as_str(a)
            .and_then(|s| instant(&s))
            .zip(as_str(b).and_then(|s| instant(&s)))
            .is_some_and(|(x, y)| x == y),
        FieldType::Text | FieldType::Other => text(a).zip(text(b)).is_some_and(|(x, y)| x == y),
    }
}

/// A multi-value field's values (a single value is a list of one; null is empty).
pub fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Null => vec![],
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_compare_in_their_stored_form() {
        use FieldType::*;
        assert!(same(
            Datetime,
            &json!("2026-01-01T10:00:00+00:00"),
            &json!("2026-01-01T10:00:00Z")
        ));
        assert!(same(
            Datetime,
            &json!("2026-01-01T15:00:00+05:00"),
            &json!("2026-01-01T10:00:00.000000+00:00")
        ));
        assert!(!same(
            Datetime,
            &json!("2026-01-01T10:00:00+01:00"),
            &json!("2026-01-01T10:00:00Z")
        ));
        assert!(same(
            Date,
            &json!("2026-01-05T23:59:00Z"),
            &json!("2026-01-05")
        ));
        assert!(!same(Date, &json!("2026-01-06"), &json!("2026-01-05")));
        assert!(same(Number, &json!("99"), &json!(99)));
        assert!(same(Number, &json!(99.0), &json!(99)));
        assert!(!same(Number, &json!(98), &json!(99)));
        assert!(same(Text, &json!(5), &json!("5")));
        // A text field keeps its text: another spelling of an instant is another value.
        assert!(!same(
            Text,
            &json!("2026-01-01T10:00:00Z"),
            &json!("2026-01-01T10:00:00+00:00")
        ));
        assert!(!same(Text, &json!(""), &Value::Null));
        assert!(same(
            Date,
            &json!(["2026-01-05T00:00:00Z"]),
            &json!(["2026-01-05"])
        ));
    }

    #[test]
    fn instants_order_by_time_not_text() {
        let a = instant("2026-01-01T09:00:00+05:00").unwrap();
        let b = instant("2026-01-01T05:00:00+00:00").unwrap();
        assert!(a < b, "09:00+05:00 is 04:00Z");
        assert!(instant("2026-01-01T00:00:00").is_some());
        assert!(instant("yesterday").is_none());
    }
}
