//! `@flatten`: nested objects and arrays as one level of separator-joined keys.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::{Compiler, article};
use crate::diag::code;
use crate::js::truthy;
use crate::value::Expr;
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn flatten(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@flatten", &["separator", "value", "omitArrays"])?;
        let sep = match o.get("separator") {
            Some(Value::String(s)) if !s.is_empty() => Expr::Const(Value::String(s.clone())),
            Some(v) if !matches!(v, Value::String(_)) && truthy(Some(v)) => {
                self.nested("separator", |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("should be a string but it is {}", article(Some(v))),
                        None,
                    )
                });
                return None;
            }
            _ => {
                self.problem(
                    code::DIRECTIVE_ARGS,
                    "@flatten requires a \"separator\" key",
                    None,
                );
                return None;
            }
        };
        let Some(v) = o.get("value") else {
            self.problem(
                code::DIRECTIVE_ARGS,
                "@flatten requires a \"value\" key",
                None,
            );
            return None;
        };
        let value = self.nested("value", |c| c.reference(v))?;
        Some(Expr::Flatten {
            separator: Box::new(sep),
            value: Box::new(value),
            omit_arrays: truthy(o.get("omitArrays")),
        })
    }
}
