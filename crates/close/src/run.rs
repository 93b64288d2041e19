//! Running a stream of events through an instance: trigger → mapping → payload → plan (and, on
//! a live run, the writes). Shared by `dry-run`, `send`, `explain`, the mapping tests, the
//! mapping-change diff and the ingestion server's delivery, so that no frontend makes a
//! decision of its own.
//!
//! It lives in the pure crate, not beside the HTTP client: it drives the ports
//! ([`crate::port`]), never a transport, so the same code runs over a snapshot, an in-memory
//! state or live Close, and a dry-run's signature ([`dry_run`]) has no write port to misuse.

use crate::exec;
use crate::model::KeyConfig;
use crate::payload::Payload;
use crate::plan::{Plan, Step, StepKind};
use crate::port::{PortError, ReadPort, WritePort};
use crate::schema::{COMPANY_SETTING, USER_SETTING};
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use serde::Serialize;
use serde_json::{Map, Value};

pub fn key_config(inst: &Instance) -> KeyConfig {
    KeyConfig {
        company_field: inst.plain_setting(COMPANY_SETTING).map(str::to_string),
        user_field: inst.plain_setting(USER_SETTING).map(str::to_string),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub index: usize,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub mappings: Vec<MappingReport>,
    /// `identify`, `track`, … (for display).
    #[serde(skip)]
    pub kind: String,
    /// A short description of who or what the event is about (for display).
    #[serde(skip)]
    pub about: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingReport {
    pub name: String,
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::lookup::Warning>,
    /// Matching contacts left alone because only the 10 oldest are updated.
    #[serde(skip_serializing_if = "is_zero")]
    pub contacts_left: usize,
    /// Leads carrying the event's Company ID (more than one: the oldest was used).
    #[serde(skip_serializing_if = "is_zero")]
    pub leads_matched: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl MappingReport {
    fn set_plan(&mut self, p: Plan) {
        self.steps = p.steps;
        self.warnings = p.warnings;
        self.contacts_left = p.contacts_left;
        self.leads_matched = p.leads_matched;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create_lead: usize,
    pub create_contact: usize,
    pub update_lead: usize,
    pub update_contact: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub not_matched: usize,
    pub errors: usize,
}

impl Summary {
    pub fn add(&mut self, r: &EventReport) {
        if r.error.is_some() {
            self.errors += 1;
            return;
        }
        if !r.mappings.iter().any(|m| m.matched) {
            self.not_matched += 1;
        }
        for m in &r.mappings {
            if m.error.is_some() {
                self.errors += 1;
            }
            for s in &m.steps {
                match s.kind {
                    StepKind::CreateLead => self.create_lead += 1,
                    StepKind::CreateContact => self.create_contact += 1,
                    StepKind::UpdateLead => self.update_lead += 1,
                    StepKind::UpdateContact => self.update_contact += 1,
                    StepKind::Unchanged => self.unchanged += 1,
                    StepKind::Skipped => self.skipped += 1,
                }
            }
        }
    }
    pub fn changes(&self) -> usize {
        self.create_lead + self.create_contact + self.update_lead + self.update_contact
    }
}

fn describe(event: &Value) -> (String, String) {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let s = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    let about = match kind.as_str() {
        "track" => s("event").map(|e| format!("event=\"{e}\"")),
        "group" => s("groupId").map(|g| format!("groupId={g}")),
        "page" | "screen" => s("name").map(|n| format!("name=\"{n}\"")),
        _ => None,
    }
    .or_else(|| s("userId").map(|u| format!("userId={u}")))
    .or_else(|| s("anonymousId").map(|a| format!("anonymousId={a}")))
    .unwrap_or_default();
    (kind, about)
}

/// Evaluates an event's mappings: the reports, and the payloads to plan (by report index).
pub fn prepare(
    inst: &Instance,
    index: usize,
    entry: &Entry,
) -> (EventReport, Vec<(usize, Payload)>) {
    let mut report = EventReport {
        index,
        message_id: entry.message_id().map(str::to_string),
        error: None,
        mappings: vec![],
        kind: String::new(),
        about: String::new(),
    };
    let event = match entry {
        Entry::Event(v) => v,
        Entry::Invalid { message, .. } => {
            report.error = Some(message.clone());
            return (report, vec![]);
        }
    };
    (report.kind, report.about) = describe(event);
    let cfg = key_config(inst);
    let mut todo = Vec::new();
    for o in inst.evaluate(event) {
        let mut m = MappingReport {
            name: o.mapping.name.clone(),
            matched: o.matched,
            payload: None,
            error: None,
            steps: vec![],
            warnings: vec![],
            contacts_left: 0,
            leads_matched: 0,
        };
        match o.payload {
            None => {}
            Some(Err(e)) => m.error = Some(e.message),
            Some(Ok(out)) => {
                match Payload::normalise(&out).and_then(|p| p.check_keys(&cfg).map(|()| p)) {
                    Ok(p) => todo.push((report.mappings.len(), p)),
                    Err(e) => m.error = Some(e.message),
                }
                m.payload = Some(out);
            }
        }
        report.mappings.push(m);
    }
    (report, todo)
}

/// Plans an event over the dry-run overlay; reads only.
pub async fn dry_run<R: ReadPort>(
    inst: &Instance,
    reads: &R,
    overlay: &mut crate::overlay::Overlay,
    index: usize,
    entry: &Entry,
) -> EventReport {
    dry_run_checked(inst, reads, overlay, index, entry).await.0
}

/// [`dry_run`], also returning the first error reading Close (an unreachable Close should end
/// the run).
pub async fn dry_run_checked<R: ReadPort>(
    inst: &Instance,
    reads: &R,
    overlay: &mut crate::overlay::Overlay,
    index: usize,
    entry: &Entry,
) -> (EventReport, Option<PortError>) {
    let cfg = key_config(inst);
    let (mut report, todo) = prepare(inst, index, entry);
    let mut first_error = None;
    for (i, p) in todo {
        match exec::dry_run(reads, overlay, &cfg, &p).await {
            Ok(plan) => report.mappings[i].set_plan(plan),
            Err(e) => {
                report.mappings[i].error = Some(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    (report, first_error)
}

/// Plans and applies an event against live Close, with lookups read through `reads` (a live
/// run's coalescing cache) and the writes made through `writes`; planning is the same code as
/// a dry-run's. Returns the report and the first error.
pub async fn send<R: ReadPort + Sync, W: WritePort + Sync>(
    inst: &Instance,
    reads: &R,
    writes: &W,
    index: usize,
    entry: &Entry,
) -> (EventReport, Option<PortError>) {
    let cfg = key_config(inst);
    let (mut report, todo) = prepare(inst, index, entry);
    let mut first_error = None;
    for (i, p) in todo {
        match exec::apply(reads, writes, &cfg, &p).await {
            Ok(applied) => report.mappings[i].set_plan(applied.plan),
            Err(e) => {
                report.mappings[i].error = Some(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    (report, first_error)
}
