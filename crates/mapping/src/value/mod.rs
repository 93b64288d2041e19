//! Field values: compiled once from an instance file (or a reference-product JSON mapping),
//! evaluated many times against events.
//!
//! Two reading modes, chosen by position:
//! - **shorthand** (the top of each field, and structures outside any directive): a string
//!   starting with `$` is a path, a string with `{{…}}` a template, other scalars literals;
//! - **reference** (everything inside a directive): the reference product's mapping-kit rules
//!   exactly, where plain strings are always literals, so an exported JSON mapping means the
//!   same thing here as there.
//!
//! `None` stands for JavaScript's `undefined`: a key whose value is `None` is dropped.
//!
//! This module holds the compiled form (`Expr`) and the `Program` that ties the two stages
//! together; `compile` reads instance values into `Expr`s (one module per directive), `eval`
//! runs them against events.

mod compile;
mod eval;

pub use eval::{eval, eval_cow};

use crate::js::type_name;
use crate::path::{FieldPath, RefPath};
use crate::template::Template;
use compile::Compiler;
use regex::Regex;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

pub const DIRECTIVES: &[&str] = &[
    "@path",
    "@template",
    "@literal",
    "@if",
    "@case",
    "@replace",
    "@arrayPath",
    "@json",
    "@flatten",
    "@merge",
    "@transform",
    "@excludeWhenNull",
];

/// A problem found while compiling a value; `pointer` is a JSON pointer below the value compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub warning: bool,
}

/// An error while evaluating a compiled value against one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub message: String,
}

/// A compiled value expression.
pub enum Expr {
    Const(Value),
    Path(RefPath),
    FieldPath(FieldPath),
    DynPath(Box<Expr>),
    Template(Template),
    DynTemplate(Box<Expr>),
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
    If {
        exists_mode: bool,
        cond: Box<Expr>,
        then: Option<Box<Expr>>,
        otherwise: Option<Box<Expr>>,
    },
    Case {
        op: String,
        value: Option<Box<Expr>>,
    },
    Replace {
        value: Option<Box<Expr>>,
        first: (Regex, String),
        second: Option<(Regex, String)>,
        global: bool,
    },
    ArrayPath {
        root: Box<ArrayRoot>,
        shape: Option<Box<Expr>>,
    },
    Json {
        mode: JsonMode,
        value: Box<Expr>,
    },
    Flatten {
        separator: Box<Expr>,
        value: Box<Expr>,
        omit_arrays: bool,
    },
    Merge {
        objects: Vec<Expr>,
        direction: Box<Expr>,
    },
    Transform {
        apply: Box<Expr>,
        mapping: Box<Expr>,
    },
    ExcludeWhenNull(Box<Expr>),
}

pub enum ArrayRoot {
    Path(RefPath),
    Expr(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonMode {
    Encode,
    Decode,
    /// Accepted by the reference's validation (it lower-cases) but matched by neither branch.
    Other,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write!(f, "Const({v})"),
            Expr::Path(p) => write!(f, "Path({p:?})"),
            Expr::FieldPath(p) => write!(f, "{p:?}"),
            Expr::Object(o) => f
                .debug_map()
                .entries(o.iter().map(|(k, v)| (k, v)))
                .finish(),
            Expr::Array(a) => f.debug_list().entries(a).finish(),
            _ => write!(f, "Directive"),
        }
    }
}

/// A compiled mapping: the field name → value expressions of one mapping.
#[derive(Debug)]
pub struct Program {
    fields: Vec<(String, Expr)>,
}

impl Program {
    /// Compiles a mapping object in shorthand mode. Problems are collected, not thrown.
    pub fn compile(fields: &Map<String, Value>, problems: &mut Vec<Problem>) -> Program {
        let mut out = Vec::new();
        for (k, v) in fields {
            if let Some(e) = Compiler::new(problems, k).shorthand(v) {
                out.push((k.clone(), e));
            }
        }
        Program { fields: out }
    }

    /// Compiles, failing on the first error (for `closeflow eval` and tests).
    pub fn compile_strict(fields: &Value) -> Result<Program, String> {
        let Value::Object(m) = fields else {
            return Err(format!(
                "a mapping must be an object, got {}",
                type_name(Some(fields))
            ));
        };
        let mut problems = Vec::new();
        let p = Program::compile(m, &mut problems);
        let errors: Vec<String> = problems
            .iter()
            .filter(|p| !p.warning)
            .map(|p| format!("{} {}", p.pointer, p.message))
            .collect();
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Evaluates into a reusable buffer of (field, value) pairs that borrow from the event and
    /// the mapping: the allocation-free form, for hot loops.
    pub fn evaluate_into<'a>(
        &'a self,
        event: &'a Value,
        out: &mut Vec<(&'a str, Cow<'a, Value>)>,
    ) -> Result<(), EvalError> {
        out.clear();
        for (k, e) in &self.fields {
            match eval_cow(e, event) {
                Ok(Some(v)) => out.push((k.as_str(), v)),
                Ok(None) => {}
                Err(err) => {
                    return Err(EvalError {
                        message: format!("{k}: {}", err.message),
                    });
                }
            }
        }
        Ok(())
    }

    /// Evaluates against an event; undefined results are left out, `null` is kept.
    pub fn evaluate(&self, event: &Value) -> Result<Map<String, Value>, EvalError> {
        let mut out = Map::with_capacity(self.fields.len());
        for (k, e) in &self.fields {
            match eval(e, event) {
                Ok(Some(v)) => {
                    out.insert(k.clone(), v);
                }
                Ok(None) => {}
                Err(err) => {
                    return Err(EvalError {
                        message: format!("{k}: {}", err.message),
                    });
                }
            }
        }
        Ok(out)
    }
}
