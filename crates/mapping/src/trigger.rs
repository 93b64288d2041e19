//! Triggers: the reference product's trigger language ("FQL" subset), with our extensions
//! (nesting to any depth, `!(…)`, every top-level event field) and refusals where the reference
//! silently does something surprising. An expression we accept means the same thing in both.
//!
//! Parsed once at load time into a small tree; evaluation walks the event by precomputed keys
//! and allocates nothing.

use crate::diag::code;
use crate::js;
use crate::suggest;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

mod lex;
use lex::{Kind, Tok, lex};

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
    fn lookup<'a>(&self, event: &'a Value) -> Option<Cow<'a, Value>> {
        match &self.base {
            Base::Top(k) => event
                .as_object()
                .and_then(|m| js::object_get(m, k))
                .map(Cow::Borrowed),
            Base::Nested(k) => js::walk(
                event.as_object().and_then(|m| js::object_get(m, k))?,
                &self.keys,
            ),
        }
    }
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

impl Op {
    fn test(&self, actual: Option<&Value>) -> bool {
        let num = || actual.and_then(Value::as_f64);
        let text = || actual.and_then(Value::as_str);
        match self {
            Op::StrEq(s) => text() == Some(s.as_str()),
            Op::StrNe(s) => text() != Some(s.as_str()),
            Op::NumEq(n) => num().is_some_and(|a| a == *n),
            Op::NumNe(n) => num().is_some_and(|a| a != *n),
            Op::Lt(n) => num().is_some_and(|a| a < *n),
            Op::Le(n) => num().is_some_and(|a| a <= *n),
            Op::Gt(n) => num().is_some_and(|a| a > *n),
            Op::Ge(n) => num().is_some_and(|a| a >= *n),
            Op::Contains(s) => text().is_some_and(|a| a.contains(s.as_str())),
            Op::NotContains(s) => text().is_some_and(|a| !a.contains(s.as_str())),
            Op::StartsWith(s) => text().is_some_and(|a| a.starts_with(s.as_str())),
            Op::NotStartsWith(s) => text().is_some_and(|a| !a.starts_with(s.as_str())),
            Op::EndsWith(s) => text().is_some_and(|a| a.ends_with(s.as_str())),
            Op::NotEndsWith(s) => text().is_some_and(|a| !a.ends_with(s.as_str())),
            Op::Exists => actual.is_some_and(|v| !v.is_null()),
            Op::NotExists => actual.is_none_or(Value::is_null),
            Op::IsTrue => actual == Some(&Value::Bool(true)),
            Op::IsFalse => actual == Some(&Value::Bool(false)),
        }
    }
}

impl Cond {
    pub fn test(&self, event: &Value) -> bool {
        self.op.test(self.field.lookup(event).as_deref())
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

impl Node {
    pub fn matches(&self, event: &Value) -> bool {
        match self {
            Node::All(c) => c.iter().all(|n| n.matches(event)),
            Node::Any(c) => c.iter().any(|n| n.matches(event)),
            Node::Not(n) => !n.matches(event),
            Node::Cond(c) => c.test(event),
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
        let tokens = lex(source)?;
        let mut p = Parser {
            src: source,
            toks: tokens,
            pos: 0,
            depth: 0,
        };
        if p.toks.is_empty() {
            return Err(err(
                code::TRIGGER_SYNTAX,
                "the trigger is empty",
                Some("e.g. type = \"identify\""),
                0,
                0,
            ));
        }
        let root = p.expr()?;
        if let Some(t) = p.peek() {
            return Err(err(
                code::TRIGGER_SYNTAX,
                format!(
                    "unexpected {} after a complete condition",
                    t.kind.describe()
                ),
                Some("join conditions with `and` / `or`"),
                t.start,
                t.len,
            ));
        }
        Ok(Trigger {
            source: source.to_string(),
            root,
        })
    }

    pub fn matches(&self, event: &Value) -> bool {
        event.is_object() && self.root.matches(event)
    }

    pub fn explain(&self, event: &Value) -> Explained {
        fn go(n: &Node, event: &Value) -> Explained {
            match n {
                Node::Cond(c) => {
                    let actual = c.field.lookup(event).map(Cow::into_owned);
                    Explained {
                        text: c.to_string(),
                        result: c.op.test(actual.as_ref()),
                        missing: Some(actual.is_none()),
                        actual,
                        children: vec![],
                    }
                }
                Node::Not(inner) => {
                    let child = go(inner, event);
                    Explained {
                        text: n.to_string(),
                        result: !child.result,
                        actual: None,
                        missing: None,
                        children: vec![child],
                    }
                }
                Node::All(items) | Node::Any(items) => {
                    let children: Vec<Explained> = items.iter().map(|i| go(i, event)).collect();
                    let result = if matches!(n, Node::All(_)) {
                        children.iter().all(|c| c.result)
                    } else {
                        children.iter().any(|c| c.result)
                    };
                    Explained {
                        text: n.to_string(),
                        result,
                        actual: None,
                        missing: None,
                        children,
                    }
                }
            }
        }
        go(&self.root, event)
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

/// The length in the source of a path's first segment: up to its first unescaped `.` (the
/// decoded name is shorter wherever `\\` escaped something).
fn first_segment_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '.' => return i,
            _ => {}
        }
    }
    text.len()
}

// ---- parser ----

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Tok>,
    pos: usize,
    /// Open groups (`(` and `!(`) around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn end_pos(&self) -> usize {
        self.src.len()
    }
    fn expect(&mut self, want: &Kind, what: &str) -> Result<Tok, TriggerError> {
        match self.next() {
            Some(t) if &t.kind == want => Ok(t),
            Some(t) => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected {what}, found {}", t.kind.describe()),
                Some(&expect_hint(want)),
                t.start,
                t.len,
            )),
            None => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected {what}, but the trigger ends here"),
                Some(&expect_hint(want)),
                self.end_pos(),
                0,
            )),
        }
    }

    fn expr(&mut self) -> Result<Node, TriggerError> {
        let mut items = vec![self.term()?];
        let mut conn: Option<Kind> = None;
        while let Some(t) = self.peek() {
            let k = t.kind.clone();
            if k != Kind::And && k != Kind::Or {
                break;
            }
            let (start, len) = (t.start, t.len);
            if let Some(c) = &conn {
                if *c != k {
                    return Err(err(
                        code::TRIGGER_MIXED_AND_OR,
                        "`and` and `or` are mixed without parentheses",
                        Some(
                            "add parentheses, e.g. `(a and b) or c`; the reference product would read `a and b or c` as `a or b or c`",
                        ),
                        start,
                        len,
                    ));
                }
            } else {
                conn = Some(k.clone());
            }
            self.pos += 1;
            items.push(self.term()?);
        }
        Ok(match conn {
            None => items.pop().unwrap_or(Node::All(vec![])),
            Some(Kind::Or) => Node::Any(items),
            Some(_) => Node::All(items),
        })
    }

    /// A parenthesised group whose `(` was just read (`opener` is the `(` or the `!` of `!(`).
    /// Nesting is capped: parsing, printing and evaluating recurse once per level, and a
    /// trigger thousands of levels deep would otherwise overflow the stack.
    fn group(&mut self, opener: &Tok) -> Result<Node, TriggerError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(
                code::TRIGGER_TOO_DEEP,
                format!("groups are nested more than {MAX_DEPTH} levels deep"),
                Some(
                    "flatten the expression: `a and (b and c)` is `a and b and c`, and `!(!(x))` is `x`",
                ),
                opener.start,
                opener.len,
            ));
        }
        self.depth += 1;
        let inner = self.expr()?;
        self.expect(&Kind::RParen, "`)`")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn term(&mut self) -> Result<Node, TriggerError> {
        let Some(t) = self.next() else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                "expected a condition, but the trigger ends here",
                Some(
                    "a condition looks like `type = \"identify\"`; remove the trailing `and`/`or`/`!`",
                ),
                self.end_pos(),
                0,
            ));
        };
        match &t.kind {
            Kind::LParen => self.group(&t),
            Kind::Bang => match self.peek().map(|t| t.kind.clone()) {
                Some(Kind::LParen) => {
                    self.pos += 1;
                    Ok(Node::Not(Box::new(self.group(&t)?)))
                }
                Some(Kind::Ident(p)) if is_function(&p) => {
                    let f = self.next().ok_or_else(|| {
                        err(
                            code::TRIGGER_SYNTAX,
                            "expected a function",
                            Some("`!` negates contains(…), match(…) or a parenthesised group"),
                            t.start,
                            1,
                        )
                    })?;
                    self.function(&f, true, t.start)
                }
                _ => Err(err(
                    code::TRIGGER_AMBIGUOUS,
                    "`!` can only negate a function or a parenthesised group",
                    Some(
                        "write `!(field = \"x\")` or `field != \"x\"`; the reference product silently ignores a `!` here",
                    ),
                    t.start,
                    1,
                )),
            },
            Kind::Ident(p)
                if is_function(p) && matches!(self.peek().map(|t| &t.kind), Some(Kind::LParen)) =>
            {
                self.function(&t, false, t.start)
            }
            Kind::Ident(_) => self.comparison(&t),
            other => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a condition, found {}", other.describe()),
                Some("a condition looks like `type = \"identify\"`"),
                t.start,
                t.len,
            )),
        }
    }

    fn field(&self, t: &Tok) -> Result<Field, TriggerError> {
        let Kind::Ident(segs) = &t.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a field, found {}", t.kind.describe()),
                Some(
                    "fields are `type`, `event`, `name`, `userId` or paths under `properties.`, `traits.`, `context.`",
                ),
                t.start,
                t.len,
            ));
        };
        let first = segs[0].as_str();
        let keys: Vec<String> = segs[1..].to_vec();
        if let Some(top) = TOP.iter().find(|k| **k == first) {
            if !keys.is_empty() {
                return Err(err(
                    code::TRIGGER_UNKNOWN_FIELD,
                    format!("`{first}` is text and has no fields below it"),
                    Some(
                        "the reference product would silently compare the whole field; remove the `.…` part",
                    ),
                    t.start,
                    t.len,
                ));
            }
            return Ok(Field {
                base: Base::Top(top),
                keys,
            });
        }
        if NESTED.contains(&first) {
            if keys.is_empty() {
                return Err(err(
                    code::TRIGGER_UNKNOWN_FIELD,
                    format!("`{first}` needs a path below it"),
                    Some(&format!("e.g. `{first}.plan`")),
                    t.start,
                    t.len,
                ));
            }
            return Ok(Field {
                base: Base::Nested(first.to_string()),
                keys,
            });
        }
        if EXTENSION.contains(&first) {
            return Ok(Field {
                base: Base::Nested(first.to_string()),
                keys,
            });
        }
        let all: Vec<&str> = TOP.iter().chain(NESTED).chain(EXTENSION).copied().collect();
        let hint = suggest::hint(first, &all).unwrap_or_else(|| {
            "fields are `type`, `event`, `name`, `userId`, paths under `properties.`, `traits.`, `context.`, or another top-level event field such as `anonymousId`".into()
        });
        Err(err(
            code::TRIGGER_UNKNOWN_FIELD,
            format!("unknown field `{first}`"),
            Some(&hint),
            t.start,
            first_segment_len(&self.src[t.start..t.start + t.len]),
        ))
    }

    fn value_tok(&mut self, after: &Tok) -> Result<Tok, TriggerError> {
        match self.next() {
            Some(v) => {
                if let Kind::SingleStr(s) = &v.kind {
                    return Err(err(
                        code::TRIGGER_AMBIGUOUS,
                        format!("single-quoted text '{s}'"),
                        Some(&format!(
                            "use double quotes: \"{s}\"; the reference product keeps single quotes as part of the text, so this would never match"
                        )),
                        v.start,
                        v.len,
                    ));
                }
                Ok(v)
            }
            None => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a value after {}", after.kind.describe()),
                Some("e.g. `= \"identify\"`"),
                self.end_pos(),
                0,
            )),
        }
    }

    fn comparison(&mut self, ft: &Tok) -> Result<Node, TriggerError> {
        let field = self.field(ft)?;
        let op_tok = self.next().ok_or_else(|| {
            err(
                code::TRIGGER_SYNTAX,
                format!("expected an operator after {}", ft.kind.describe()),
                Some("operators: = != < <= > >="),
                self.end_pos(),
                0,
            )
        })?;
        let Kind::Cmp(op) = op_tok.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected an operator, found {}", op_tok.kind.describe()),
                Some("operators: = != < <= > >="),
                op_tok.start,
                op_tok.len,
            ));
        };
        let vt = self.value_tok(&op_tok)?;
        let span = (ft.start, vt.start + vt.len - ft.start);
        let is_top = matches!(field.base, Base::Top(_));
        let text_only = matches!(field.base, Base::Top("type" | "event"));
        let refuse = |msg: String, hint: String| {
            Err(err(
                code::TRIGGER_AMBIGUOUS,
                msg,
                Some(&hint),
                span.0,
                span.1,
            ))
        };
        let fname = field.to_string();
        let op = match (op, &vt.kind) {
            ("=" | "!=", Kind::Str(s)) => {
                if op == "=" {
                    Op::StrEq(s.clone())
                } else {
                    Op::StrNe(s.clone())
                }
            }
            ("=" | "!=", Kind::Ident(w)) if w.len() == 1 && w[0] == "null" => {
                if text_only {
                    return refuse(
                        format!(
                            "`{fname} {op} null` compares with the text \"null\" in the reference product"
                        ),
                        format!(
                            "`{fname}` is always present on a valid event; compare it with a quoted value"
                        ),
                    );
                }
                if op == "=" { Op::NotExists } else { Op::Exists }
            }
            ("=", Kind::Ident(w)) if w.len() == 1 && (w[0] == "true" || w[0] == "false") => {
                if text_only || matches!(field.base, Base::Top("name")) {
                    return refuse(
                        format!(
                            "`{fname} = {}` compares with the text \"{}\" in the reference product",
                            w[0], w[0]
                        ),
                        format!("write `{fname} = \"{}\"` if you mean the text", w[0]),
                    );
                }
                if w[0] == "true" {
                    Op::IsTrue
                } else {
                    Op::IsFalse
                }
            }
            ("!=", Kind::Ident(w)) if w.len() == 1 && (w[0] == "true" || w[0] == "false") => {
                return refuse(
                    format!(
                        "`{fname} != {}` compares with the text \"{}\" in the reference product, so it holds even when the value is {}",
                        w[0], w[0], w[0]
                    ),
                    format!(
                        "write `!({fname} = {})` (not {} or missing) or `{fname} = {}`",
                        w[0],
                        w[0],
                        if w[0] == "true" { "false" } else { "true" }
                    ),
                );
            }
            ("=" | "!=", Kind::Ident(w)) => {
                let word = w.join(".");
                if op == "=" {
                    Op::StrEq(word)
                } else {
                    Op::StrNe(word)
                }
            }
            ("=" | "!=", Kind::Num(n)) => {
                if is_top {
                    return refuse(
                        format!("`{fname} {op} {n}` compares as text in the reference product"),
                        format!("write `{fname} {op} \"{n}\"`"),
                    );
                }
                let x = js::js_number_of_str(n);
                if op == "=" {
                    Op::NumEq(x)
                } else {
                    Op::NumNe(x)
                }
            }
            (cmp, Kind::Num(n) | Kind::Str(n)) => {
                let x = js::js_number_of_str(n);
                if x.is_nan() {
                    return refuse(
                        format!("`{cmp}` needs a number, got \"{n}\""),
                        "compare with a number, e.g. `properties.total > 50`".into(),
                    );
                }
                match cmp {
                    "<" => Op::Lt(x),
                    "<=" => Op::Le(x),
                    ">" => Op::Gt(x),
                    _ => Op::Ge(x),
                }
            }
            (cmp, Kind::Ident(w)) => {
                let word = w.join(".");
                let hint = match word.as_str() {
                    "null" => format!(
                        "to test presence write `{fname} != null`; to compare, use a number, e.g. `{fname} {cmp} 0`"
                    ),
                    "true" | "false" => {
                        format!("to test a boolean write `{fname} = {word}`")
                    }
                    _ => format!("compare with a number, e.g. `{fname} {cmp} 10`"),
                };
                return refuse(
                    format!("`{cmp}` compares numbers, and `{word}` is not one"),
                    hint,
                );
            }
            (cmp, other) => {
                return Err(err(
                    code::TRIGGER_SYNTAX,
                    format!("expected a value after `{cmp}`, found {}", other.describe()),
                    Some(if cmp == "=" || cmp == "!=" {
                        "values are \"text\", numbers, true, false or null"
                    } else {
                        "`<`, `<=`, `>` and `>=` compare with a number, e.g. `properties.total > 50`"
                    }),
                    vt.start,
                    vt.len,
                ));
            }
        };
        Ok(Node::Cond(Cond { field, op, span }))
    }

    fn function(
        &mut self,
        name_tok: &Tok,
        negate: bool,
        start: usize,
    ) -> Result<Node, TriggerError> {
        let Kind::Ident(n) = &name_tok.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                "expected a function",
                Some("functions are contains(…) and match(…)"),
                name_tok.start,
                name_tok.len,
            ));
        };
        let name = n[0].clone();
        self.expect(&Kind::LParen, "`(`")?;
        let ft = self.next().ok_or_else(|| {
            err(
                code::TRIGGER_SYNTAX,
                format!("{name}() is missing a 1st argument"),
                Some(&format!("write {name}(field, \"text\")")),
                self.end_pos(),
                0,
            )
        })?;
        let field = self.field(&ft)?;
        let comma = self.expect(&Kind::Comma, "`,`")?;
        let vt = self.value_tok(&comma)?;
        let close = self.expect(&Kind::RParen, "`)`")?;
        let span = (start, close.start + 1 - start);
        let text = match &vt.kind {
            Kind::Str(s) => s.clone(),
            Kind::Num(n) => js::js_float(js::js_number_of_str(n)),
            Kind::Ident(w) => w.join("."),
            other => {
                return Err(err(
                    code::TRIGGER_SYNTAX,
                    format!("expected a value, found {}", other.describe()),
                    Some(&format!(
                        "the second argument of {name}() is text in double quotes"
                    )),
                    vt.start,
                    vt.len,
                ));
            }
        };
        let op = if name == "contains" {
            if negate {
                Op::NotContains(text)
            } else {
                Op::Contains(text)
            }
        } else {
            let stars = text.matches('*').count();
            if text == "*" || (stars == 1 && text.ends_with('*')) {
                let p = text[..text.len() - 1].to_string();
                if negate {
                    Op::NotStartsWith(p)
                } else {
                    Op::StartsWith(p)
                }
            } else if stars == 1 && text.starts_with('*') {
                let p = text[1..].to_string();
                if negate {
                    Op::NotEndsWith(p)
                } else {
                    Op::EndsWith(p)
                }
            } else {
                return Err(err(
                    code::TRIGGER_AMBIGUOUS,
                    format!("match() takes \"prefix*\" or \"*suffix\", got \"{text}\""),
                    Some(
                        "the reference product reads any other pattern as an odd suffix test; use `=` for equality or contains() for a substring",
                    ),
                    vt.start,
                    vt.len,
                ));
            }
        };
        Ok(Node::Cond(Cond { field, op, span }))
    }
}

fn expect_hint(want: &Kind) -> String {
    match want {
        Kind::RParen => "every `(` needs a matching `)`".into(),
        Kind::LParen => {
            "functions are called as contains(field, \"text\") or match(field, \"x*\")".into()
        }
        Kind::Comma => {
            "functions take a field and a value: contains(traits.email, \"@acme.com\")".into()
        }
        other => format!("{} is expected here", other.describe()),
    }
}

fn is_function(p: &[String]) -> bool {
    p.len() == 1 && (p[0] == "contains" || p[0] == "match")
}

#[cfg(test)]
mod tests {
    use super::*;
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
