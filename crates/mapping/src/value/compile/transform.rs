//! `@transform`: a mapping applied to the result of another.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::{Compiler, article};
use crate::diag::code;
use crate::value::Expr;
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn transform(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@transform", &["apply", "mapping"])?;
        let part = |c: &mut Self, key: &str| -> Option<Expr> {
            match o.get(key) {
                Some(v @ Value::Object(_)) => c.nested(key, |c| c.reference(v)),
                Some(v) => {
                    c.nested(key, |c| {
                        c.problem(
                            code::DIRECTIVE_ARGS,
                            format!(
                                "should be a object or a mapping directive but it is {}",
                                article(Some(v))
                            ),
                            None,
                        )
                    });
                    None
                }
                None => {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("@transform requires a \"{key}\" key"),
                        None,
                    );
                    None
                }
            }
        };
        let apply = part(self, "apply");
        let mapping = part(self, "mapping");
        Some(Expr::Transform {
            apply: Box::new(apply?),
            mapping: Box::new(mapping?),
        })
    }
}
