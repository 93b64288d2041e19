//! `@json`: encoding a value as JSON text, or decoding JSON text.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::Compiler;
use crate::diag::code;
use crate::js::truthy;
use crate::value::{Expr, JsonMode};
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn json(&mut self, arg: &Value) -> Option<Expr> {
        let o = self.opt_in(arg, "@json", &["mode", "value"])?;
        let mode = self.req_string(o, "mode", "@json")?;
        let mode = match mode.to_lowercase().as_str() {
            "encode" | "decode" if mode == "encode" => JsonMode::Encode,
            "encode" | "decode" if mode == "decode" => JsonMode::Decode,
            "encode" | "decode" => JsonMode::Other,
            _ => {
                self.nested("mode", |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        format!("should be one of encode, decode but it is {mode:?}"),
                        None,
                    )
                });
                return None;
            }
        };
        let Some(v) = o.get("value").filter(|v| truthy(Some(v))) else {
            self.problem(code::DIRECTIVE_ARGS, "@json requires a \"value\" key", None);
            return None;
        };
        let value = self.nested("value", |c| c.reference(v))?;
        Some(Expr::Json {
            mode,
            value: Box::new(value),
        })
    }
}
