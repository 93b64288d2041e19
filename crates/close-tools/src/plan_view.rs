//! The terraform-style rendering of plans, for people. JSON output is the reports serialised.

use closeflow_close::plan::{Change, Object, Step, StepKind};
use closeflow_close::run::{EventReport, MappingReport, Summary};
use serde_json::Value;
use std::fmt::Write as _;

pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn marker(&self, m: char) -> String {
        let code = match m {
            '+' => "32",
            '~' => "33",
            '=' => "2",
            '!' => "36",
            '?' => "35",
            ERROR => "1;31",
            _ => "0",
        };
        self.paint(code, &m.to_string())
    }
}

/// An event or mapping that failed. `!` stays "skipped by a flag or rule": a failure is not a
/// decision, and scripts that grep a plan must be able to tell them apart.
pub const ERROR: char = '✗';

/// Long ids and values are cut so that a plan stays readable.
fn short_id(id: &str) -> String {
    if closeflow_close::state::is_planned_id(id) {
        // Created earlier in this dry-run; Close has not given it an id yet.
        return "(planned)".into();
    }
    if id.chars().count() > 12 {
        format!("{}…", id.chars().take(9).collect::<String>())
    } else {
        id.to_string()
    }
}

pub fn value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Null => "null".into(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

fn object(o: Object) -> &'static str {
    match o {
        Object::Lead => "lead",
        Object::Contact => "contact",
    }
}

fn label(s: &Step) -> String {
    s.label
        .as_ref()
        .map(|l| format!(" ({})", cut(l)))
        .unwrap_or_default()
}

fn cut(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s.to_string()
    }
}

fn list_texts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn change_line(out: &mut String, st: &Style, c: &Change, created: bool) {
    let is_list = matches!(c.field.as_str(), "emails" | "phones" | "urls");
    if is_list {
        let before = list_texts(&c.before);
        let added: Vec<String> = list_texts(&c.after)
            .into_iter()
            .filter(|x| !before.contains(x))
            .collect();
        let kept = if before.is_empty() {
            String::new()
        } else {
            format!("   (appended; kept: {})", before.join(", "))
        };
        let _ = writeln!(
            out,
            "      {} {}: {}{kept}",
            st.marker('+'),
            c.field,
            added.join(", ")
        );
    } else if created || c.before.is_null() {
        let _ = writeln!(
            out,
            "      {} {}: {}",
            st.marker('+'),
            c.field,
            value(&c.after)
        );
    } else if c.after.is_null() {
        let _ = writeln!(
            out,
            "      {} {}: {} → cleared",
            st.marker('~'),
            c.field,
            value(&c.before)
        );
    } else {
        let _ = writeln!(
            out,
            "      {} {}: {} → {}",
            st.marker('~'),
            c.field,
            value(&c.before),
            value(&c.after)
        );
    }
}

fn under(s: &Step) -> String {
    match (&s.object, &s.lead_id) {
        (Object::Contact, Some(l)) => format!(" under lead {}", short_id(l)),
        (Object::Contact, None) if s.kind == StepKind::CreateContact => " in the new lead".into(),
        _ => String::new(),
    }
}

pub fn step(out: &mut String, st: &Style, s: &Step) {
    let o = object(s.object);
    let id = s.id.as_deref().map(short_id);
    match s.kind {
        StepKind::CreateLead | StepKind::CreateContact => {
            let _ = writeln!(
                out,
                "  {} {o} (new){}{}",
                st.marker('+'),
                label(s),
                under(s)
            );
            for c in &s.changes {
                change_line(out, st, c, true);
            }
        }
        StepKind::UpdateLead | StepKind::UpdateContact => {
            let _ = writeln!(
                out,
                "  {} {o} {}{}{}",
                st.marker('~'),
                id.unwrap_or_default(),
                label(s),
                under(s)
            );
            for c in &s.changes {
                change_line(out, st, c, false);
            }
        }
        StepKind::Unchanged => {
            let _ = writeln!(
                out,
                "  {} {o} {}{} unchanged",
                st.marker('='),
                id.unwrap_or_default(),
                label(s)
            );
        }
        StepKind::Skipped => {
            let reason = s.reason.as_deref().unwrap_or("skipped");
            let what = match &id {
                Some(i) => format!("{o} {i}{} not updated", label(s)),
                None => format!("{o} not created{}", label(s)),
            };
            let would = if s.changes.is_empty() {
                String::new()
            } else {
                let f: Vec<&str> = s.changes.iter().map(|c| c.field.as_str()).collect();
                format!(" (would change {})", f.join(", "))
            };
            let _ = writeln!(out, "  {} {what}: {reason}{would}", st.marker('!'));
        }
    }
}

fn mapping(out: &mut String, st: &Style, m: &MappingReport) {
    if let Some(e) = &m.error {
        let _ = writeln!(out, "  {} error: {e}", st.marker(ERROR));
    }
    for s in &m.steps {
        step(out, st, s);
    }
    if m.contacts_left > 0 {
        let _ = writeln!(
            out,
            "  {} {} contacts matched; the 10 oldest are updated, {} left untouched",
            st.marker('?'),
            10 + m.contacts_left,
            m.contacts_left
        );
    }
    if m.leads_matched > 1 {
        let _ = writeln!(
            out,
            "  {} {} leads carry this Company ID; the oldest is used",
            st.marker('?'),
            m.leads_matched
        );
    }
    for w in &m.warnings {
        if w.code != "several_leads_for_company" {
            let _ = writeln!(out, "  note: {}", w.message);
        }
    }
}

/// One event (1-based in the text, as a person counts; `index` in JSON is 0-based).
pub fn event(st: &Style, r: &EventReport) -> String {
    let mut out = String::new();
    let n = r.index + 1;
    if let Some(e) = &r.error {
        let mid = r
            .message_id
            .as_ref()
            .map(|m| format!(" (messageId {m})"))
            .unwrap_or_default();
        let _ = writeln!(out, "event {n}  {} invalid{mid}: {e}", st.marker(ERROR));
        return out;
    }
    let head = if r.about.is_empty() {
        format!("event {n}  {}", r.kind)
    } else {
        format!("event {n}  {}  {}", r.kind, r.about)
    };
    let matched: Vec<&MappingReport> = r.mappings.iter().filter(|m| m.matched).collect();
    if matched.is_empty() {
        let _ = writeln!(out, "{head}  → no mapping matched");
    }
    for m in matched {
        let _ = writeln!(out, "{head}  → mapping \"{}\"", m.name);
        mapping(&mut out, st, m);
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn summary(s: &Summary) -> String {
    let mut line = format!(
        "Plan: {} to create, {} to create, {} to update, {} unchanged, {} skipped, {} not matched",
        plural(s.create_lead, "lead", "leads"),
        plural(s.create_contact, "contact", "contacts"),
        s.update_lead + s.update_contact,
        s.unchanged,
        s.skipped,
        s.not_matched
    );
    if s.errors > 0 {
        line.push_str(&format!(", {}", plural(s.errors, "error", "errors")));
    }
    line.push('.');
    line
}
