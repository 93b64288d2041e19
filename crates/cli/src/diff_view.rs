//! The human rendering of `closeflow diff`: changed events in detail (payload fields `+`/`-`/`~`,
//! plans as a line diff of what `dry-run` prints for each version), then the review.

use crate::plan_view::{self, Style};
use closeflow_close::plan::Step;
use closeflow_close_tools::diff::{
    EventDiff, FieldChange, Group, GroupKind, InstanceChange, MappingChange, MappingDiff, Op,
    Status, StepChange, Summary, payload_changes,
};
use serde_json::{Map, Value};
use std::fmt::Write as _;

fn paint(st: &Style, m: char) -> String {
    let code = match m {
        '+' => "32",
        '-' => "31",
        '~' => "33",
        '!' => "31",
        _ => return m.to_string(),
    };
    if st.color {
        format!("\x1b[{code}m{m}\x1b[0m")
    } else {
        m.to_string()
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_string(), plan_view::value)
}

fn name(multi: bool, instance: &str, mapping: &str) -> String {
    if multi {
        format!("\"{mapping}\" ({instance})")
    } else {
        format!("\"{mapping}\"")
    }
}

fn field_line(out: &mut String, st: &Style, pad: &str, c: &FieldChange) {
    let m = paint(st, c.op.marker());
    let _ = match c.op {
        Op::Added => writeln!(out, "{pad}{m} {}: {}", c.field, shown(c.after.as_ref())),
        Op::Removed => writeln!(out, "{pad}{m} {}: {}", c.field, shown(c.before.as_ref())),
        Op::Changed => writeln!(
            out,
            "{pad}{m} {}: {} → {}",
            c.field,
            shown(c.before.as_ref()),
            shown(c.after.as_ref())
        ),
    };
}

/// A step as `dry-run` prints it, one line per entry, without its indentation.
fn step_text(s: &Step) -> String {
    let mut t = String::new();
    plan_view::step(&mut t, &Style { color: false }, s);
    t.lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect()
}

const STEP_PAD: &str = "        ";

fn step_lines(out: &mut String, st: &Style, m: char, s: &Step) {
    for l in step_text(s).lines() {
        let _ = writeln!(out, "{STEP_PAD}{} {l}", paint(st, m));
    }
}

fn step_change(out: &mut String, st: &Style, c: &StepChange) {
    match (&c.old, &c.new) {
        (Some(o), Some(n)) => {
            let (o, n) = (step_text(o), step_text(n));
            for ch in similar::TextDiff::from_lines(&o, &n).iter_all_changes() {
                let m = match ch.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                let _ = writeln!(out, "{STEP_PAD}{} {}", paint(st, m), ch.value().trim_end());
            }
        }
        (Some(o), None) => step_lines(out, st, '-', o),
        (None, Some(n)) => step_lines(out, st, '+', n),
        (None, None) => {}
    }
}

/// A whole side of a mapping that matched in one version only.
fn one_side(
    out: &mut String,
    st: &Style,
    m: char,
    payload: Option<&Map<String, Value>>,
    steps: &[Step],
) {
    if let Some(p) = payload {
        let empty = Map::new();
        let fields = if m == '+' {
            payload_changes(&empty, p)
        } else {
            payload_changes(p, &empty)
        };
        if !fields.is_empty() {
            let _ = writeln!(out, "      payload:");
            for f in &fields {
                field_line(out, st, STEP_PAD, f);
            }
        }
    }
    if !steps.is_empty() {
        let _ = writeln!(out, "      plan:");
        for s in steps {
            step_lines(out, st, m, s);
        }
    }
}

fn mapping(out: &mut String, st: &Style, multi: bool, d: &MappingDiff) {
    let mut label = format!("mapping {}", name(multi, &d.instance, &d.name));
    match d.status {
        Status::Renamed => {
            let _ = write!(
                label,
                " (renamed from \"{}\")",
                d.old_name.as_deref().unwrap_or("")
            );
        }
        Status::Added => label.push_str(" (added)"),
        Status::Removed => label.push_str(" (removed)"),
        Status::Kept => {}
    }
    if d.newly_matched() {
        let _ = writeln!(out, "  {} {label} now matches", paint(st, '+'));
    } else if d.no_longer_matched() {
        let _ = writeln!(out, "  {} {label} no longer matches", paint(st, '-'));
    } else {
        let _ = writeln!(out, "  {} {label}", paint(st, '~'));
    }
    if d.old.error != d.new.error {
        let _ = writeln!(out, "      error:");
        if let Some(e) = &d.old.error {
            let _ = writeln!(out, "{STEP_PAD}{} {e}", paint(st, '-'));
        }
        if let Some(e) = &d.new.error {
            let _ = writeln!(out, "{STEP_PAD}{} {e}", paint(st, '+'));
        }
    }
    if d.newly_matched() {
        return one_side(out, st, '+', d.new.payload.as_ref(), &d.new.steps);
    }
    if d.no_longer_matched() {
        return one_side(out, st, '-', d.old.payload.as_ref(), &d.old.steps);
    }
    if !d.payload_changes.is_empty() {
        let _ = writeln!(out, "      payload:");
        for f in &d.payload_changes {
            field_line(out, st, STEP_PAD, f);
        }
    }
    if !d.plan_changes.is_empty() {
        let _ = writeln!(out, "      plan:");
        for c in &d.plan_changes {
            step_change(out, st, c);
        }
    }
}

/// One changed (or uncomparable) event; numbered from 1 as in `dry-run`.
pub fn event(st: &Style, multi: bool, ev: &EventDiff) -> String {
    let mut out = String::new();
    let mut head = format!("event {}", ev.index + 1);
    for part in [&ev.kind, &ev.about] {
        if !part.is_empty() {
            let _ = write!(head, "  {part}");
        }
    }
    let _ = writeln!(out, "{head}");
    if let Some(e) = &ev.error {
        let mid = ev
            .message_id
            .as_ref()
            .map(|m| format!(" (messageId {m})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} not compared{mid}: {e}", paint(st, '!'));
    }
    for d in &ev.mappings {
        mapping(&mut out, st, multi, d);
    }
    out
}

fn events(n: usize) -> String {
    format!("{n} {}", if n == 1 { "event" } else { "events" })
}

fn examples(g: &Group) -> String {
    if g.examples.is_empty() {
        return String::new();
    }
    let ex: Vec<String> = g.examples.iter().map(|i| format!("#{}", i + 1)).collect();
    format!(" (e.g. {})", ex.join(", "))
}

fn group(out: &mut String, st: &Style, multi: bool, g: &Group) {
    let m = name(multi, &g.instance, &g.mapping);
    let n = g.events;
    let what = g.what.as_deref().unwrap_or_default();
    let ex = examples(g);
    let (marker, line) = match g.kind {
        GroupKind::NoLongerMatched => (
            '-',
            format!(
                "{} no longer {} {m}{ex}",
                events(n),
                if n == 1 { "matches" } else { "match" }
            ),
        ),
        GroupKind::NewlyMatched => (
            '+',
            format!(
                "{} newly {} {m}{ex}",
                events(n),
                if n == 1 { "matches" } else { "match" }
            ),
        ),
        GroupKind::Payload => {
            let mut values: Vec<String> = g
                .values
                .iter()
                .map(|v| {
                    format!(
                        "{} → {} ×{}",
                        shown(v.before.as_ref()),
                        shown(v.after.as_ref()),
                        v.events
                    )
                })
                .collect();
            if g.other_values > 0 {
                values.push(format!("… ×{}", g.other_values));
            }
            (
                '~',
                format!(
                    "{what} of {m} changes on {}: {}{ex}",
                    events(n),
                    values.join(", ")
                ),
            )
        }
        GroupKind::Plan => (
            '~',
            format!("plan of {m} changes on {}: {what}{ex}", events(n)),
        ),
        GroupKind::Error => ('!', format!("{m} on {}: {what}{ex}", events(n))),
        GroupKind::NotCompared => (
            '!',
            format!("{} could not be compared{ex}; the first: {what}", events(n)),
        ),
    };
    let _ = writeln!(out, "  {} {line}", paint(st, marker));
}

fn mapping_change(out: &mut String, st: &Style, multi: bool, m: &MappingChange) {
    let n = name(multi, &m.instance, &m.name);
    let mut parts: Vec<String> = Vec::new();
    let defs: Vec<&str> = m
        .changed
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "enabled" | "disabled"))
        .collect();
    if !defs.is_empty() {
        parts.push(format!("{} changed", defs.join(", ")));
    }
    for c in &m.changed {
        if matches!(*c, "enabled" | "disabled") {
            parts.push(format!("now {c}"));
        }
    }
    let tail = if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    };
    let _ = match m.status {
        Status::Kept => writeln!(out, "  {} {n}: {}", paint(st, '~'), parts.join("; ")),
        Status::Renamed => writeln!(
            out,
            "  {} \"{}\" renamed to {n}{tail}",
            paint(st, '~'),
            m.old_name.as_deref().unwrap_or_default()
        ),
        Status::Added => writeln!(out, "  {} {n} added{tail}", paint(st, '+')),
        Status::Removed => writeln!(out, "  {} {n} removed", paint(st, '-')),
    };
}

/// The review: what changed in the files, then what that does to the events.
pub fn summary(
    st: &Style,
    multi: bool,
    instances: &[&InstanceChange],
    mappings: &[&MappingChange],
    s: &Summary,
    compared: &str,
) -> String {
    let mut out = String::new();
    // Mappings of a whole instance added or removed are told by the instance's line.
    let whole: Vec<&str> = instances
        .iter()
        .filter(|i| i.status != Status::Kept)
        .map(|i| i.name.as_str())
        .collect();
    if instances.is_empty() && mappings.is_empty() {
        let _ = writeln!(out, "Mappings: no changes.");
    } else {
        let _ = writeln!(out, "Mappings:");
        for i in instances {
            let count = mappings.iter().filter(|m| m.instance == i.name).count();
            let _ = match i.status {
                Status::Added => writeln!(
                    out,
                    "  {} instance \"{}\" added ({count} mappings)",
                    paint(st, '+'),
                    i.name
                ),
                Status::Removed => writeln!(
                    out,
                    "  {} instance \"{}\" removed ({count} mappings)",
                    paint(st, '-'),
                    i.name
                ),
                _ => writeln!(
                    out,
                    "  {} instance \"{}\": settings changed: {}",
                    paint(st, '~'),
                    i.name,
                    i.settings.join(", ")
                ),
            };
        }
        for m in mappings
            .iter()
            .filter(|m| !whole.contains(&m.instance.as_str()))
        {
            mapping_change(&mut out, st, multi, m);
        }
    }
    let not_compared = s.events - s.changed - s.unchanged;
    let _ = writeln!(
        out,
        "{}: {} changed, {} unchanged{}. Compared: {compared}.",
        events(s.events),
        s.changed,
        s.unchanged,
        if not_compared > 0 {
            format!(", {not_compared} not compared")
        } else {
            String::new()
        }
    );
    for g in &s.groups {
        group(&mut out, st, multi, g);
    }
    out.trim_end().to_string()
}
