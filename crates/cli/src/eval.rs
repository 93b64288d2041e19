//! `closeflow eval`: JSON lines in, JSON lines out, one answer per line (a blank or bad line
//! answers with an error), so a caller can pair them. Compiled triggers and mappings are kept
//! by their text: an editor sending the same mapping with many events compiles it once.

use anyhow::Result;
use closeflow_mapping::trigger::Trigger;
use closeflow_mapping::value::Program;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Compiled programs by their source text (a trigger's text, a mapping's JSON text), with
/// compile errors kept too. Bounded: past `LIMIT` entries it starts over.
#[derive(Default)]
pub struct Cache {
    triggers: HashMap<String, Result<Trigger, Value>>,
    mappings: HashMap<String, Result<Program, String>>,
}

const LIMIT: usize = 1024;

impl Cache {
    fn trigger(&mut self, src: &str) -> &Result<Trigger, Value> {
        if self.triggers.len() >= LIMIT && !self.triggers.contains_key(src) {
            self.triggers.clear();
        }
        self.triggers.entry(src.to_string()).or_insert_with(|| {
            Trigger::parse(src).map_err(|e| {
                json!({"code": e.code, "message": e.message, "hint": e.hint,
                       "start": e.start, "end": e.start + e.len})
            })
        })
    }
    fn mapping(&mut self, m: &Value) -> &Result<Program, String> {
        let key = m.to_string();
        if self.mappings.len() >= LIMIT && !self.mappings.contains_key(&key) {
            self.mappings.clear();
        }
        self.mappings
            .entry(key)
            .or_insert_with(|| Program::compile_strict(m))
    }

    /// The answer to one input line.
    pub fn answer(&mut self, line: &str) -> Value {
        if line.trim().is_empty() {
            return json!({"error": "empty line"});
        }
        let mut msg: Map<String, Value> = match serde_json::from_str(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return json!({"error": "each line is a JSON object"}),
            Err(e) => return json!({"error": format!("invalid JSON: {e}")}),
        };
        // The event is moved out of the line, not copied.
        let event = msg.remove("event");
        if let Some(t) = msg.get("trigger") {
            let Some(src) = t.as_str() else {
                return json!({"error": "`trigger` must be a string"});
            };
            let Some(event) = event else {
                return json!({"error": "each line needs an `event`"});
            };
            return match self.trigger(src) {
                Ok(t) => json!({"match": t.matches(&event)}),
                Err(e) => json!({"error": e}),
            };
        }
        if let Some(m) = msg.get("mapping") {
            let Some(event) = event else {
                return json!({"error": "each line needs an `event`"});
            };
            if !event.is_object() {
                return json!({"error": "`event` must be an object"});
            }
            return match self.mapping(m) {
                Ok(p) => match p.evaluate(&event) {
                    Ok(out) => json!({"output": out}),
                    Err(e) => json!({"error": e.message}),
                },
                Err(e) => json!({"error": e}),
            };
        }
        json!({"error": "each line needs `trigger` or `mapping` (with `event`)"})
    }
}

pub fn run() -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut cache = Cache::default();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let answer = match std::str::from_utf8(&buf) {
            Ok(line) => cache.answer(line),
            Err(_) => json!({"error": "the line is not valid UTF-8"}),
        };
        writeln!(out, "{answer}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_programs_are_reused_by_their_text() {
        let mut c = Cache::default();
        for i in 0..3 {
            let line = format!(r#"{{"mapping": {{"a": "$.x"}}, "event": {{"x": {i}}}}}"#);
            assert_eq!(c.answer(&line), json!({"output": {"a": i}}));
            let line = format!(r#"{{"trigger": "x = {i}", "event": {{"x": 1}}}}"#);
            c.answer(&line);
        }
        assert_eq!(c.mappings.len(), 1, "one mapping text, compiled once");
        assert_eq!(c.triggers.len(), 3);
        let bad = c.answer(r#"{"trigger": "x = ", "event": {}}"#);
        assert!(bad["error"]["code"].is_string(), "{bad}");
        assert_eq!(c.answer(r#"{"trigger": "x = ", "event": {}}"#), bad);
    }
}
