//! Literal field values checked against the field's type at load time (a directive or a path
//! is checked at run time).

use crate::schema::FieldKind;
use crate::yaml::{Kind, Node};

pub(super) const BOOLEAN_HINT: &str =
    "write true or false, unquoted (YAML 1.2 reads yes/no/on/off as text)";

/// A literal value that can never fit the field's type (a directive or path is checked at run
/// time): what is wrong, and how to fix it.
pub(super) fn literal_kind_problem(kind: FieldKind, v: &Node) -> Option<(String, &'static str)> {
    let is_dynamic = match &v.kind {
        Kind::Str(s) => s.starts_with('$') || s.contains("{{"),
        Kind::Map(e) => e.iter().any(|(k, _)| k.key_text().starts_with('@')),
        _ => false,
    };
    if is_dynamic {
        return None;
    }
    const TEXT_HINT: &str =
        "a text field takes one value: literal text, a `$.path` or a \"{{template}}\"";
    match (kind, &v.kind) {
        (FieldKind::Boolean, Kind::Str(s)) if s != "true" && s != "false" => Some((
            format!("must be true or false, but it is \"{s}\""),
            BOOLEAN_HINT,
        )),
        (FieldKind::Boolean, Kind::Number(_) | Kind::Map(_) | Kind::Seq(_)) => Some((
            format!("must be true or false, but it is {}", v.type_name()),
            BOOLEAN_HINT,
        )),
        (FieldKind::String, Kind::Map(_)) => {
            Some(("must be text, but it is a mapping".into(), TEXT_HINT))
        }
        (FieldKind::String, Kind::Seq(items)) if items.len() > 1 => {
            Some(("must be text, but it is a list".into(), TEXT_HINT))
        }
        (FieldKind::Object, Kind::Str(_) | Kind::Number(_) | Kind::Bool(_) | Kind::Seq(_)) => {
            Some((
                format!(
                    "must be a mapping of custom field ids to values, but it is {}",
                    v.type_name()
                ),
                "write one `cf_…: value` pair per line under it, e.g. `cf_plan: $.traits.plan`",
            ))
        }
        _ => None,
    }
}
