//! The durable records the cluster keeps, as types: the envelope an event travels in, an
//! event's record (attempts, backoff, final outcome), a dead letter's header and a counter's
//! value. Their JSON keys are the ones existing clusters hold (short ones where the record is
//! per event), fixed here by serde renames; fields appear in the order they always were written.

use crate::{Millis, Outcome, now_ms};
use serde::{Deserialize, Serialize};

/// The first line of a queued event (then a newline, then the event as it was stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "m")]
    pub message_id: String,
    #[serde(rename = "r")]
    pub received_at: Millis,
    /// How the event arrived ([`crate::NewEvent::meta`]); absent in older messages.
    #[serde(rename = "j", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
}

/// An event's record in the events bucket, written by compare-and-set: failed attempts and the
/// backoff while it is retried, then its final outcome with the event itself (kept for
/// `capture` and for finishing a dead node's settle).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Final>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl EventRecord {
    pub fn attempts(&self) -> u64 {
        self.attempts.unwrap_or(0)
    }
}

/// What a final outcome was, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Applied,
    Skipped,
    Dead,
    Retry,
}

/// A final outcome as stored in an event's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub kind: Kind,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub last_reply: Option<String>,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub at: Millis,
}

impl Final {
    /// `outcome` as reached by `node` now.
    pub fn of(outcome: &Outcome, node: &str) -> Final {
        let (kind, reason, error, last_reply) = match outcome {
            Outcome::Applied => (Kind::Applied, "", "", None),
            Outcome::Skipped { reason } => (Kind::Skipped, reason.as_str(), "", None),
            Outcome::Dead {
                reason,
                error,
                last_reply,
            } => (
                Kind::Dead,
                reason.as_str(),
                error.as_str(),
                last_reply.clone(),
            ),
            Outcome::Retry { reason, error, .. } => {
                (Kind::Retry, reason.as_str(), error.as_str(), None)
            }
        };
        Final {
            kind,
            reason: reason.into(),
            error: error.into(),
            last_reply,
            node: node.into(),
            at: now_ms(),
        }
    }
}

/// The first line of a dead letter in the dead-letter stream (then a newline, then the event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadHeader {
    #[serde(rename = "m")]
    pub message_id: String,
    #[serde(rename = "r", default)]
    pub received_at: Millis,
    /// The event's sequence in its queue stream (its record's key).
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub last_reply: Option<String>,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default)]
    pub dead_at: Millis,
    #[serde(default)]
    pub node: String,
}

/// A JetStream counter's running total, as its last message holds it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CounterValue {
    #[serde(default)]
    pub val: String,
}

impl CounterValue {
    pub fn total(payload: &[u8]) -> u64 {
        serde_json::from_slice::<CounterValue>(payload)
            .ok()
            .and_then(|v| v.val.parse().ok())
            .unwrap_or(0)
    }
}

/// `header` as one JSON line, a newline, then `body`: how events and dead letters are stored.
/// (Headers could carry the metadata, but a `messageId` is the client's text and may hold
/// characters a header cannot.)
pub fn frame<T: Serialize>(header: &T, body: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(header).unwrap_or_default();
    v.push(b'\n');
    v.extend_from_slice(body.as_bytes());
    v
}

/// The header and body of a framed payload; `None` when the first line is not a `T`.
pub fn unframe<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Option<(T, String)> {
    let nl = payload.iter().position(|b| *b == b'\n')?;
    let header = serde_json::from_slice(&payload[..nl]).ok()?;
    Some((
        header,
        String::from_utf8_lossy(&payload[nl + 1..]).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bytes existing clusters hold: what the untyped `json!` writers produced.
    #[test]
    fn records_serialise_as_they_always_were() {
        let e = Envelope {
            message_id: "m1".into(),
            received_at: 42,
            meta: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            json!({"m": "m1", "r": 42}).to_string()
        );
        let retry = EventRecord {
            attempts: Some(2),
            not_before: Some(7),
            error: Some("HTTP 503".into()),
            ..EventRecord::default()
        };
        assert_eq!(
            serde_json::to_string(&retry).unwrap(),
            json!({"attempts": 2, "not_before": 7, "error": "HTTP 503"}).to_string()
        );
        let f = Final {
            kind: Kind::Dead,
            reason: "rejected".into(),
            error: "HTTP 400".into(),
            last_reply: None,
            node: "n1".into(),
            at: 9,
        };
        let done = EventRecord {
            attempts: Some(0),
            outcome: Some(f),
            message_id: Some("m1".into()),
            received_at: Some(42),
            body: Some("{}".into()),
            ..EventRecord::default()
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            json!({"attempts": 0, "final": {"kind": "dead", "reason": "rejected", "error": "HTTP 400",
                   "last_reply": null, "node": "n1", "at": 9}, "m": "m1", "r": 42, "body": "{}"})
            .to_string()
        );
        let h = DeadHeader {
            message_id: "m1".into(),
            received_at: 42,
            seq: Some(3),
            reason: "rejected".into(),
            error: "HTTP 400".into(),
            last_reply: Some("{}".into()),
            attempts: 1,
            dead_at: 9,
            node: "n1".into(),
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            json!({"m": "m1", "r": 42, "seq": 3, "reason": "rejected", "error": "HTTP 400",
                   "last_reply": "{}", "attempts": 1, "dead_at": 9, "node": "n1"})
            .to_string()
        );
        assert_eq!(CounterValue::total(br#"{"val":"12"}"#), 12);
    }

    #[test]
    fn a_record_without_an_outcome_reads_back_as_pending() {
        let r: EventRecord = serde_json::from_str(r#"{"attempts":1,"final":null}"#).unwrap();
        assert_eq!((r.attempts(), r.outcome), (1, None));
    }
}
