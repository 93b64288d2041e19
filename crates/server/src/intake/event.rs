//! One incoming event: checked (an object, a known `type`, within 32 KB), cleaned (the write key
//! is never stored) and enriched as Segment does (`messageId`, `receivedAt`, `timestamp`).

use closeflow_mapping::events::{self, Entry};
use closeflow_queue::NewEvent;
use serde_json::Value;

/// Segment's limits.
pub const EVENT_LIMIT: usize = 32 * 1024;
pub const BATCH_LIMIT: usize = 500 * 1024;
pub const BATCH_ITEMS: usize = 2_500;

/// Why one event was refused; the request's other events go on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    pub index: usize,
    pub code: &'static str,
    pub error: String,
}

/// What the route says the event is (`/v1/identify` → `identify`); `None` for batches.
pub type RouteType = Option<&'static str>;

fn rejected(index: usize, code: &'static str, error: impl Into<String>) -> Rejected {
    Rejected {
        index,
        code,
        error: error.into(),
    }
}

/// A fresh, unique `messageId` for an event sent without one, as Segment assigns. Not derived
/// from the content: two identical events sent on purpose (plan=pro, plan=free, plan=pro) are
/// three changes, not one. Deduplication is for clients that send ids (all of Segment's do).
fn fresh_id() -> String {
    format!("closeflow-{:032x}", rand::random::<u128>())
}

fn parse_time(v: Option<&Value>) -> Option<jiff::Timestamp> {
    v?.as_str()?.parse().ok()
}

fn format_time(t: jiff::Timestamp) -> String {
    // Milliseconds, as Segment's own timestamps.
    let ms = t.as_millisecond();
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// Checks and enriches one event. `sent_at` is the batch's `sentAt` (an item's own wins).
pub fn accept(
    value: Value,
    index: usize,
    route: RouteType,
    sent_at: Option<&Value>,
    received: jiff::Timestamp,
) -> Result<NewEvent, Rejected> {
    let Value::Object(mut item) = value else {
        return Err(rejected(
            index,
            "invalid_event",
            format!(
                "an event is a JSON object, not {}",
                closeflow_mapping::js::type_name(Some(&value))
            ),
        ));
    };
    // A secret: never stored, never delivered, never shown.
    item.remove("writeKey");
    let size = serde_json::to_vec(&item).map_or(usize::MAX, |v| v.len());
    if size > EVENT_LIMIT {
        return Err(rejected(
            index,
            "event_too_large",
            format!("the event is {size} bytes; the limit is {EVENT_LIMIT} bytes (32 KB)"),
        ));
    }
    if let Some(t) = route {
        match item.get("type") {
            None => {
                item.insert("type".into(), Value::String(t.into()));
            }
            Some(Value::String(s)) if s == t => {}
            Some(other) => {
                return Err(rejected(
                    index,
                    "type_mismatch",
                    format!("this route takes `{t}` events, but the event's type is {other}"),
                ));
            }
        }
    }
    let mut item = match events::check(Value::Object(item)) {
        Entry::Event(Value::Object(m)) => m,
        Entry::Invalid { message, .. } => return Err(rejected(index, "invalid_event", message)),
        Entry::Event(_) => unreachable!("check keeps objects"),
    };
    let message_id = match item.get("messageId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            let id = fresh_id();
            item.insert("messageId".into(), Value::String(id.clone()));
            id
        }
    };
    super::compat::traits_from_context(&mut item);
    item.insert("receivedAt".into(), Value::String(format_time(received)));
    let own_sent_at = item.get("sentAt").cloned();
    let sent = parse_time(own_sent_at.as_ref().or(sent_at));
    // The client's time: `timestamp`, or RudderStack's `originalTimestamp` when that is all.
    let original =
        parse_time(item.get("timestamp")).or_else(|| super::compat::original_timestamp(&item));
    match (original, sent) {
        // Segment's clock-skew correction: timestamp = receivedAt − (sentAt − originalTimestamp).
        (Some(orig), Some(sent)) => {
            if !item.contains_key("originalTimestamp") {
                let raw = item.get("timestamp").cloned().unwrap_or(Value::Null);
                item.insert("originalTimestamp".into(), raw);
            }
            let skewed = received
                .checked_sub(sent.duration_since(orig))
                .unwrap_or(received);
            item.insert("timestamp".into(), Value::String(format_time(skewed)));
        }
        // Only RudderStack's `originalTimestamp`, no `sentAt` to correct it by: taken as it is,
        // as a `timestamp` without `sentAt` is (RudderStack reads a missing `sentAt` as
        // `receivedAt`, which comes to the same).
        (Some(orig), None) if !item.contains_key("timestamp") => {
            item.insert("timestamp".into(), Value::String(format_time(orig)));
        }
        _ if !item.contains_key("timestamp") => {
            item.insert("timestamp".into(), Value::String(format_time(received)));
        }
        _ => {}
    }
    if own_sent_at.is_none()
        && let Some(s) = sent_at
    {
        item.insert("sentAt".into(), s.clone());
    }
    Ok(NewEvent {
        message_id,
        body: Value::Object(item).to_string(),
        received_at: received.as_millisecond(),
        meta: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn body(e: &NewEvent) -> Value {
        serde_json::from_str(&e.body).unwrap()
    }

    #[test]
    fn timestamp_is_corrected_for_the_clients_clock() {
        // The client's clock is 10 s fast: it stamped 12:00:10 and sent at 12:00:11; the
        // server received at 12:00:01.
        let e = accept(
            json!({"type": "track", "event": "x", "timestamp": "2026-11-30T12:00:10Z", "messageId": "m"}),
            0,
            None,
            Some(&json!("2026-11-30T12:00:11Z")),
            at("2026-11-30T12:00:01Z"),
        )
        .unwrap();
        let b = body(&e);
        assert_eq!(b["timestamp"], "2026-11-30T12:00:00.000Z");
        assert_eq!(b["originalTimestamp"], "2026-11-30T12:00:10Z");
        assert_eq!(b["receivedAt"], "2026-11-30T12:00:01.000Z");
        assert_eq!(b["sentAt"], "2026-11-30T12:00:11Z");
    }

    #[test]
    fn rudderstacks_original_timestamp_alone_is_corrected_the_same_way() {
        // RudderStack's node SDK: `originalTimestamp` and `sentAt`, no `timestamp`; the client's
        // clock is 10 s fast.
        let e = accept(
            json!({"type": "identify", "userId": "u1", "messageId": "m",
                   "originalTimestamp": "2026-11-30T12:00:10.000Z", "sentAt": "2026-11-30T12:00:11.000Z",
                   "context": {"traits": {"email": "a@b.io"}}}),
            0,
            None,
            None,
            at("2026-11-30T12:00:01Z"),
        )
        .unwrap();
        let b = body(&e);
        assert_eq!(b["timestamp"], "2026-11-30T12:00:00.000Z");
        assert_eq!(
            b["originalTimestamp"], "2026-11-30T12:00:10.000Z",
            "kept as sent"
        );
        assert_eq!(
            b["traits"],
            json!({"email": "a@b.io"}),
            "traits from context.traits"
        );
        // Without a `sentAt` there is no skew to correct: the client's time, as for `timestamp`.
        let e = accept(
            json!({"type": "track", "event": "x", "messageId": "m",
                   "originalTimestamp": "2026-11-30T11:00:00.000Z"}),
            0,
            None,
            None,
            at("2026-11-30T12:00:01Z"),
        )
        .unwrap();
        assert_eq!(body(&e)["timestamp"], "2026-11-30T11:00:00.000Z");
    }

    #[test]
    fn missing_timestamp_and_message_id_are_filled_in() {
        let ev = json!({"type": "identify", "userId": "u1"});
        let a = accept(ev.clone(), 0, None, None, at("2026-11-30T12:00:01Z")).unwrap();
        let b = accept(ev, 0, None, None, at("2026-11-30T12:05:00Z")).unwrap();
        assert_eq!(body(&a)["timestamp"], "2026-11-30T12:00:01.000Z");
        assert!(a.message_id.starts_with("closeflow-"));
        assert_ne!(
            a.message_id, b.message_id,
            "two events sent without ids are two events, even when their content is the same"
        );
    }

    #[test]
    fn route_type_fills_in_or_conflicts() {
        let e = accept(
            json!({"userId": "u"}),
            0,
            Some("identify"),
            None,
            at("2026-11-30T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(body(&e)["type"], "identify");
        let r = accept(
            json!({"type": "track", "event": "x"}),
            3,
            Some("identify"),
            None,
            at("2026-11-30T12:00:00Z"),
        )
        .unwrap_err();
        assert_eq!((r.index, r.code), (3, "type_mismatch"));
    }

    #[test]
    fn write_key_is_never_stored_and_bad_items_are_named() {
        let e = accept(
            json!({"type": "identify", "writeKey": "wk_secret", "messageId": "m"}),
            0,
            None,
            None,
            at("2026-11-30T12:00:00Z"),
        )
        .unwrap();
        assert!(!e.body.contains("wk_secret"));
        let big = "x".repeat(EVENT_LIMIT);
        let r = accept(
            json!({"type": "track", "event": big}),
            7,
            None,
            None,
            at("2026-11-30T12:00:00Z"),
        )
        .unwrap_err();
        assert_eq!((r.index, r.code), (7, "event_too_large"));
        let r = accept(json!([1]), 1, None, None, at("2026-11-30T12:00:00Z")).unwrap_err();
        assert_eq!(r.code, "invalid_event");
        let r = accept(
            json!({"userId": "u"}),
            2,
            None,
            None,
            at("2026-11-30T12:00:00Z"),
        )
        .unwrap_err();
        assert!(r.error.contains("type"), "{}", r.error);
    }
}
