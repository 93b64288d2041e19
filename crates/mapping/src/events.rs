//! Reading a stream of events: JSON lines, one JSON array, and Segment `batch` bodies, each bad
//! entry reported with where it was, none stopping the others.

use serde_json::{Map, Value};

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

/// The items of a Segment `batch` body (`{"batch": [...], "context": ..., "integrations": ...}`),
/// with the body's top-level `context` and `integrations` merged into each item as Segment does:
/// a key the item sets itself wins. `None` when `body` is not a batch body.
pub fn batch_items(body: &Map<String, Value>) -> Option<Vec<Value>> {
    if body.contains_key("type") {
        return None;
    }
    let Some(Value::Array(items)) = body.get("batch") else {
        return None;
    };
    let shared: Vec<(&str, &Map<String, Value>)> = ["context", "integrations"]
        .into_iter()
        .filter_map(|k| Some((k, body.get(k)?.as_object()?)))
        .collect();
    Some(
        items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Value::Object(it) = &mut item {
                    for (k, top) in &shared {
                        merge_under(it, k, top);
                    }
                }
                item
            })
            .collect(),
    )
}

/// `item[key]` gains every entry of `top` it does not have itself.
fn merge_under(item: &mut Map<String, Value>, key: &str, top: &Map<String, Value>) {
    match item.get_mut(key) {
        Some(Value::Object(own)) => {
            for (k, v) in top {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Some(_) => {}
        None => {
            item.insert(key.to_string(), Value::Object(top.clone()));
        }
    }
}

fn expand(v: Value, out: &mut Vec<Entry>) {
    if let Value::Object(m) = &v
        && let Some(items) = batch_items(m)
    {
        out.extend(items.into_iter().map(check));
        return;
    }
    out.push(check(v));
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
        parse_line(n + 1, line.as_bytes(), &mut out);
    }
    out
}

/// One line of a JSON-lines stream (line numbers count from 1): its events, or why it has
/// none. A blank line has none; a line that is not UTF-8 or not JSON is one invalid entry, and
/// the stream goes on.
pub fn parse_line(number: usize, line: &[u8], out: &mut Vec<Entry>) {
    let line = match std::str::from_utf8(line) {
        Ok(l) => l,
        Err(e) => {
            out.push(Entry::Invalid {
                message: format!(
                    "line {number}: not valid UTF-8 (at byte {} of the line)",
                    e.valid_up_to() + 1
                ),
                message_id: None,
            });
            return;
        }
    };
    if line.trim().is_empty() {
        return;
    }
    match serde_json::from_str::<Value>(line) {
        Ok(v) => expand(v, out),
        Err(e) => out.push(Entry::Invalid {
            message: format!("line {number}: invalid JSON: {e}"),
            message_id: None,
        }),
    }
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

    #[test]
    fn a_line_that_is_not_utf8_is_reported_like_a_bad_json_line() {
        let mut out = Vec::new();
        parse_line(
            7,
            b"{\"type\": \"identify\", \"userId\": \"a\xff\"}",
            &mut out,
        );
        parse_line(8, b"{\"type\": \"track\"}", &mut out);
        parse_line(9, b"   ", &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], Entry::Invalid { message, .. } if message == "line 7: not valid UTF-8 (at byte 34 of the line)"),
            "{out:?}"
        );
        assert!(matches!(out[1], Entry::Event(_)));
    }

    #[test]
    fn batch_context_and_integrations_are_merged_into_items_item_wins() {
        let body = serde_json::json!({
            "batch": [
                {"type": "identify", "context": {"ip": "1.2.3.4"}},
                {"type": "track", "integrations": {"All": false}},
                {"type": "page", "context": "odd"}
            ],
            "context": {"ip": "9.9.9.9", "library": {"name": "x"}},
            "integrations": {"All": true, "Close": true}
        });
        let items = batch_items(body.as_object().unwrap()).unwrap();
        assert_eq!(
            items[0]["context"],
            serde_json::json!({"ip": "1.2.3.4", "library": {"name": "x"}})
        );
        assert_eq!(
            items[0]["integrations"],
            serde_json::json!({"All": true, "Close": true})
        );
        assert_eq!(
            items[1]["integrations"],
            serde_json::json!({"All": false, "Close": true})
        );
        assert_eq!(items[2]["context"], "odd");
        assert!(
            batch_items(
                serde_json::json!({"type": "track", "batch": []})
                    .as_object()
                    .unwrap()
            )
            .is_none()
        );
    }
}
