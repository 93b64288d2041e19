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

use crate::diag::code;
use crate::js::{self, truthy, type_name};
use crate::path::{FieldPath, RefPath};
use crate::suggest;
use crate::template::Template;
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

const MAX_PATTERN: usize = 10;

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

fn eval_err<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError {
        message: message.into(),
    })
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
            let mut c = Compiler {
                problems,
                stack: vec![k.clone()],
            };
            if let Some(e) = c.shorthand(v) {
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

struct Compiler<'p> {
    problems: &'p mut Vec<Problem>,
    stack: Vec<String>,
}

fn pointer_of(stack: &[String]) -> String {
    let mut s = String::new();
    for seg in stack {
        s.push('/');
        s.push_str(&seg.replace('~', "~0").replace('/', "~1"));
    }
    s
}

fn is_directive_like(m: &Map<String, Value>) -> bool {
    m.keys().any(|k| k.starts_with('@'))
}

impl Compiler<'_> {
    fn problem(&mut self, code: &'static str, message: impl Into<String>, hint: Option<String>) {
        self.problems.push(Problem {
            pointer: pointer_of(&self.stack),
            code,
            message: message.into(),
            hint,
            warning: false,
        });
    }
    fn warn(&mut self, code: &'static str, message: impl Into<String>, hint: Option<String>) {
        self.problems.push(Problem {
            pointer: pointer_of(&self.stack),
            code,
            message: message.into(),
            hint,
            warning: true,
        });
    }
    fn nested<T>(&mut self, seg: impl Into<String>, f: impl FnOnce(&mut Self) -> T) -> T {
        self.stack.push(seg.into());
        let r = f(self);
        self.stack.pop();
        r
    }

    fn shorthand(&mut self, v: &Value) -> Option<Expr> {
        match v {
            Value::String(s) if s.starts_with('$') => match FieldPath::compile(s) {
                Ok(p) => Some(Expr::FieldPath(p)),
                Err(e) => {
                    self.problem(code::BAD_PATH, e.message, Some(e.hint));
                    None
                }
            },
            Value::String(s) if s.contains("{{") => {
                if let Some(at) = Template::stray_open(s) {
                    let lit = serde_json::json!({"@literal": s});
                    self.problem(
                        code::BAD_TEMPLATE,
                        format!(
                            "has a `{{{{` at character {} that opens no placeholder",
                            s[..at].chars().count() + 1
                        ),
                        Some(format!(
                            "close it (`{{{{traits.name}}}}`), or write literal text as {lit}"
                        )),
                    );
                    return None;
                }
                Some(Expr::Template(Template::compile(s)))
            }
            Value::Object(m) if is_directive_like(m) => self.directive(m),
            Value::Object(m) => {
                self.typo_check(m);
                let mut fields = Vec::new();
                for (k, v) in m {
                    if let Some(e) = self.nested(k.clone(), |c| c.shorthand(v)) {
                        fields.push((k.clone(), e));
                    }
                }
                Some(fold_object(fields))
            }
            Value::Array(items) => {
                let items: Vec<Expr> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.nested(i.to_string(), |c| c.shorthand(v)))
                    .collect();
                Some(fold_array(items))
            }
            other => Some(Expr::Const(other.clone())),
        }
    }

    /// A one-key object whose key is a directive name without its `@` is almost surely a typo.
    fn typo_check(&mut self, m: &Map<String, Value>) {
        if m.len() == 1 {
            let k = m.keys().next().map(String::as_str).unwrap_or_default();
            let with_at = format!("@{k}");
            if DIRECTIVES.contains(&with_at.as_str()) {
                self.warn(
                    code::DIRECTIVE_TYPO,
                    format!("`{k}` is read as a plain key, not as the directive `{with_at}`"),
                    Some(format!("did you mean `{with_at}`?")),
                );
            }
        }
    }

    /// `resolve` of the reference: plain strings are literals.
    fn reference(&mut self, v: &Value) -> Option<Expr> {
        match v {
            Value::Object(m) if is_directive_like(m) => self.directive(m),
            Value::Object(m) => {
                let mut fields = Vec::new();
                for (k, v) in m {
                    if let Some(e) = self.nested(k.clone(), |c| c.reference(v)) {
                        fields.push((k.clone(), e));
                    }
                }
                Some(fold_object(fields))
            }
            Value::Array(items) => {
                let items: Vec<Expr> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.nested(i.to_string(), |c| c.reference(v)))
                    .collect();
                Some(fold_array(items))
            }
            Value::String(s) if s.starts_with("$.") => {
                self.warn(
                    code::PATH_IN_DIRECTIVE,
                    format!("inside a directive, \"{s}\" is literal text, not a path"),
                    Some(format!("write {{\"@path\": \"{s}\"}} to read the event")),
                );
                Some(Expr::Const(v.clone()))
            }
            other => Some(Expr::Const(other.clone())),
        }
    }

    fn directive(&mut self, m: &Map<String, Value>) -> Option<Expr> {
        let at_keys: Vec<&String> = m.keys().filter(|k| k.starts_with('@')).collect();
        let others = m
            .keys()
            .filter(|k| !k.starts_with('@') && *k != "_metadata")
            .count();
        if at_keys.len() > 1 || others > 0 {
            self.problem(
                code::DIRECTIVE_KEYS,
                format!(
                    "should only have one @-prefixed key but it has {} keys",
                    if at_keys.len() > 1 { at_keys.len() } else { m.len() }
                ),
                Some("a directive is an object with exactly one `@` key; put other keys in the directive's options".into()),
            );
            return None;
        }
        let name = at_keys[0].as_str();
        let arg = &m[name];
        self.nested(name, |c| c.directive_body(name, arg))
    }

    fn string_or_directive(
        &mut self,
        v: Option<&Value>,
        what: &str,
    ) -> Option<Result<String, Expr>> {
        match v {
            Some(Value::String(s)) => Some(Ok(s.clone())),
            Some(Value::Object(m)) if is_directive_like(m) => self.directive(m).map(Err),
            other => {
                self.problem(
                    code::DIRECTIVE_ARGS,
                    format!(
                        "{what} should be a string or a mapping directive but it is {}",
                        article(other)
                    ),
                    None,
                );
                None
            }
        }
    }

    fn opt_in<'v>(
        &mut self,
        arg: &'v Value,
        directive: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(o) = arg else {
            self.problem(
                code::DIRECTIVE_ARGS,
                format!(
                    "{directive} should be an object but it is {}",
                    article(Some(arg))
                ),
                None,
            );
            return None;
        };
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) && k != "_metadata" {
                let hint = suggest::hint(k, allowed);
                // The reference ignores unknown options; a typo there silently changes the result.
                self.nested(k.clone(), |c| {
                    c.warn(
                        code::UNKNOWN_KEY,
                        format!("{directive} has no option `{k}`; it is ignored"),
                        hint,
                    )
                });
            }
        }
        Some(o)
    }

    fn req_string(&mut self, o: &Map<String, Value>, key: &str, directive: &str) -> Option<String> {
        match o.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            other => {
                self.nested(key, |c| {
                    c.problem(
                        code::DIRECTIVE_ARGS,
                        match other {
                            None => format!("{directive} requires a \"{key}\" key"),
                            Some(v) => format!("should be a string but it is {}", article(Some(v))),
                        },
                        None,
                    )
                });
                None
            }
        }
    }

    fn directive_body(&mut self, name: &str, arg: &Value) -> Option<Expr> {
        match name {
            "@path" => match self.string_or_directive(Some(arg), "@path")? {
                Ok(s) => Some(Expr::Path(RefPath::for_directive(&s))),
                Err(e) => Some(Expr::DynPath(Box::new(e))),
            },
            "@template" => match self.string_or_directive(Some(arg), "@template")? {
                Ok(s) => Some(Expr::Template(Template::compile(&s))),
                Err(e) => Some(Expr::DynTemplate(Box::new(e))),
            },
            "@literal" => self.reference(arg),
            "@excludeWhenNull" => Some(Expr::ExcludeWhenNull(Box::new(self.reference(arg)?))),
            "@if" => {
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
                    Some(e) if truthy(Some(e)) => {
                        Some(Box::new(self.nested("else", |c| c.reference(e))?))
                    }
                    _ => None,
                };
                Some(Expr::If {
                    exists_mode,
                    cond: Box::new(cond),
                    then,
                    otherwise,
                })
            }
            "@case" => {
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
                    Some(v) if truthy(Some(v)) => {
                        if !matches!(v, Value::String(_))
                            && !matches!(v, Value::Object(m) if is_directive_like(m))
                        {
                            self.nested("value", |c| {
                                c.problem(
                                    code::DIRECTIVE_ARGS,
                                    format!(
                                        "should be a string or a mapping directive but it is {}",
                                        article(Some(v))
                                    ),
                                    None,
                                )
                            });
                            return None;
                        }
                        Some(Box::new(self.nested("value", |c| c.reference(v))?))
                    }
                    _ => None,
                };
                Some(Expr::Case { op, value })
            }
            "@replace" => {
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
                            Some(r2) => Some(
                                self.nested("pattern2", |c| c.replace_pair(p2, &r2, ignorecase))?,
                            ),
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
                    Some(v) => {
                        if !matches!(v, Value::String(_))
                            && !matches!(v, Value::Object(m) if is_directive_like(m))
                        {
                            self.nested("value", |c| {
                                c.problem(
                                    code::DIRECTIVE_ARGS,
                                    format!(
                                        "should be a string or a mapping directive but it is {}",
                                        article(Some(v))
                                    ),
                                    None,
                                )
                            });
                            return None;
                        }
                        Some(Box::new(self.nested("value", |c| c.reference(v))?))
                    }
                };
                Some(Expr::Replace {
                    value,
                    first,
                    second,
                    global,
                })
            }
            "@arrayPath" => {
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
            "@json" => {
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
            "@flatten" => {
                let o = self.opt_in(arg, "@flatten", &["separator", "value", "omitArrays"])?;
                let sep = match o.get("separator") {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Expr::Const(Value::String(s.clone()))
                    }
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
            "@merge" => {
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
                    objects.push(
                        self.nested("objects", |c| c.nested(i.to_string(), |c| c.reference(ob)))?,
                    );
                }
                Some(Expr::Merge {
                    objects,
                    direction: Box::new(direction),
                })
            }
            "@transform" => {
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
            other => {
                let hint = suggest::hint(other, DIRECTIVES)
                    .or_else(|| Some(format!("known directives: {}", DIRECTIVES.join(", "))));
                self.stack.pop();
                self.problem(
                    code::UNKNOWN_DIRECTIVE,
                    format!("has an invalid directive: {other}"),
                    hint,
                );
                self.stack.push(other.to_string());
                None
            }
        }
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

fn article(v: Option<&Value>) -> String {
    let t = type_name(v);
    let a = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{a} {t}")
}

fn fold_object(fields: Vec<(String, Expr)>) -> Expr {
    if fields.iter().all(|(_, e)| matches!(e, Expr::Const(_))) {
        let mut m = Map::new();
        for (k, e) in fields {
            if let Expr::Const(v) = e {
                m.insert(k, v);
            }
        }
        Expr::Const(Value::Object(m))
    } else {
        Expr::Object(fields)
    }
}

fn fold_array(items: Vec<Expr>) -> Expr {
    if items.iter().all(|e| matches!(e, Expr::Const(_))) {
        Expr::Const(Value::Array(
            items
                .into_iter()
                .filter_map(|e| {
                    if let Expr::Const(v) = e {
                        Some(v)
                    } else {
                        None
                    }
                })
                .collect(),
        ))
    } else {
        Expr::Array(items)
    }
}

fn owned(v: Option<Cow<'_, Value>>) -> Option<Value> {
    v.map(Cow::into_owned)
}

/// Evaluates one expression, borrowing from the event or the mapping where it can (paths and
/// literals, the common case, allocate nothing).
pub fn eval_cow<'a>(e: &'a Expr, data: &'a Value) -> Result<Option<Cow<'a, Value>>, EvalError> {
    Ok(match e {
        Expr::Const(v) => Some(Cow::Borrowed(v)),
        Expr::Path(p) => p.get(data),
        Expr::FieldPath(p) => p.get(data),
        other => eval(other, data)?.map(Cow::Owned),
    })
}

/// Evaluates one expression against `data` (the event, or an item inside `@arrayPath`).
pub fn eval(e: &Expr, data: &Value) -> Result<Option<Value>, EvalError> {
    Ok(match e {
        Expr::Const(v) => Some(v.clone()),
        Expr::Path(p) => owned(p.get(data)),
        Expr::FieldPath(p) => owned(p.get(data)),
        Expr::DynPath(inner) => match eval(inner, data)? {
            Some(Value::String(s)) => owned(RefPath::for_directive(&s).get(data)),
            other => {
                return eval_err(format!(
                    "@path: expected string, got {}",
                    type_name(other.as_ref())
                ));
            }
        },
        Expr::Template(t) => Some(Value::String(t.render(data))),
        Expr::DynTemplate(inner) => match eval(inner, data)? {
            Some(Value::String(s)) => Some(Value::String(Template::compile(&s).render(data))),
            other => {
                return eval_err(format!(
                    "@template: expected string, got {}",
                    type_name(other.as_ref())
                ));
            }
        },
        Expr::Object(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, e) in fields {
                if let Some(v) = eval(e, data)? {
                    m.insert(k.clone(), v);
                }
            }
            Some(Value::Object(m))
        }
        Expr::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for e in items {
                out.push(eval(e, data)?.unwrap_or(Value::Null));
            }
            Some(Value::Array(out))
        }
        Expr::If {
            exists_mode,
            cond,
            then,
            otherwise,
        } => {
            let v = eval(cond, data)?;
            let holds = match &v {
                None | Some(Value::Null) => false,
                Some(v) => *exists_mode || js::loose_ne_empty(v),
            };
            match (holds, then, otherwise) {
                (true, Some(t), _) => eval(t, data)?,
                (false, _, Some(o)) => eval(o, data)?,
                _ => None,
            }
        }
        Expr::Case { op, value } => match value {
            None => None,
            Some(v) => match eval(v, data)? {
                Some(Value::String(s)) => Some(Value::String(if op == "lower" {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                })),
                other => other,
            },
        },
        Expr::Replace {
            value,
            first,
            second,
            global,
        } => match value {
            None => None,
            Some(v) => {
                let text = match eval(v, data)? {
                    Some(Value::String(s)) => Some(s),
                    Some(v @ (Value::Bool(_) | Value::Number(_))) => Some(js::to_js_string(&v)),
                    _ => None,
                };
                Some(Value::String(match text {
                    None => String::new(),
                    Some(t) => {
                        let once = js_replace(&t, first, *global);
                        match second {
                            Some(s) => js_replace(&once, s, *global),
                            None => once,
                        }
                    }
                }))
            }
        },
        Expr::ArrayPath { root, shape } => {
            let root_v = match root.as_ref() {
                ArrayRoot::Path(p) => owned(p.get(data)),
                ArrayRoot::Expr(e) => eval(e, data)?,
            };
            match (&root_v, shape) {
                (Some(Value::Array(items)), Some(shape)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        out.push(eval(shape, item)?.unwrap_or(Value::Null));
                    }
                    Some(Value::Array(out))
                }
                (Some(obj @ Value::Object(_)), Some(shape)) => {
                    Some(Value::Array(vec![eval(shape, obj)?.unwrap_or(Value::Null)]))
                }
                _ => root_v,
            }
        }
        Expr::Json { mode, value } => {
            let v = eval(value, data)?;
            match mode {
                JsonMode::Encode => v.map(|v| Value::String(js_json(&v))),
                JsonMode::Decode => match v {
                    Some(Value::String(s)) => {
                        Some(serde_json::from_str(&s).unwrap_or(Value::String(s)))
                    }
                    other => other,
                },
                JsonMode::Other => None,
            }
        }
        Expr::Flatten {
            separator,
            value,
            omit_arrays,
        } => {
            let sep = match eval(separator, data)? {
                Some(Value::String(s)) => s,
                _ => return eval_err("@flatten requires a string separator"),
            };
            let v = eval(value, data)?;
            let mut out = Map::new();
            if let Some(v) = v {
                flatten_into(&mut out, &v, String::new(), &sep, *omit_arrays);
            }
            Some(Value::Object(out))
        }
        Expr::Merge { objects, direction } => {
            let dir = eval(direction, data)?;
            let mut resolved = Vec::with_capacity(objects.len());
            for o in objects {
                resolved.push(eval(o, data)?);
            }
            if matches!(&dir, Some(Value::String(s)) if s == "left") {
                resolved.reverse();
            }
            let mut out = Map::new();
            for r in resolved.into_iter().flatten() {
                assign(&mut out, r);
            }
            Some(Value::Object(out))
        }
        Expr::Transform { apply, mapping } => {
            if !data.is_object() {
                return eval_err(format!(
                    "data must be an object, got {}",
                    type_name(Some(data))
                ));
            }
            let new_payload = eval(apply, data)?.unwrap_or(Value::Object(Map::new()));
            eval(mapping, &new_payload)?
        }
        Expr::ExcludeWhenNull(inner) => match eval(inner, data)? {
            None | Some(Value::Null) => None,
            Some(v) => Some(clean_nulls(v)),
        },
    })
}

/// `String.prototype.replace` with a literal pattern, including the `$$`, `$&`, `` $` `` and
/// `$'` replacement patterns JavaScript interprets.
fn js_replace(text: &str, (re, replacement): &(Regex, String), global: bool) -> String {
    let limit = if global { 0 } else { 1 };
    re.replacen(text, limit, |caps: &regex::Captures<'_>| {
        let m = caps.get(0).map_or((0, 0), |m| (m.start(), m.end()));
        let mut out = String::new();
        let mut chars = replacement.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' {
                match chars.peek() {
                    Some('$') => {
                        out.push('$');
                        chars.next();
                    }
                    Some('&') => {
                        out.push_str(&text[m.0..m.1]);
                        chars.next();
                    }
                    Some('`') => {
                        out.push_str(&text[..m.0]);
                        chars.next();
                    }
                    Some('\'') => {
                        out.push_str(&text[m.1..]);
                        chars.next();
                    }
                    _ => out.push('$'),
                }
            } else {
                out.push(c);
            }
        }
        out
    })
    .into_owned()
}

/// `JSON.stringify` (compact; integral floats without a fraction, as JavaScript prints them).
fn js_json(v: &Value) -> String {
    fn normalise(v: &Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(0.0);
                if f == f.trunc() && f.abs() < 9e15 {
                    Value::from(f as i64)
                } else {
                    v.clone()
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string(&normalise(v)).unwrap_or_default()
}

fn flatten_into(
    out: &mut Map<String, Value>,
    v: &Value,
    prefix: String,
    sep: &str,
    omit_arrays: bool,
) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}{sep}{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten_into(out, v, key(k), sep, omit_arrays);
            }
        }
        Value::Array(items) if !omit_arrays => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(out, v, key(&i.to_string()), sep, omit_arrays);
            }
        }
        other => {
            out.insert(prefix, other.clone());
        }
    }
}

/// `Object.assign(out, v)` for one source.
fn assign(out: &mut Map<String, Value>, v: Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k, v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                out.insert(i.to_string(), v);
            }
        }
        Value::String(s) => {
            for (i, c) in s.encode_utf16().enumerate() {
                out.insert(i.to_string(), Value::String(String::from_utf16_lossy(&[c])));
            }
        }
        _ => {}
    }
}

fn clean_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, clean_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
