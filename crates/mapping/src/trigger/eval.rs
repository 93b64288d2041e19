//! Trigger evaluation: walking an event by the parsed tree's precomputed keys (allocating
//! nothing), and `explain`'s account of what each condition read and said.

use super::{Base, Cond, Explained, Field, Node, Op, Trigger};
use crate::js;
use serde_json::Value;
use std::borrow::Cow;

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

impl Trigger {
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

impl Trigger {
    /// The conditions that decided the verdict: for a trigger that fired, every condition that
    /// had to hold; for one that did not, the ones that failed it (under `not`, the other way
    /// round). What a journey keeps instead of the whole [`Explained`] tree.
    pub fn deciding(&self, event: &Value) -> Vec<Explained> {
        fn go(n: &Node, event: &Value, out: &mut Vec<Explained>) {
            let verdict = n.matches(event);
            match n {
                Node::Cond(c) => {
                    let actual = c.field.lookup(event).map(Cow::into_owned);
                    out.push(Explained {
                        text: c.to_string(),
                        result: verdict,
                        missing: Some(actual.is_none()),
                        actual,
                        children: vec![],
                    });
                }
                Node::Not(inner) => go(inner, event, out),
                Node::All(items) | Node::Any(items) => {
                    for i in items.iter().filter(|i| i.matches(event) == verdict) {
                        go(i, event, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        if event.is_object() {
            go(&self.root, event, &mut out);
        }
        out
    }
}
