//! Compilation of field values into `Expr` trees: the two reading modes (shorthand and
//! reference), the directive dispatch, and the argument checks every directive shares. Each
//! directive's own rules live in a child module, so reading one directive means reading one file.

mod array_path;
mod case;
mod flatten;
mod if_;
mod json;
mod merge;
mod replace;
mod transform;

use super::{DIRECTIVES, Expr, Problem};
use crate::diag::code;
use crate::js::type_name;
use crate::path::{FieldPath, RefPath};
use crate::suggest;
use crate::template::Template;
use serde_json::{Map, Value};

/// Walks one field's value, collecting problems at JSON pointers below the field.
pub(super) struct Compiler<'p> {
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

impl<'p> Compiler<'p> {
    pub(super) fn new(problems: &'p mut Vec<Problem>, field: &str) -> Self {
        Compiler {
            problems,
            stack: vec![field.to_string()],
        }
    }
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

    pub(super) fn shorthand(&mut self, v: &Value) -> Option<Expr> {
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
                Some(self.each_field(m, Self::shorthand))
            }
            Value::Array(items) => Some(self.each_item(items, Self::shorthand)),
            other => Some(Expr::Const(other.clone())),
        }
    }

    /// A plain object's fields, each read the way `read` reads (shorthand or reference mode),
    /// located by its key.
    fn each_field(
        &mut self,
        m: &Map<String, Value>,
        read: fn(&mut Self, &Value) -> Option<Expr>,
    ) -> Expr {
        let mut fields = Vec::new();
        for (k, v) in m {
            if let Some(e) = self.nested(k.clone(), |c| read(c, v)) {
                fields.push((k.clone(), e));
            }
        }
        fold_object(fields)
    }

    /// An array's items, each read the way `read` reads, located by its index.
    fn each_item(&mut self, items: &[Value], read: fn(&mut Self, &Value) -> Option<Expr>) -> Expr {
        let items: Vec<Expr> = items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.nested(i.to_string(), |c| read(c, v)))
            .collect();
        fold_array(items)
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
            Value::Object(m) => Some(self.each_field(m, Self::reference)),
            Value::Array(items) => Some(self.each_item(items, Self::reference)),
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

    /// One directive's argument, compiled by that directive's module.
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
            "@if" => self.if_(arg),
            "@case" => self.case(arg),
            "@replace" => self.replace(arg),
            "@arrayPath" => self.array_path(arg),
            "@json" => self.json(arg),
            "@flatten" => self.flatten(arg),
            "@merge" => self.merge(arg),
            "@transform" => self.transform(arg),
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

    /// The `value` of `@case` and `@replace`: a string or a directive, compiled in reference mode.
    fn text_value(&mut self, v: &Value) -> Option<Box<Expr>> {
        if !matches!(v, Value::String(_)) && !matches!(v, Value::Object(m) if is_directive_like(m))
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
