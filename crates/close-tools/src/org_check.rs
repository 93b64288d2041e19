//! What an instance file assumes about its Close organisation, checked against it
//! (`closeflow validate --against`): that the lead status ids and custom field ids it names
//! exist, and that the custom field values it writes literally fit the fields' types. Values
//! read from events (paths, templates, directives) can only be checked when an event arrives.
//! The organisation is read by `closeflow_close_api::metadata`.

use closeflow_close::schema::{COMPANY_SETTING, USER_SETTING};
use closeflow_close_api::metadata::{CustomField, Metadata};
use closeflow_mapping::diag::{Diagnostic, Span, code};
use closeflow_mapping::yaml::{self, Kind, Node};
use closeflow_mapping::{Instance, suggest};

/// Checks a valid instance (its file's `source`, and the instance loaded from it) against an
/// organisation's metadata.
pub fn check(inst: &Instance, source: &str, meta: &Metadata) -> Vec<Diagnostic> {
    let Ok(root) = yaml::parse(source) else {
        return vec![];
    };
    let mut c = Checker {
        meta,
        out: Vec::new(),
        mapping: None,
    };
    for (setting, object) in [
        (COMPANY_SETTING, Object::Lead),
        (USER_SETTING, Object::Contact),
    ] {
        if let Some(id) = inst.plain_setting(setting) {
            let span = root.span_at(&format!("/settings/{setting}"));
            c.field_id(id, object, span, &format!("setting `{setting}`"));
        }
    }
    if let Some(Kind::Seq(items)) = root.get("mappings").map(|n| &n.kind) {
        for item in items {
            c.mapping = item.get("name").and_then(Node::as_str).map(str::to_string);
            if let Some(f) = item.get("fields") {
                c.mapping_fields(f);
            }
        }
    }
    c.out
}

#[derive(Clone, Copy)]
enum Object {
    Lead,
    Contact,
}

struct Checker<'a> {
    meta: &'a Metadata,
    out: Vec<Diagnostic>,
    mapping: Option<String>,
}

/// A value written in the file, as opposed to one read from the event.
fn is_literal(n: &Node) -> bool {
    match &n.kind {
        Kind::Str(s) => !s.starts_with('$') && !s.contains("{{"),
        Kind::Map(e) => !e.iter().any(|(k, _)| k.key_text().starts_with('@')),
        Kind::Seq(items) => items.iter().all(is_literal),
        _ => true,
    }
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        let mut d = d;
        d.file.clear();
        d.mapping.clone_from(&self.mapping);
        self.out.push(d);
    }

    fn fields_of(&self, o: Object) -> &[CustomField] {
        match o {
            Object::Lead => &self.meta.lead_fields,
            Object::Contact => &self.meta.contact_fields,
        }
    }

    fn mapping_fields(&mut self, fields: &Node) {
        if let Some(status) = fields.get("lead_status_id")
            && let Kind::Str(id) = &status.kind
            && is_literal(status)
        {
            self.status(id, status.span);
        }
        for (key, object) in [
            ("lead_custom_fields", Object::Lead),
            ("contact_custom_fields", Object::Contact),
        ] {
            let Some(Kind::Map(entries)) = fields.get(key).map(|n| &n.kind) else {
                continue;
            };
            if entries.iter().any(|(k, _)| k.key_text().starts_with('@')) {
                continue;
            }
            for (k, v) in entries {
                let written = k.key_text();
                let (id, edit) = match written.rsplit_once('.') {
                    Some((id, e @ ("add" | "remove"))) => (id.to_string(), Some(e)),
                    _ => (written.clone(), None),
                };
                let Some(field) = self.field_id(&id, object, k.span, &format!("`{written}`"))
                else {
                    continue;
                };
                if is_literal(v) {
                    self.value(&field, edit, v);
                }
            }
        }
    }

    fn status(&mut self, id: &str, span: Span) {
        let known = &self.meta.statuses;
        if known.iter().any(|s| s.id == id) {
            return;
        }
        let hint = if let Some(s) = known.iter().find(|s| s.label.eq_ignore_ascii_case(id)) {
            format!("\"{}\" is a status label; its id is `{}`", s.label, s.id)
        } else {
            let ids: Vec<&str> = known.iter().map(|s| s.id.as_str()).collect();
            suggest::hint(id, &ids).unwrap_or_else(|| {
                format!(
                    "its lead statuses: {}",
                    list(known.iter().map(|s| format!("{} ({})", s.label, s.id)))
                )
            })
        };
        let d = Diagnostic::error(
            code::UNKNOWN_STATUS,
            format!("lead status `{id}` does not exist in {}", self.meta.source),
        )
        .at(span)
        .hint(hint);
        self.push(d);
    }

    /// The custom field `id` on `object`, or a located error naming what was meant.
    fn field_id(
        &mut self,
        id: &str,
        object: Object,
        span: Span,
        what: &str,
    ) -> Option<CustomField> {
        let known = self.fields_of(object);
        if let Some(f) = known.iter().find(|f| f.id == id) {
            return Some(f.clone());
        }
        let kind = match object {
            Object::Lead => "lead",
            Object::Contact => "contact",
        };
        let hint = if let Some(f) = known.iter().find(|f| f.name.eq_ignore_ascii_case(id)) {
            format!("\"{}\" is the field's name; its id is `{}`", f.name, f.id)
        } else {
            let ids: Vec<&str> = known.iter().map(|f| f.id.as_str()).collect();
            suggest::hint(id, &ids).unwrap_or_else(|| {
                if known.is_empty() {
                    format!("it has no {kind} custom fields")
                } else {
                    format!(
                        "its {kind} custom fields: {}",
                        list(known.iter().map(|f| format!("{} ({})", f.name, f.id)))
                    )
                }
            })
        };
        let d = Diagnostic::error(
            code::UNKNOWN_CUSTOM_FIELD,
            format!(
                "{what}: {kind} custom field `{id}` does not exist in {}",
                self.meta.source
            ),
        )
        .at(span)
        .hint(hint);
        self.push(d);
        None
    }

    fn value(&mut self, f: &CustomField, edit: Option<&str>, v: &Node) {
        let problem = if let (Some(e), false) = (edit, f.multiple) {
            Some(format!(
                "`.{e}` edits a field that takes several values, and \"{}\" takes one",
                f.name
            ))
        } else {
            match &v.kind {
                Kind::Null => None,
                Kind::Seq(items) if f.multiple && edit.is_none() => {
                    items.iter().find_map(|i| fits(f, i))
                }
                Kind::Seq(_) => Some(format!("\"{}\" takes one value, not a list", f.name)),
                _ => fits(f, v),
            }
        };
        if let Some(p) = problem {
            let d = Diagnostic::error(
                code::CUSTOM_FIELD_VALUE,
                format!("`{}` ({} field \"{}\"): {p}", f.id, f.kind, f.name),
            )
            .at(v.span)
            .hint(type_hint(f));
            self.push(d);
        }
    }
}

/// Why a single literal value does not fit the field, if it does not.
fn fits(f: &CustomField, v: &Node) -> Option<String> {
    let text = match &v.kind {
        Kind::Str(s) => s.clone(),
        Kind::Number(n) => n.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Null => return None,
        _ => return Some(format!("takes a single value, not {}", v.type_name())),
    };
    let ok = match f.kind.as_str() {
        "number" => matches!(v.kind, Kind::Number(_)) || text.trim().parse::<f64>().is_ok(),
        "date" => is_date(&text) || is_datetime(&text),
        "datetime" => is_datetime(&text) || is_date(&text),
        "choices" => f.choices.contains(&text),
        _ => true,
    };
    (!ok).then(|| match f.kind.as_str() {
        "choices" => format!("\"{text}\" is not one of its choices"),
        "number" => format!("\"{text}\" is not a number"),
        k => format!("\"{text}\" is not a valid {k}"),
    })
}

fn type_hint(f: &CustomField) -> String {
    match f.kind.as_str() {
        "number" => "write a number, e.g. 42 or 4.5".into(),
        "date" => "write a date as YYYY-MM-DD, e.g. 2026-01-31".into(),
        "datetime" => "write an RFC 3339 time, e.g. 2026-01-31T09:30:00Z".into(),
        "choices" => format!("its choices: {}", list(f.choices.iter().cloned())),
        _ if f.multiple => "write one value, or a list of values".into(),
        _ => "write a single value".into(),
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.len() > 8 {
        format!("{}, … ({} in all)", all[..8].join(", "), all.len())
    } else {
        all.join(", ")
    }
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD`, a real day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (digits(&s[..4]), digits(&s[5..7]), digits(&s[8..])) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// An RFC 3339 date-time (`T` or a space between; seconds, fraction and offset optional, as
/// Close's ISO 8601 parsing accepts them).
fn is_datetime(s: &str) -> bool {
    if s.len() < 16 || !s.is_char_boundary(10) || !is_date(&s[..10]) {
        return false;
    }
    let rest = &s[10..];
    let Some(time) = rest.strip_prefix(['T', 't', ' ']) else {
        return false;
    };
    let (clock, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    let clock_ok = matches!(parts.len(), 2 | 3)
        && parts.iter().all(|p| p.len() == 2 && digits(p).is_some())
        && digits(parts[0]).is_some_and(|h| h < 24)
        && digits(parts[1]).is_some_and(|m| m < 60)
        && parts
            .get(2)
            .is_none_or(|s| digits(s).is_some_and(|s| s < 61))
        && frac.bytes().all(|b| b.is_ascii_digit());
    let zone_ok = match zone {
        "" | "Z" | "z" => true,
        z => {
            let off = &z[1..];
            let (h, m) = off.split_once(':').unwrap_or((off, ""));
            h.len() == 2
                && digits(h).is_some()
                && (m.is_empty() || (m.len() == 2 && digits(m).is_some()))
        }
    };
    clock_ok && zone_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert!(is_date("2026-02-28"));
        assert!(!is_date("2026-02-30"));
        assert!(!is_date("yesterday"));
        assert!(is_datetime("2026-11-30T09:05:00Z"));
        assert!(is_datetime("2026-11-30T09:05:00.123+05:00"));
        assert!(is_datetime("2026-11-30 09:05"));
        assert!(!is_datetime("2026-11-30T25:00:00Z"));
        assert!(!is_datetime("2026-11-30"));
    }
}
