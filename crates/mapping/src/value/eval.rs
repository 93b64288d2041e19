//! Evaluation of compiled `Expr` trees against one event: a dispatch over the expression and one
//! function per directive, with the JavaScript behaviours (`String.replace`, `JSON.stringify`,
//! `Object.assign`) the reference's directives inherit.

use super::{ArrayRoot, EvalError, Expr, JsonMode};
use crate::js::{self, type_name};
use crate::path::RefPath;
use crate::template::Template;
use regex::Regex;
use serde_json::{Map, Value};
use std::borrow::Cow;

type Evaluated = Result<Option<Value>, EvalError>;

fn eval_err<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError {
        message: message.into(),
    })
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
pub fn eval(e: &Expr, data: &Value) -> Evaluated {
    match e {
        Expr::Const(v) => Ok(Some(v.clone())),
        Expr::Path(p) => Ok(owned(p.get(data))),
        Expr::FieldPath(p) => Ok(owned(p.get(data))),
        Expr::DynPath(inner) => dyn_path(inner, data),
        Expr::Template(t) => Ok(Some(Value::String(t.render(data)))),
        Expr::DynTemplate(inner) => dyn_template(inner, data),
        Expr::Object(fields) => object(fields, data),
        Expr::Array(items) => array(items, data),
        Expr::If {
            exists_mode,
            cond,
            then,
            otherwise,
        } => if_(
            *exists_mode,
            cond,
            then.as_deref(),
            otherwise.as_deref(),
            data,
        ),
        Expr::Case { op, value } => case(op, value.as_deref(), data),
        Expr::Replace {
            value,
            first,
            second,
            global,
        } => replace(value.as_deref(), first, second.as_ref(), *global, data),
        Expr::ArrayPath { root, shape } => array_path(root, shape.as_deref(), data),
        Expr::Json { mode, value } => json(*mode, value, data),
        Expr::Flatten {
            separator,
            value,
            omit_arrays,
        } => flatten(separator, value, *omit_arrays, data),
        Expr::Merge { objects, direction } => merge(objects, direction, data),
        Expr::Transform { apply, mapping } => transform(apply, mapping, data),
        Expr::ExcludeWhenNull(inner) => Ok(match eval(inner, data)? {
            None | Some(Value::Null) => None,
            Some(v) => Some(clean_nulls(v)),
        }),
    }
}

fn dyn_path(inner: &Expr, data: &Value) -> Evaluated {
    match eval(inner, data)? {
        Some(Value::String(s)) => Ok(owned(RefPath::for_directive(&s).get(data))),
        other => eval_err(format!(
            "@path: expected string, got {}",
            type_name(other.as_ref())
        )),
    }
}

fn dyn_template(inner: &Expr, data: &Value) -> Evaluated {
    match eval(inner, data)? {
        Some(Value::String(s)) => Ok(Some(Value::String(Template::compile(&s).render(data)))),
        other => eval_err(format!(
            "@template: expected string, got {}",
            type_name(other.as_ref())
        )),
    }
}

fn object(fields: &[(String, Expr)], data: &Value) -> Evaluated {
    let mut m = Map::with_capacity(fields.len());
    for (k, e) in fields {
        if let Some(v) = eval(e, data)? {
            m.insert(k.clone(), v);
        }
    }
    Ok(Some(Value::Object(m)))
}

fn array(items: &[Expr], data: &Value) -> Evaluated {
    let mut out = Vec::with_capacity(items.len());
    for e in items {
        out.push(eval(e, data)?.unwrap_or(Value::Null));
    }
    Ok(Some(Value::Array(out)))
}

fn if_(
    exists_mode: bool,
    cond: &Expr,
    then: Option<&Expr>,
    otherwise: Option<&Expr>,
    data: &Value,
) -> Evaluated {
    let v = eval(cond, data)?;
    let holds = match &v {
        None | Some(Value::Null) => false,
        Some(v) => exists_mode || js::loose_ne_empty(v),
    };
    match (holds, then, otherwise) {
        (true, Some(t), _) => eval(t, data),
        (false, _, Some(o)) => eval(o, data),
        _ => Ok(None),
    }
}

fn case(op: &str, value: Option<&Expr>, data: &Value) -> Evaluated {
    let Some(v) = value else { return Ok(None) };
    Ok(match eval(v, data)? {
        Some(Value::String(s)) => Some(Value::String(if op == "lower" {
            s.to_lowercase()
        } else {
            s.to_uppercase()
        })),
        other => other,
    })
}

fn replace(
    value: Option<&Expr>,
    first: &(Regex, String),
    second: Option<&(Regex, String)>,
    global: bool,
    data: &Value,
) -> Evaluated {
    let Some(v) = value else { return Ok(None) };
    let text = match eval(v, data)? {
        Some(Value::String(s)) => Some(s),
        Some(v @ (Value::Bool(_) | Value::Number(_))) => Some(js::to_js_string(&v)),
        _ => None,
    };
    Ok(Some(Value::String(match text {
        None => String::new(),
        Some(t) => {
            let once = js_replace(&t, first, global);
            match second {
                Some(s) => js_replace(&once, s, global),
                None => once,
            }
        }
    })))
}

fn array_path(root: &ArrayRoot, shape: Option<&Expr>, data: &Value) -> Evaluated {
    let root_v = match root {
        ArrayRoot::Path(p) => owned(p.get(data)),
        ArrayRoot::Expr(e) => eval(e, data)?,
    };
    Ok(match (&root_v, shape) {
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
    })
}

fn json(mode: JsonMode, value: &Expr, data: &Value) -> Evaluated {
    let v = eval(value, data)?;
    Ok(match mode {
        JsonMode::Encode => v.map(|v| Value::String(js_json(&v))),
        JsonMode::Decode => match v {
            Some(Value::String(s)) => Some(serde_json::from_str(&s).unwrap_or(Value::String(s))),
            other => other,
        },
        JsonMode::Other => None,
    })
}

fn flatten(separator: &Expr, value: &Expr, omit_arrays: bool, data: &Value) -> Evaluated {
    let sep = match eval(separator, data)? {
        Some(Value::String(s)) => s,
        _ => return eval_err("@flatten requires a string separator"),
    };
    let v = eval(value, data)?;
    let mut out = Map::new();
    if let Some(v) = v {
        flatten_into(&mut out, &v, String::new(), &sep, omit_arrays);
    }
    Ok(Some(Value::Object(out)))
}

fn merge(objects: &[Expr], direction: &Expr, data: &Value) -> Evaluated {
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
    Ok(Some(Value::Object(out)))
}

fn transform(apply: &Expr, mapping: &Expr, data: &Value) -> Evaluated {
    if !data.is_object() {
        return eval_err(format!(
            "data must be an object, got {}",
            type_name(Some(data))
        ));
    }
    let new_payload = eval(apply, data)?.unwrap_or(Value::Object(Map::new()));
    eval(mapping, &new_payload)
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
