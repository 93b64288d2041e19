//! A journey as a person reads it (`closeflow trace`, the console): one block per event, one
//! entry per stage, the verdicts as `explain` shows them and the plan as `dry-run` prints it.

use closeflow_queue::journey::{Journey, Stage};
use serde_json::Value;
use std::fmt::Write as _;

/// A time as `2026-12-07 10:14:03.120Z`.
pub fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The outcome of an attempt in a few words.
pub fn outcome(o: &Value) -> String {
    match s(o, "kind") {
        "applied" => "applied".into(),
        "skipped" => format!("skipped ({})", s(o, "reason")),
        "retry" => format!(
            "failed for now ({}): {}; next attempt at {}",
            s(o, "reason"),
            s(o, "error"),
            time(o.get("not_before").and_then(Value::as_i64).unwrap_or(0))
        ),
        "dead_lettered" => {
            let mut t = format!("dead-lettered ({}): {}", s(o, "reason"), s(o, "error"));
            if let Some(r) = o.get("last_reply").and_then(Value::as_str) {
                let _ = write!(t, " [Close replied: {r}]");
            }
            t
        }
        "" => "not recorded yet".into(),
        other => other.to_string(),
    }
}

/// The final word on a journey: its last attempt's outcome, or where it stands.
pub fn status(j: &Journey) -> String {
    match j.stages.last() {
        None => "unknown".into(),
        Some(st) => match st.kind.as_str() {
            "attempt" => outcome(st.data.get("outcome").unwrap_or(&Value::Null)),
            "received" => "queued (no attempt yet)".into(),
            "replayed" => "replayed, queued again".into(),
            "dropped" => "dropped from the dead letters".into(),
            "duplicate" => j
                .stages
                .iter()
                .rev()
                .find(|s| s.kind == "attempt")
                .map(|s| outcome(s.data.get("outcome").unwrap_or(&Value::Null)))
                .unwrap_or_else(|| "queued (no attempt yet)".into()),
            other => other.to_string(),
        },
    }
}

fn indent(out: &mut String, text: &str, pad: &str) {
    for l in text.lines() {
        let _ = writeln!(out, "{pad}{l}");
    }
}

fn stage(out: &mut String, st: &Stage) {
    let d = &st.data;
    let at = time(st.at);
    match st.kind.as_str() {
        "received" | "duplicate" => {
            let what = if st.kind == "duplicate" {
                "received again, a duplicate (not stored)"
            } else {
                "received"
            };
            let kind = if s(d, "type").is_empty() {
                "event"
            } else {
                s(d, "type")
            };
            let mut line = format!(
                "{at}  {what}: {kind} on {}, {}, {} bytes",
                s(d, "route"),
                s(d, "write_key"),
                d.get("bytes").and_then(Value::as_u64).unwrap_or(0)
            );
            if let Some(l) = d.get("library").and_then(Value::as_str) {
                let _ = write!(line, ", from {l}");
            }
            let _ = writeln!(out, "  {line}");
        }
        "attempt" => {
            let _ = writeln!(
                out,
                "  {at}  attempt {} ({} ms)",
                d.get("attempt").and_then(Value::as_u64).unwrap_or(0),
                d.get("ms").and_then(Value::as_i64).unwrap_or(0)
            );
            if let Some(e) = d.get("error").and_then(Value::as_str) {
                let _ = writeln!(out, "      the event is invalid: {e}");
            }
            for m in d["mappings"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "      mapping \"{}\": {}",
                    s(m, "name"),
                    s(m, "verdict")
                );
                for c in m["decided_by"].as_array().into_iter().flatten() {
                    let mark = if c["holds"] == true { "✓" } else { "✗" };
                    let value = match c.get("value") {
                        Some(v) => v.to_string(),
                        None => "missing".into(),
                    };
                    let _ = writeln!(
                        out,
                        "        {mark} {}   (value: {value})",
                        s(c, "condition")
                    );
                }
                if let Some(p) = m.get("payload") {
                    let _ = writeln!(out, "        payload (normalised, as planned):");
                    indent(
                        out,
                        &serde_json::to_string_pretty(p).unwrap_or_default(),
                        "          ",
                    );
                }
                if let Some(e) = m.get("error").and_then(Value::as_str) {
                    let _ = writeln!(out, "        error: {e}");
                }
            }
            if let Some(p) = d.get("plan").and_then(Value::as_str) {
                let _ = writeln!(out, "      plan:");
                indent(out, p, "        ");
            }
            let calls = d["calls"].as_array().map(Vec::as_slice).unwrap_or_default();
            if calls.is_empty() {
                let _ = writeln!(
                    out,
                    "      Close calls: none (its lookups were answered from the cache)"
                );
            } else {
                let _ = writeln!(out, "      Close calls:");
                for c in calls {
                    let status = c
                        .get("status")
                        .and_then(Value::as_u64)
                        .map_or("no reply".to_string(), |n| n.to_string());
                    let mut line = format!(
                        "{} /{}  {status}  {} ms",
                        s(c, "method"),
                        s(c, "path"),
                        c["ms"].as_u64().unwrap_or(0)
                    );
                    let attempt = c["attempt"].as_u64().unwrap_or(1);
                    if attempt > 1 {
                        let _ = write!(line, "  (retry {})", attempt - 1);
                    }
                    if let Some(n) = c.get("shared_by").and_then(Value::as_u64) {
                        let _ = write!(line, "  (made by the read-ahead, for {n} event(s))");
                    }
                    let waited = c["waited_ms"].as_u64().unwrap_or(0);
                    if waited > 0 {
                        let _ = write!(line, "  (held {waited} ms first: rate limit or backoff)");
                    }
                    let _ = writeln!(out, "        {line}");
                }
            }
            let _ = writeln!(
                out,
                "      → {}",
                outcome(d.get("outcome").unwrap_or(&Value::Null))
            );
        }
        "replayed" => {
            let _ = writeln!(
                out,
                "  {at}  replayed from the dead letters by {} (was: {})",
                s(d, "by"),
                s(d, "was")
            );
        }
        "dropped" => {
            let _ = writeln!(
                out,
                "  {at}  dropped from the dead letters by {} (was: {})",
                s(d, "by"),
                s(d, "was")
            );
        }
        other => {
            let _ = writeln!(out, "  {at}  {other}");
        }
    }
}

/// Journeys as text, most recently active first.
pub fn journeys(js: &[Journey]) -> String {
    let mut out = String::new();
    for (i, j) in js.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "event {} (instance \"{}\"): {}",
            j.message_id,
            j.instance,
            status(j)
        );
        for st in &j.stages {
            stage(&mut out, st);
        }
    }
    out
}
