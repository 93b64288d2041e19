//! `@case`: upper- or lower-casing a string value.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::Compiler;
use crate::diag::code;
use crate::js::truthy;
use crate::value::Expr;
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn case(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@case", &["operator", "value"])?;
        let op = self.req_string(o, "operator", "@case")?;
        if op != "lower" && op != "upper" {
            self.nested("operator", |c| {
                c.problem(
                    code::DIRECTIVE_ARGS,
                    "operator key should have a value of \"lower\" or \"upper\"",
                    None,
                )
            });
            return None;
        }
        let value = match o.get("value") {
            Some(v) if truthy(Some(v)) => Some(self.text_value(v)?),
            _ => None,
        };
        Some(Expr::Case { op, value })
    }
}
