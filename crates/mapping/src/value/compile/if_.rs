//! `@if`: a condition (`exists` or `blank`) choosing between `then` and `else`.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::Compiler;
use crate::diag::code;
use crate::js::truthy;
use crate::value::Expr;
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn if_(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@if", &["exists", "blank", "then", "else"])?;
        if !truthy(o.get("exists")) && !truthy(o.get("blank")) {
            self.problem(
                code::DIRECTIVE_ARGS,
                "@if requires an \"exists\" key or a \"blank\" key",
                None,
            );
            return None;
        }
        let exists_mode = o.contains_key("exists");
        let key = if exists_mode { "exists" } else { "blank" };
        let cond = self.nested(key, |c| c.reference(&o[key]))?;
        let then = match o.get("then") {
            Some(t) => Some(Box::new(self.nested("then", |c| c.reference(t))?)),
            None => None,
        };
        let otherwise = match o.get("else") {
            Some(e) if truthy(Some(e)) => Some(Box::new(self.nested("else", |c| c.reference(e))?)),
            _ => None,
        };
        Some(Expr::If {
            exists_mode,
            cond: Box::new(cond),
            then,
            otherwise,
        })
    }
}
