//! What a mix needs of Close's budget, from the plans themselves: the write requests
//! `closeflow dry-run` plans for its events (against the run's own starting snapshot), and the
//! fewest searches its lookup keys need; from those, the events per second the recorded
//! limits allow.

use anyhow::{Context, Result, bail};
use closeflow_close::lookup::{self, LookupRequest};
use closeflow_close::run;
use closeflow_mapping::events::Entry;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes per second one key may make (240 per 8 s).
pub const WRITES_PER_SEC: f64 = 30.0;
/// Searches per second one key may make (16 per 8 s).
pub const SEARCHES_PER_SEC: f64 = 2.0;
/// Lookup keys one search holds at most (`--search-chunk`'s default).
pub const KEYS_PER_SEARCH: usize = 50;

/// What the measured events of a run need.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub events: usize,
    /// Write requests `dry-run` plans (a contact created inside its new lead's `POST /lead/`
    /// is no request of its own).
    pub writes: usize,
    /// Distinct lookup keys of the measured events not already looked up earlier in the same
    /// process (a warm-up's keys are cached).
    pub keys: usize,
}

impl Need {
    pub fn writes_per_event(&self) -> f64 {
        self.writes as f64 / self.events as f64
    }
    /// The fewest searches per event: distinct new keys / 50, rounded up, over the events.
    pub fn searches_per_event(&self) -> f64 {
        self.keys.div_ceil(KEYS_PER_SEARCH) as f64 / self.events as f64
    }
    /// min(30 / writes per event, 2 / searches per event).
    pub fn limit(&self) -> f64 {
        let by = |budget: f64, per_event: f64| {
            if per_event > 0.0 {
                budget / per_event
            } else {
                f64::INFINITY
            }
        };
        by(WRITES_PER_SEC, self.writes_per_event())
            .min(by(SEARCHES_PER_SEC, self.searches_per_event()))
    }
}

/// The write requests planned for `measured` (after `before`, planned first in the same run so
/// the overlay holds their effects), by `bin dry-run --against sim:` the starting snapshot
/// `org`, and the lookup keys of `measured` not among those of `before`.
pub fn need(
    bin: &Path,
    dir: &Path,
    org: &Value,
    before: &[Value],
    measured: &[Value],
) -> Result<Need> {
    let state = dir.join("plan-state.json");
    std::fs::write(&state, org.to_string())?;
    let inst_path = dir.join("plan.yaml");
    let text = super::mix::instance("http://127.0.0.1:9/api/v1/");
    std::fs::write(&inst_path, &text)?;
    let events = dir.join("plan-events.jsonl");
    let all: Vec<&Value> = before.iter().chain(measured).collect();
    std::fs::write(
        &events,
        all.iter().map(|e| e.to_string() + "\n").collect::<String>(),
    )?;
    let out = Command::new(bin)
        .arg("dry-run")
        .arg("--instance")
        .arg(&inst_path)
        .arg("--against")
        .arg(format!("sim:{}", state.display()))
        .args(["--format", "jsonl"])
        .arg(&events)
        .stderr(Stdio::piped())
        .output()
        .context("closeflow dry-run runs")?;
    if !out.status.success() {
        bail!(
            "closeflow dry-run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut writes = 0;
    for line in String::from_utf8(out.stdout)?.lines() {
        let r: Value = serde_json::from_str(line)?;
        let Some(index) = r["index"].as_u64() else {
            continue; // the summary line
        };
        if let Some(e) = r["error"].as_str() {
            bail!("dry-run could not plan event {index}: {e}");
        }
        if (index as usize) < before.len() {
            continue;
        }
        for s in r["mappings"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["steps"].as_array().into_iter().flatten())
        {
            writes += usize::from(match s["kind"].as_str().unwrap_or_default() {
                "create_lead" | "update_lead" | "update_contact" => true,
                "create_contact" => !s["lead_id"].is_null(),
                _ => false,
            });
        }
    }
    let keys_before = keys(&text, before)?;
    let keys = keys(&text, measured)?.difference(&keys_before).count();
    Ok(Need {
        events: measured.len(),
        writes,
        keys,
    })
}

/// The lookup keys of `events`, as the planner forms them from each mapping's payload.
fn keys(instance_text: &str, events: &[Value]) -> Result<HashSet<LookupRequest>> {
    let env = |_: &str| None;
    let schema = closeflow_close::schema::destination();
    let (inst, diags) =
        closeflow_mapping::instance::load("bench.yaml", instance_text, &schema, &env);
    let inst = inst.with_context(|| format!("bench instance invalid: {diags:?}"))?;
    let cfg = run::key_config(&inst);
    let mut out = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        let (_, payloads) = run::prepare(&inst, i, &Entry::Event(e.clone()));
        for (_, p) in payloads {
            out.extend(lookup::requests(&cfg, &p));
        }
    }
    Ok(out)
}
