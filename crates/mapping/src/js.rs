//! The few JavaScript semantics the reference product leans on (truthiness, `String(x)`,
//! `a && a[k]` property walks), written once so that triggers and mappings agree with it exactly.

use serde_json::Value;
use std::borrow::Cow;

/// JavaScript truthiness of a JSON value (`undefined` is `None`).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// `realTypeOf` as the reference's error messages spell it.
pub fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// `String(v)` in JavaScript.
pub fn to_js_string(v: &Value) -> String {
    let mut out = String::new();
    push_js_string(&mut out, v);
    out
}

pub fn push_js_string(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_js_number(out, n),
        Value::String(s) => out.push_str(s),
        Value::Object(_) => out.push_str("[object Object]"),
        Value::Array(items) => {
            // Array.prototype.toString: items joined by ",", null/undefined as "".
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    push_js_string(out, item);
                }
            }
        }
    }
}

fn push_js_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&js_float(f));
    }
}

/// JavaScript's shortest round-trip text for a double (integers without ".0").
pub fn js_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == f.trunc() && f.abs() < 1e21 {
        return format!("{}", f as i128);
    }
    let s = format!("{f}");
    s
}

/// JavaScript `Number(s)` for the strings a trigger can hold.
pub fn js_number_of_str(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).map_or(f64::NAN, |v| v as f64);
    }
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// One step of `obj && obj[key]`: the reference walks paths this way, so a falsy value part-way
/// (`""`, `0`, `false`, `null`) is itself the result, and strings and arrays answer `length`
/// and numeric indexes.
pub fn step<'a>(cur: Cow<'a, Value>, key: &str) -> Option<Cow<'a, Value>> {
    if !truthy(Some(&cur)) {
        return Some(cur);
    }
    match cur {
        Cow::Borrowed(v) => step_borrowed(v, key),
        Cow::Owned(v) => step_borrowed(&v, key).map(|c| Cow::Owned(c.into_owned())),
    }
}

fn step_borrowed<'a>(v: &'a Value, key: &str) -> Option<Cow<'a, Value>> {
    match v {
        Value::Object(m) => object_get(m, key).map(Cow::Borrowed),
        Value::Array(items) => {
            if key == "length" {
                return Some(Cow::Owned(Value::from(items.len())));
            }
            index(key).and_then(|i| items.get(i)).map(Cow::Borrowed)
        }
        Value::String(s) => {
            let units: Vec<u16> = s.encode_utf16().collect();
            if key == "length" {
                return Some(Cow::Owned(Value::from(units.len())));
            }
            index(key)
                .and_then(|i| units.get(i))
                .map(|u| Cow::Owned(Value::String(String::from_utf16_lossy(&[*u]))))
        }
        _ => None,
    }
}

/// A key lookup. Event objects are small; comparing a handful of keys (length first) beats
/// hashing the key with SipHash, which is what `Map::get` does.
#[inline]
pub fn object_get<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= 16 {
        m.iter()
            .find(|(k, _)| k.len() == key.len() && k.as_str() == key)
            .map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

fn index(key: &str) -> Option<usize> {
    if key.is_empty()
        || (key.len() > 1 && key.starts_with('0'))
        || !key.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    key.parse().ok()
}

/// Walks `keys` from `root` with [`step`]. Allocation-free unless a string or `length` is indexed.
pub fn walk<'a, K: AsRef<str>>(root: &'a Value, keys: &[K]) -> Option<Cow<'a, Value>> {
    // Through objects (the common case) by reference; anything else takes the general path.
    let mut cur = root;
    for (i, k) in keys.iter().enumerate() {
        match cur {
            Value::Object(m) => cur = object_get(m, k.as_ref())?,
            _ => return walk_general(Cow::Borrowed(cur), &keys[i..]),
        }
    }
    Some(Cow::Borrowed(cur))
}

fn walk_general<'a, K: AsRef<str>>(mut cur: Cow<'a, Value>, keys: &[K]) -> Option<Cow<'a, Value>> {
    for k in keys {
        cur = step(cur, k.as_ref())?;
    }
    Some(cur)
}

/// JavaScript `v != ''` for a defined, non-null value (loose equality against the empty string).
pub fn loose_ne_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_none_or(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) => !to_js_string(v).is_empty(),
        Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn js_strings() {
        assert_eq!(to_js_string(&json!(5551234)), "5551234");
        assert_eq!(to_js_string(&json!(4.5)), "4.5");
        assert_eq!(to_js_string(&json!(2.0)), "2");
        assert_eq!(to_js_string(&json!({"a": 1})), "[object Object]");
        assert_eq!(to_js_string(&json!(["a", null, 1])), "a,,1");
    }

    #[test]
    fn walks_like_the_reference() {
        let v = json!({"a": {"b": [10, 20]}, "e": "", "n": null, "s": "abc"});
        assert_eq!(walk(&v, &["a", "b", "1"]).as_deref(), Some(&json!(20)));
        assert_eq!(walk(&v, &["a", "x", "y"]), None);
        assert_eq!(walk(&v, &["e", "x"]).as_deref(), Some(&json!("")));
        assert_eq!(walk(&v, &["n", "x"]).as_deref(), Some(&json!(null)));
        assert_eq!(walk(&v, &["s", "length"]).as_deref(), Some(&json!(3)));
        assert_eq!(walk(&v, &["s", "0"]).as_deref(), Some(&json!("a")));
    }

    #[test]
    fn numbers_from_text() {
        assert_eq!(js_number_of_str("50"), 50.0);
        assert_eq!(js_number_of_str(" 1.5 "), 1.5);
        assert!(js_number_of_str("abc").is_nan());
        assert_eq!(js_number_of_str(""), 0.0);
    }
}
