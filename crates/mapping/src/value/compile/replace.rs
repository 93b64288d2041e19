//! `@replace`: one or two literal pattern replacements, JavaScript `String.replace` style.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::{Compiler, article};
use crate::diag::code;
use crate::js::truthy;
use crate::value::Expr;
use regex::Regex;
use serde_json::Value;

/// The longest pattern or replacement the reference accepts.
const MAX_PATTERN: usize = 10;

impl Compiler<'_> {
    pub(super) fn replace(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(
            arg,
            "@replace",
            &[
                "pattern",
                "replacement",
                "pattern2",
                "replacement2",
                "value",
                "ignorecase",
                "global",
            ],
        )?;
        let pattern = self.req_string(o, "pattern", "@replace")?;
        let replacement = match o.get("replacement") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                self.nested("replacement", |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("should be a string but it is {}", article(Some(v))),
                        None,
                    )
                });
                return None;
            }
        };
        let flag = |c: &mut Self, key: &str, default: bool| match o.get(key) {
            None | Some(Value::Null) => Some(default),
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                c.nested(key, |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("should be a boolean but it is {}", article(Some(v))),
                        None,
                    )
                });
                None
            }
        };
        let ignorecase = flag(self, "ignorecase", false)?;
        let global = flag(self, "global", true)?;
        let first = self.nested("pattern", |c| {
            c.replace_pair(&pattern, &replacement, ignorecase)
        })?;
        let second = match (o.get("pattern2"), o.get("replacement2")) {
            (Some(Value::String(p2)), r2) if !p2.is_empty() => {
                let r2 = match r2 {
                    None | Some(Value::Null) => Some(String::new()),
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                };
                match r2 {
                    Some(r2) => {
                        Some(self.nested("pattern2", |c| c.replace_pair(p2, &r2, ignorecase))?)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let value = match o.get("value") {
            None => {
                self.problem(
                    code::DIRECTIVE_ARGS,
                    "@replace requires a \"value\" key",
                    None,
                );
                return None;
            }
            Some(v) if !truthy(Some(v)) => None,
            Some(v) => Some(self.text_value(v)?),
        };
        Some(Expr::Replace {
            value,
            first,
            second,
            global,
        })
    }

    fn replace_pair(
        &mut self,
        pattern: &str,
        replacement: &str,
        ignorecase: bool,
    ) -> Option<(Regex, String)> {
        if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN {
            self.problem(
                code::DIRECTIVE_ARGS,
                format!(
                    "@replace patterns are 1 to {MAX_PATTERN} characters, this one has {}",
                    pattern.chars().count()
                ),
                None,
            );
            return None;
        }
        if replacement.chars().count() > MAX_PATTERN {
            self.problem(
                code::DIRECTIVE_ARGS,
                format!("@replace replacements are at most {MAX_PATTERN} characters"),
                None,
            );
            return None;
        }
        let re = regex::RegexBuilder::new(&regex::escape(pattern))
            .case_insensitive(ignorecase)
            .build()
            .ok()?;
        Some((re, replacement.to_string()))
    }
}
