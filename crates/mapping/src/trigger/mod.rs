//! Triggers: the reference product's trigger language ("FQL" subset), with our extensions
//! (nesting to any depth, `!(…)`, every top-level event field) and refusals where the reference
//! silently does something surprising. An expression we accept means the same thing in both.
//!
//! Parsed once at load time into a small tree; evaluation walks the event by precomputed keys
//! and allocates nothing.
//!
//! This module holds the tree, its printing and the errors; `parse` (over `lex`'s tokens) builds
//! it, `eval` tests events against it.

use crate::js;
use serde_json::Value;
use std::fmt;

mod eval;
mod lex;
mod parse;

/// A parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub source: String,
    pub root: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Cond(Cond),
}

#[derive(Debug, Clone)]
pub struct Cond {
    pub field: Field,
    pub op: Op,
    /// Byte range of the condition in the trigger's source.
    pub span: (usize, usize),
}

impl PartialEq for Cond {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.op == other.op
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    base: Base,
    /// Keys below the base (`traits.company.id` → `["company", "id"]`).
    keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Base {
    /// `type`, `event`, `name`, `userId`: read straight off the event.
    Top(&'static str),
    /// `properties`, `traits`, `context` and our extension fields: walked with the reference's
    /// `obj && obj[key]` semantics.
    Nested(String),
}

/// Condition operators, already specialised by value type at parse time.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    StrEq(String),
    StrNe(String),
    NumEq(f64),
    NumNe(f64),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    Contains(String),
    NotContains(String),
    StartsWith(String),
    NotStartsWith(String),
    EndsWith(String),
    NotEndsWith(String),
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
}

/// A refused or unparsable trigger: a stable code, a byte range in the trigger and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TriggerError {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub start: usize,
    pub len: usize,
}

/// How deeply groups (`(…)`, `!(…)`) may nest: far beyond any hand-written trigger, and far
/// below what the recursive parser and evaluator can take on a thread's stack.
pub const MAX_DEPTH: usize = 64;

const TOP: &[&str] = &["type", "event", "name", "userId"];
const NESTED: &[&str] = &["properties", "traits", "context"];
/// Top-level event fields the reference refuses and we accept.
const EXTENSION: &[&str] = &[
    "anonymousId",
    "groupId",
    "previousId",
    "messageId",
    "timestamp",
    "sentAt",
    "receivedAt",
    "originalTimestamp",
    "channel",
    "version",
    "category",
    "integrations",
];

impl Field {
    fn base_name(&self) -> &str {
        match &self.base {
            Base::Top(k) => k,
            Base::Nested(k) => k,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base_name())?;
        for k in &self.keys {
            f.write_str(".")?;
            for c in k.chars() {
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = &self.field;
        let n = |x: &f64| js::js_float(*x);
        match &self.op {
            Op::StrEq(s) => write!(f, "{fl} = \"{s}\""),
            Op::StrNe(s) => write!(f, "{fl} != \"{s}\""),
            Op::NumEq(x) => write!(f, "{fl} = {}", n(x)),
            Op::NumNe(x) => write!(f, "{fl} != {}", n(x)),
            Op::Lt(x) => write!(f, "{fl} < {}", n(x)),
            Op::Le(x) => write!(f, "{fl} <= {}", n(x)),
            Op::Gt(x) => write!(f, "{fl} > {}", n(x)),
            Op::Ge(x) => write!(f, "{fl} >= {}", n(x)),
            Op::Contains(s) => write!(f, "contains({fl}, \"{s}\")"),
            Op::NotContains(s) => write!(f, "!contains({fl}, \"{s}\")"),
            Op::StartsWith(s) => write!(f, "match({fl}, \"{s}*\")"),
            Op::NotStartsWith(s) => write!(f, "!match({fl}, \"{s}*\")"),
            Op::EndsWith(s) => write!(f, "match({fl}, \"*{s}\")"),
            Op::NotEndsWith(s) => write!(f, "!match({fl}, \"*{s}\")"),
            Op::Exists => write!(f, "{fl} != null"),
            Op::NotExists => write!(f, "{fl} = null"),
            Op::IsTrue => write!(f, "{fl} = true"),
            Op::IsFalse => write!(f, "{fl} = false"),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = |f: &mut fmt::Formatter<'_>, items: &[Node], sep: &str| {
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match n {
                    Node::All(_) | Node::Any(_) => write!(f, "({n})")?,
                    _ => write!(f, "{n}")?,
                }
            }
            Ok(())
        };
        match self {
            Node::All(items) => group(f, items, " and "),
            Node::Any(items) => group(f, items, " or "),
            Node::Not(n) => write!(f, "!({n})"),
            Node::Cond(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)
    }
}

/// What one condition or group said about one event, for `closeflow explain`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    pub text: String,
    pub result: bool,
    /// The value the condition read (absent when the field is missing); groups have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Explained>,
}

impl Trigger {
    pub fn parse(source: &str) -> Result<Trigger, TriggerError> {
        parse::parse(source)
    }
}

fn err(
    code: &'static str,
    message: impl Into<String>,
    hint: Option<&str>,
    start: usize,
    len: usize,
) -> TriggerError {
    TriggerError {
        code,
        message: message.into(),
        hint: hint.map(str::to_string),
        start,
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::code;
    use serde_json::json;

    fn check(src: &str, event: Value, expect: bool) {
        let t = Trigger::parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        assert_eq!(t.matches(&event), expect, "{src} on {event}");
    }

    fn refused(src: &str, code: &str) {
        let e = Trigger::parse(src).expect_err(src);
        assert_eq!(e.code, code, "{src}: {e:?}");
    }

    #[test]
    fn deciding_names_the_conditions_that_made_the_verdict() {
        let t =
            Trigger::parse("type = \"identify\" and (traits.plan = \"pro\" or traits.vip = true)")
                .unwrap();
        let texts =
            |e: Value| -> Vec<String> { t.deciding(&e).into_iter().map(|x| x.text).collect() };
        // Fired: the type and the one branch of the `or` that held.
        assert_eq!(
            texts(json!({"type": "identify", "traits": {"vip": true}})),
            ["type = \"identify\"", "traits.vip = true"]
        );
        // Did not fire: only the failing condition, not the `or` that was never needed.
        let why = t.deciding(&json!({"type": "track", "traits": {"plan": "pro"}}));
        assert_eq!(why.len(), 1, "{why:?}");
        assert_eq!(why[0].text, "type = \"identify\"");
        assert_eq!(why[0].actual, Some(json!("track")));
        // Both branches of the `or` failed: both decided it (one of them missing).
        let why = t.deciding(&json!({"type": "identify", "traits": {"plan": "free"}}));
        assert_eq!(why.len(), 2, "{why:?}");
        assert_eq!(why[1].missing, Some(true));
    }

    #[test]
    fn extensions() {
        check("!(type = \"track\")", json!({"type": "identify"}), true);
        check(
            "type = \"identify\" and (traits.plan = \"pro\" or (traits.vip = true))",
            json!({"type": "identify", "traits": {"vip": true}}),
            true,
        );
        check(
            "anonymousId = \"a1\"",
            json!({"type": "t", "anonymousId": "a1"}),
            true,
        );
        check(
            "integrations.Close = false",
            json!({"integrations": {"Close": false}}),
            true,
        );
    }

    #[test]
    fn refusals_have_codes_and_places() {
        refused(
            "type = \"track\" and event = \"A\" or event = \"B\"",
            code::TRIGGER_MIXED_AND_OR,
        );
        refused("TYPE = \"identify\"", code::TRIGGER_UNKNOWN_FIELD);
        refused("typo", code::TRIGGER_UNKNOWN_FIELD);
        refused("type", code::TRIGGER_SYNTAX);
        refused("", code::TRIGGER_SYNTAX);
        refused("type = ", code::TRIGGER_SYNTAX);
        refused("event = 'Order Completed'", code::TRIGGER_AMBIGUOUS);
        refused("traits.vip != true", code::TRIGGER_AMBIGUOUS);
        refused("userId = 5", code::TRIGGER_AMBIGUOUS);
        refused("match(event, \"abc\")", code::TRIGGER_AMBIGUOUS);
        refused("!traits.x = 1", code::TRIGGER_AMBIGUOUS);
        let e = Trigger::parse("type = \"a\" and tratis.x = 1").unwrap_err();
        assert_eq!((e.start, e.len), (15, 6));
        assert_eq!(e.hint.as_deref(), Some("did you mean `traits`?"));
    }

    #[test]
    fn nesting_is_capped_with_a_located_error() {
        let nested =
            |open: &str, n: usize| format!("{}type = \"a\"{}", open.repeat(n), ")".repeat(n));
        let t = Trigger::parse(&nested("(", MAX_DEPTH)).unwrap();
        assert!(t.matches(&json!({"type": "a"})));
        assert!(Trigger::parse(&nested("!(", MAX_DEPTH)).is_ok());
        // Thousands deep used to overflow the stack and abort the process.
        for (open, n) in [("(", 7000), ("!(", 7000), ("(", MAX_DEPTH + 1)] {
            let e = Trigger::parse(&nested(open, n)).unwrap_err();
            assert_eq!(e.code, code::TRIGGER_TOO_DEEP, "{open} × {n}");
            assert_eq!(
                e.start,
                MAX_DEPTH * open.len(),
                "points at the first group too many"
            );
            assert!(e.hint.is_some());
        }
    }

    #[test]
    fn comparisons_with_words_say_what_is_wrong() {
        let e = Trigger::parse("traits.n >= null").unwrap_err();
        assert_eq!(e.code, code::TRIGGER_AMBIGUOUS);
        assert_eq!(e.message, "`>=` compares numbers, and `null` is not one");
        let hint = e.hint.unwrap();
        assert!(hint.contains("traits.n != null"), "{hint}");
        assert!(
            !hint.contains("or null"),
            "the hint must not offer null again: {hint}"
        );
        let e = Trigger::parse("traits.n < true").unwrap_err();
        assert!(e.hint.unwrap().contains("traits.n = true"));
        refused("traits.n > \"abc\"", code::TRIGGER_AMBIGUOUS);
    }

    #[test]
    fn every_refusal_has_a_hint() {
        for src in [
            "type = \"a\" && event = \"b\"",
            "type = \"a\" || event = \"b\"",
            "type = \"a\" and",
            "(type = \"a\"",
            "contains(traits.email \"x\")",
            "contains(",
            "traits.n > 1.2.3",
            "traits.x\\",
            "type = \"a\" #",
            "!",
            "traits.n > (",
            "contains(traits.email, ,)",
            "type = \"a\" type",
            "",
        ] {
            let e = Trigger::parse(src).expect_err(src);
            assert!(e.hint.is_some(), "{src}: {e:?}");
        }
    }

    #[test]
    fn prints_and_reparses() {
        for src in [
            "type = \"identify\" and (traits.plan = \"pro\" or !(traits.vip = true))",
            "properties.product\\ 1 = \"z\"",
            "!contains(traits.email, \"spam\") or match(event, \"Order*\") or traits.n >= 4.5",
        ] {
            let t = Trigger::parse(src).unwrap();
            let printed = t.to_string();
            assert_eq!(Trigger::parse(&printed).unwrap().root, t.root, "{printed}");
        }
    }
}
