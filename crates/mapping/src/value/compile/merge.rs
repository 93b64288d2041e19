//! `@merge`: objects merged left or right, `Object.assign` style.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::{Compiler, article};
use crate::diag::code;
use crate::value::Expr;
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn merge(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@merge", &["objects", "direction"])?;
        let direction = match o.get("direction") {
            Some(Value::String(s))
                if s.eq_ignore_ascii_case("left") || s.eq_ignore_ascii_case("right") =>
            {
                Expr::Const(Value::String(s.clone()))
            }
            Some(v) => {
                self.nested("direction", |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("should be one of left, right but it is {v}"),
                        None,
                    )
                });
                return None;
            }
            None => {
                self.problem(
                    code::DIRECTIVE_ARGS,
                    "@merge requires a \"direction\" key",
                    None,
                );
                return None;
            }
        };
        let Some(Value::Array(objs)) = o.get("objects") else {
            self.problem(
                code::DIRECTIVE_ARGS,
                "@merge requires an \"objects\" key holding a list",
                None,
            );
            return None;
        };
        let mut objects = Vec::new();
        for (i, ob) in objs.iter().enumerate() {
            if !matches!(ob, Value::Object(_)) {
                self.nested("objects", |c| {
                    c.nested(i.to_string(), |c| {
                        c.problem(
                            code::DIRECTIVE_ARGS,
                            format!(
                                "should be a object or a mapping directive but it is {}",
                                article(Some(ob))
                            ),
                            None,
                        )
                    })
                });
                return None;
            }
            objects.push(self.nested("objects", |c| c.nested(i.to_string(), |c| c.reference(ob)))?);
        }
        Some(Expr::Merge {
            objects,
            direction: Box::new(direction),
        })
    }
}
