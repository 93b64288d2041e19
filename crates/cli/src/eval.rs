//! `closeflow eval`: JSON lines in, JSON lines out. A bad line answers with an error and the
//! stream goes on.

use anyhow::Result;
use closeflow_mapping::trigger::Trigger;
use closeflow_mapping::value::Program;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::process::ExitCode;

pub fn answer(line: &str) -> Value {
    let msg: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("invalid JSON: {e}")}),
    };
    let event = msg.get("event").cloned().unwrap_or_else(|| json!({}));
    if let Some(t) = msg.get("trigger") {
        let Some(src) = t.as_str() else {
            return json!({"error": "`trigger` must be a string"});
        };
        return match Trigger::parse(src) {
            Ok(t) => json!({"match": t.matches(&event)}),
            Err(e) => json!({"error": {"code": e.code, "message": e.message, "hint": e.hint,
                                       "start": e.start, "end": e.start + e.len}}),
        };
    }
    if let Some(m) = msg.get("mapping") {
        if !event.is_object() {
            return json!({"error": "`event` must be an object"});
        }
        return match Program::compile_strict(m)
            .and_then(|p| p.evaluate(&event).map_err(|e| e.message))
        {
            Ok(out) => json!({"output": out}),
            Err(e) => json!({"error": e}),
        };
    }
    json!({"error": "each line needs `trigger` or `mapping` (with `event`)"})
}

pub fn run() -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "{}", answer(&line))?;
    }
    Ok(ExitCode::SUCCESS)
}
