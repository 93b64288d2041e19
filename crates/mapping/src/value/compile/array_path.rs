//! `@arrayPath`: a root array (or object) and an item shape each element is mapped through.
//! The compile half: argument checks and the `Expr` it becomes (evaluation is in `value::eval`).

use super::Compiler;
use crate::diag::code;
use crate::js::type_name;
use crate::path::RefPath;
use crate::value::{ArrayRoot, Expr};
use serde_json::Value;

impl Compiler<'_> {
    pub(super) fn array_path(&mut self, arg: &Value) -> Option<Expr> {
        let Value::Array(items) = arg else {
            self.problem(
                code::DIRECTIVE_ARGS,
                format!("@arrayPath expected array, got {}", type_name(Some(arg))),
                Some("write [\"$.path.to.array\", {item shape}]".into()),
            );
            return None;
        };
        let root = match self.nested("0", |c| {
            c.string_or_directive(items.first(), "the first item")
        })? {
            Ok(s) => ArrayRoot::Path(RefPath::for_directive(&s)),
            Err(e) => ArrayRoot::Expr(e),
        };
        let shape = match items.get(1) {
            Some(Value::Object(m)) if !m.is_empty() => {
                Some(Box::new(self.nested("1", |c| c.reference(&items[1]))?))
            }
            Some(other) => {
                // Not used by the reference unless it is a non-empty object, but still validated.
                self.nested("1", |c| c.reference(other))?;
                None
            }
            None => None,
        };
        Some(Expr::ArrayPath {
            root: Box::new(root),
            shape,
        })
    }
}
