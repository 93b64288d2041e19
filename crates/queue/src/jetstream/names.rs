//! Names in NATS: streams, subjects and keys built from instance names (the user's text), and
//! the envelope an event travels in.
//!
//! Stream names and subject tokens allow few characters, so user text is escaped: letters,
//! digits and `-` stay, every other byte becomes `_XX` (hex). The mapping is one-to-one, so two
//! instance names never share a stream.

use super::records::{Envelope, frame, unframe};
use crate::Millis;

/// Escapes `s` into `[A-Za-z0-9_-]+` (the empty string becomes `_`).
pub fn enc(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            o.push(b as char);
        } else {
            o.push_str(&format!("_{b:02X}"));
        }
    }
    o
}

/// The inverse of [`enc`]; `None` for text [`enc`] cannot have produced.
pub fn dec(s: &str) -> Option<String> {
    if s == "_" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where one deployment's streams and buckets live: every name starts with the prefix, so
/// several deployments (or test runs) can share a NATS cluster.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    /// The queue stream of an instance.
    pub fn queue_stream(&self, instance: &str) -> String {
        format!("{}_Q_{}", self.prefix, enc(instance))
    }
    /// The instance a queue stream belongs to.
    pub fn instance_of_stream(&self, stream: &str) -> Option<String> {
        dec(stream.strip_prefix(&format!("{}_Q_", self.prefix))?)
    }
    pub fn queue_subject(&self, instance: &str, partition: u32) -> String {
        format!("{}.q.{}.{partition}", self.prefix, enc(instance))
    }
    pub fn queue_subjects(&self, instance: &str) -> String {
        format!("{}.q.{}.*", self.prefix, enc(instance))
    }
    pub fn consumer(&self, partition: u32) -> String {
        format!("p{partition}")
    }
    /// Core NATS subject that tells every node an instance has new events.
    pub fn wake_subject(&self, instance: &str) -> String {
        format!("{}.wake.{}", self.prefix, enc(instance))
    }
    pub fn wake_all(&self) -> String {
        format!("{}.wake.*", self.prefix)
    }
    pub fn instance_of_wake(&self, subject: &str) -> Option<String> {
        dec(subject.strip_prefix(&format!("{}.wake.", self.prefix))?)
    }
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.prefix)
    }
    pub fn dlq_subject(&self, instance: &str) -> String {
        format!("{}.dlq.{}", self.prefix, enc(instance))
    }
    pub fn dlq_subjects(&self) -> String {
        format!("{}.dlq.*", self.prefix)
    }
    pub fn counts_stream(&self) -> String {
        format!("{}_COUNTS", self.prefix)
    }
    /// A durable counter: per instance, node, name and reason.
    pub fn counter(&self, instance: &str, node: &str, name: &str, reason: &str) -> String {
        format!(
            "{}.c.{}.{}.{name}.{}",
            self.prefix,
            enc(instance),
            enc(node),
            enc(reason)
        )
    }
    pub fn counters(&self) -> String {
        format!("{}.c.>", self.prefix)
    }
    /// `(instance, node, name, reason)` of a counter subject.
    pub fn parse_counter(&self, subject: &str) -> Option<(String, String, String, String)> {
        let rest = subject.strip_prefix(&format!("{}.c.", self.prefix))?;
        let mut it = rest.split('.');
        let (i, n, name, r) = (it.next()?, it.next()?, it.next()?, it.next()?);
        Some((dec(i)?, dec(n)?, name.to_string(), dec(r)?))
    }
    /// The `messageId`s accepted within the dedup window (bucket TTL: the window), one key
    /// each: JetStream's own duplicate window is rebuilt from stored messages after a
    /// restart, and a delivered event is no longer stored.
    pub fn seen_bucket(&self) -> String {
        format!("{}_SEEN", self.prefix)
    }
    /// The key of a `messageId` in the seen bucket: encoded as is when short, else a 128-bit
    /// hash of it (two FNV-1a runs), so that no id is too long for a NATS subject.
    pub fn seen_key(&self, instance: &str, message_id: &str) -> String {
        let id = enc(message_id);
        if id.len() <= 200 {
            format!("{}.{id}", enc(instance))
        } else {
            let salted = format!("closeflow\u{0}{message_id}");
            format!(
                "{}.h{:016x}{:016x}",
                enc(instance),
                fnv1a(message_id),
                fnv1a(&salted)
            )
        }
    }
    /// Per-event records: attempts, backoff and the final outcome.
    pub fn events_bucket(&self) -> String {
        format!("{}_EVENTS", self.prefix)
    }
    pub fn event_key(&self, instance: &str, seq: u64) -> String {
        format!("{}.{seq}", enc(instance))
    }
    /// Partition leases and node heartbeats (bucket TTL: the lease time).
    pub fn leases_bucket(&self) -> String {
        format!("{}_LEASES", self.prefix)
    }
    pub fn lease_key(&self, instance: &str, partition: u32) -> String {
        format!("p.{}.{partition}", enc(instance))
    }
    pub fn node_key(&self, node: &str) -> String {
        format!("n.{}", enc(node))
    }
    /// Lookup-key locks (bucket TTL: the ack deadline).
    pub fn locks_bucket(&self) -> String {
        format!("{}_LOCKS", self.prefix)
    }
    pub fn lock_key(&self, instance: &str, key: &str) -> String {
        format!("{}.{}", enc(instance), enc(key))
    }
}

/// FNV-1a: a hash every node computes alike, whatever its build (std's hasher promises no
/// stability across Rust versions, and nodes must agree on partitions).
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An event in the queue stream: its [`Envelope`] as one JSON line, then the event as it was
/// stored.
pub fn wrap(message_id: &str, received_at: Millis, body: &str) -> Vec<u8> {
    wrap_with(message_id, received_at, body, None)
}

/// [`wrap`], with how the event arrived.
pub fn wrap_with(message_id: &str, received_at: Millis, body: &str, meta: Option<&str>) -> Vec<u8> {
    let envelope = Envelope {
        message_id: message_id.into(),
        received_at,
        meta: meta.map(str::to_string),
    };
    frame(&envelope, body)
}

/// `(message_id, received_at, body)` of a wrapped event.
pub fn unwrap(payload: &[u8]) -> Option<(String, Millis, String)> {
    unwrap_with(payload).map(|(m, r, b, _)| (m, r, b))
}

/// [`unwrap`], with how the event arrived.
pub fn unwrap_with(payload: &[u8]) -> Option<(String, Millis, String, Option<String>)> {
    let (e, body) = unframe::<Envelope>(payload)?;
    Some((e.message_id, e.received_at, body, e.meta))
}

/// A `Nats-Msg-Id` value: header-safe, and still one-to-one with the `messageId`.
pub fn msg_id(message_id: &str) -> String {
    if message_id
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && b != b'%')
    {
        message_id.to_string()
    } else {
        message_id
            .bytes()
            .map(|b| {
                if (0x21..0x7f).contains(&b) && b != b'%' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_one_to_one_and_safe() {
        for s in ["acme", "", "a.b", "a_b", "é ü", "x*>", "a_2Eb", "-"] {
            let e = enc(s);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{e}"
            );
            assert_eq!(dec(&e).as_deref(), Some(s), "{s} → {e}");
        }
        assert_ne!(enc("a.b"), enc("a_2Eb"));
    }

    #[test]
    fn envelope_round_trips_any_message_id() {
        let w = wrap("id\nwith \"odd\" text", 42, "{\"a\":\"x\ny\"}");
        assert_eq!(
            unwrap(&w),
            Some((
                "id\nwith \"odd\" text".into(),
                42,
                "{\"a\":\"x\ny\"}".into()
            ))
        );
        assert_eq!(msg_id("m-1"), "m-1");
        assert_eq!(msg_id("a b\r\n%"), "a%20b%0D%0A%25");
        assert_ne!(msg_id("a b"), msg_id("a%20b"));
    }

    #[test]
    fn counters_parse_back() {
        let n = Names {
            prefix: "CF".into(),
        };
        let s = n.counter("my inst", "node-1", "skipped", "not_matched");
        assert_eq!(
            n.parse_counter(&s),
            Some((
                "my inst".into(),
                "node-1".into(),
                "skipped".into(),
                "not_matched".into()
            ))
        );
    }
}
