//! What other Segment-format clients send differently, read the way their own servers read it.
//!
//! - RudderStack's Python SDK (2.x) puts an identify's traits only in `context.traits`: an
//!   identify without `traits` (or with empty ones) takes a copy of `context.traits`, so the
//!   default fields (`$.traits.email`, `$.traits.company.id`, …) read the same values as for
//!   Segment's libraries. Only an identify: a group's `context.traits` describe the user, not
//!   the group, and RudderStack's SDKs send a group's own traits in `traits`.
//! - RudderStack's SDKs stamp `originalTimestamp` and send no `timestamp`: the event's time is
//!   then read from `originalTimestamp` and corrected for the client's clock as RudderStack
//!   does, `receivedAt − (sentAt − originalTimestamp)` (`event::accept`).

use serde_json::{Map, Value};

/// An identify without traits of its own takes `context.traits`.
pub fn traits_from_context(item: &mut Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("identify") {
        return;
    }
    let own = item
        .get("traits")
        .is_some_and(|t| !t.is_null() && t.as_object().is_none_or(|o| !o.is_empty()));
    if own {
        return;
    }
    let from_context = item
        .get("context")
        .and_then(|c| c.get("traits"))
        .and_then(Value::as_object)
        .filter(|t| !t.is_empty())
        .cloned();
    if let Some(t) = from_context {
        item.insert("traits".into(), Value::Object(t));
    }
}

/// The client's own time of an event that has no `timestamp`: its `originalTimestamp`.
pub fn original_timestamp(item: &Map<String, Value>) -> Option<jiff::Timestamp> {
    if item.contains_key("timestamp") {
        return None;
    }
    item.get("originalTimestamp")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixed(v: Value) -> Value {
        let Value::Object(mut m) = v else {
            unreachable!()
        };
        traits_from_context(&mut m);
        Value::Object(m)
    }

    #[test]
    fn an_identify_without_traits_takes_context_traits() {
        let rudder = json!({"type": "identify", "userId": "u1",
            "context": {"traits": {"email": "a@b.io", "company": {"id": "c1"}}, "library": {"name": "analytics-python"}}});
        assert_eq!(
            fixed(rudder)["traits"],
            json!({"email": "a@b.io", "company": {"id": "c1"}})
        );
        let empty =
            json!({"type": "identify", "traits": {}, "context": {"traits": {"email": "a@b.io"}}});
        assert_eq!(fixed(empty)["traits"], json!({"email": "a@b.io"}));
        let null =
            json!({"type": "identify", "traits": null, "context": {"traits": {"email": "a@b.io"}}});
        assert_eq!(fixed(null)["traits"], json!({"email": "a@b.io"}));
    }

    #[test]
    fn own_traits_win_and_other_types_are_left_alone() {
        let own = json!({"type": "identify", "traits": {"email": "own@b.io"},
            "context": {"traits": {"email": "ctx@b.io", "title": "CTO"}}});
        assert_eq!(fixed(own)["traits"], json!({"email": "own@b.io"}));
        let group =
            json!({"type": "group", "groupId": "c1", "context": {"traits": {"name": "Ada"}}});
        assert!(
            fixed(group).get("traits").is_none(),
            "a group's context.traits are the user's"
        );
        let none = json!({"type": "identify", "userId": "u1", "context": {"traits": {}}});
        assert!(fixed(none).get("traits").is_none());
        let odd = json!({"type": "identify", "userId": "u1", "context": {"traits": "x"}});
        assert!(fixed(odd).get("traits").is_none());
    }

    #[test]
    fn original_timestamp_only_without_timestamp() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            original_timestamp(&m(json!({"originalTimestamp": "2026-11-30T12:00:00.000Z"}))),
            Some("2026-11-30T12:00:00Z".parse().unwrap())
        );
        assert_eq!(
            original_timestamp(&m(json!({"timestamp": "2026-11-30T12:00:05Z",
                "originalTimestamp": "2026-11-30T12:00:00Z"}))),
            None
        );
        assert_eq!(
            original_timestamp(&m(json!({"originalTimestamp": "soon"}))),
            None
        );
    }
}
