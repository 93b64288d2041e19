//! Reading a stream of events: JSON lines, one JSON array, and Segment `batch` bodies, each bad
//! entry reported with where it was, none stopping the others.

use serde_json::Value;

/// One event of a stream, or why that entry is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Event(Value),
    Invalid {
        message: String,
        message_id: Option<String>,
    },
}

impl Entry {
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Entry::Event(v) => v.get("messageId").and_then(Value::as_str),
            Entry::Invalid { message_id, .. } => message_id.as_deref(),
        }
    }
}

const TYPES: &[&str] = &["identify", "track", "group", "page", "screen", "alias"];

/// Checks one event: an object with a known `type`.
pub fn check(v: Value) -> Entry {
    let message_id = v
        .get("messageId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let invalid = |message: String| Entry::Invalid {
        message,
        message_id: message_id.clone(),
    };
    let Value::Object(m) = &v else {
        return invalid(format!(
            "an event is a JSON object, not {}",
            crate::js::type_name(Some(&v))
        ));
    };
    match m.get("type") {
        None => invalid("the event has no `type`".into()),
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => Entry::Event(v),
        Some(Value::String(t)) => invalid(format!(
            "unknown event type \"{t}\" (expected one of {})",
            TYPES.join(", ")
        )),
        Some(other) => invalid(format!(
            "`type` must be text, not {}",
            crate::js::type_name(Some(other))
        )),
    }
}

fn expand(v: Value, out: &mut Vec<Entry>) {
    match v {
        Value::Object(ref m)
            if m.get("batch").is_some_and(Value::is_array) && !m.contains_key("type") =>
        {
            if let Some(Value::Array(items)) = m.get("batch") {
                // Batch-level context and integrations apply to each event, as Segment does.
                for item in items {
                    let mut item = item.clone();
                    if let (Value::Object(it), Some(ctx)) = (&mut item, m.get("context")) {
                        it.entry("context").or_insert_with(|| ctx.clone());
                    }
                    out.push(check(item));
                }
            }
        }
        other => out.push(check(other)),
    }
}

/// Parses a whole input: a JSON array, or JSON lines (blank lines ignored).
pub fn parse_stream(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(items)) => {
                for i in items {
                    expand(i, &mut out);
                }
            }
            Ok(_) => {}
            Err(e) => out.push(Entry::Invalid {
                message: format!("the input is not a valid JSON array: {e}"),
                message_id: None,
            }),
        }
        return out;
    }
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => expand(v, &mut out),
            Err(e) => out.push(Entry::Invalid {
                message: format!("line {}: invalid JSON: {e}", n + 1),
                message_id: None,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrays_and_batches() {
        let s = "{\"type\":\"identify\",\"messageId\":\"a\"}\n\nnot json\n{\"batch\":[{\"type\":\"track\"},{\"x\":1}]}\n";
        let e = parse_stream(s);
        assert_eq!(e.len(), 4);
        assert!(matches!(e[0], Entry::Event(_)));
        assert!(matches!(&e[1], Entry::Invalid { message, .. } if message.starts_with("line 3")));
        assert!(matches!(e[2], Entry::Event(_)));
        assert!(matches!(&e[3], Entry::Invalid { message, .. } if message.contains("no `type`")));
        assert_eq!(parse_stream("[{\"type\":\"page\"}]").len(), 1);
        assert!(
            matches!(&parse_stream("{\"type\":\"nope\",\"messageId\":\"m\"}")[0], Entry::Invalid { message_id: Some(m), .. } if m == "m")
        );
    }
}
