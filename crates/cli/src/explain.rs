//! `closeflow explain`: why a mapping did or did not fire, and what it would send.

use crate::Format;
use anyhow::Result;
use closeflow_close::payload::Payload;
use closeflow_mapping::trigger::Explained;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

pub fn run(instance: &Path, event: &str, format: Format, color: bool) -> Result<ExitCode> {
    let inst = crate::input::require_instance(instance, color)?;
    let event = crate::input::read_event(event)?;
    // Payloads come from the same runner as dry-run and send (enabled mappings, in order), and
    // are normalised by the same code the planner's input comes from.
    let (prepared, normalised) = closeflow_close::run::prepare(
        &inst,
        0,
        &closeflow_mapping::events::Entry::Event(event.clone()),
    );
    let mut normalised: std::collections::HashMap<usize, Payload> =
        normalised.into_iter().collect();
    let mut results = prepared.mappings.into_iter().enumerate();
    let mut report = Vec::new();
    for m in inst.mappings.iter() {
        let why = m.trigger.explain(&event);
        let result = if m.enabled { results.next() } else { None };
        let payload = result.filter(|(_, r)| r.matched).map(|(i, r)| {
            let mut v = json!({});
            match (r.payload, normalised.remove(&i)) {
                (Some(raw), Some(p)) => {
                    let (view, changes) = closeflow_close::payload::normalised_view(&raw, &p);
                    v["payload"] = Value::Object(view);
                    v["mapped"] = Value::Object(raw);
                    v["normalisation"] = Value::Array(changes);
                }
                (Some(raw), None) => v["mapped"] = Value::Object(raw),
                _ => {}
            }
            if let Some(e) = r.error {
                v["error"] = json!(e);
            }
            v
        });
        report.push((m, why, payload));
    }
    match format {
        Format::Json => {
            let v: Vec<Value> = report
                .iter()
                .map(|(m, why, p)| json!({"mapping": m.name, "enabled": m.enabled, "trigger": m.trigger.to_string(),
                                         "matched": m.enabled && why.result, "why": why, "result": p}))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Human => {
            let mut s = String::new();
            for (m, why, p) in &report {
                let verdict = match (m.enabled, why.result) {
                    (false, _) => "disabled",
                    (true, true) => "fires",
                    (true, false) => "does not fire",
                };
                let _ = writeln!(s, "mapping \"{}\": {verdict}", m.name);
                tree(&mut s, why, 1);
                if let Some(p) = p {
                    let (title, body) = match p.get("payload") {
                        Some(b) => ("payload (normalised, as planned)", b),
                        None => (
                            "payload (as mapped)",
                            p.get("mapped").unwrap_or(&Value::Null),
                        ),
                    };
                    if !body.is_null() {
                        let _ = writeln!(s, "  {title}:");
                        for line in serde_json::to_string_pretty(body)
                            .unwrap_or_default()
                            .lines()
                        {
                            let _ = writeln!(s, "    {line}");
                        }
                    }
                    if let Some(Value::Array(changes)) = p.get("normalisation")
                        && !changes.is_empty()
                    {
                        let _ = writeln!(s, "  normalisation changed:");
                        for c in changes {
                            let after = match c.get("after") {
                                Some(a) => a.to_string(),
                                None => "not provided".into(),
                            };
                            let _ = writeln!(
                                s,
                                "    {}: {} → {after}",
                                c["field"].as_str().unwrap_or_default(),
                                c["before"]
                            );
                        }
                    }
                    if let Some(e) = p.get("error").and_then(Value::as_str) {
                        let _ = writeln!(s, "  error: {e}");
                    }
                }
            }
            out!("{s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tree(s: &mut String, e: &Explained, depth: usize) {
    let pad = "  ".repeat(depth);
    let mark = if e.result { "✓" } else { "✗" };
    if e.children.is_empty() {
        let actual = match (&e.actual, e.missing) {
            (_, Some(true)) => "missing".to_string(),
            (Some(v), _) => v.to_string(),
            _ => String::new(),
        };
        let _ = writeln!(s, "{pad}{mark} {}   (value: {actual})", e.text);
    } else {
        let _ = writeln!(s, "{pad}{mark} {}", e.text);
        for c in &e.children {
            tree(s, c, depth + 1);
        }
    }
}
