//! Field paths into an event.
//!
//! Two forms, compiled once at load time:
//! - the reference product's dotted form (`$.traits.email`, `traits.addresses[0].city`,
//!   `$.integrations.Actions Close.x`), compiled to a key list and walked directly;
//! - full JSONPath (RFC 9535) for anything else (`$..email`, `$.items[*].sku`, filters),
//!   compiled by jsonpath-rust.

use crate::js;
use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The reference product's `get(obj, path)` path, as a key list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPath {
    keys: Vec<String>,
}

impl RefPath {
    /// Compiles a path the way `@path` reads it: a first `$.` is removed, then the path splits
    /// on `.`, on `[` before a quote or digit and on `]` after one; quotes are dropped.
    pub fn for_directive(path: &str) -> RefPath {
        let stripped = path.replacen("$.", "", 1);
        RefPath::split(&stripped)
    }

    /// A template placeholder's path: like `@path` but without removing `$.`.
    pub fn for_template(path: &str) -> RefPath {
        RefPath::split(path)
    }

    fn split(path: &str) -> RefPath {
        if path.is_empty() || path == "." {
            return RefPath { keys: Vec::new() };
        }
        let chars: Vec<char> = path.chars().collect();
        let mut keys = Vec::new();
        let mut cur = String::new();
        let quote_or_digit = |c: char| c == '"' || c == '\'' || c.is_ascii_digit();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let split = match c {
                '.' => true,
                '[' => chars.get(i + 1).is_some_and(|n| quote_or_digit(*n)),
                ']' => i > 0 && quote_or_digit(chars[i - 1]),
                _ => false,
            };
            if split {
                if c == ']' {
                    while chars.get(i + 1) == Some(&']') {
                        i += 1;
                    }
                }
                if !cur.is_empty() {
                    keys.push(std::mem::take(&mut cur));
                }
            } else if c != '"' && c != '\'' {
                cur.push(c);
            }
            i += 1;
        }
        if !cur.is_empty() {
            keys.push(cur);
        }
        RefPath { keys }
    }

    pub fn get<'a>(&self, root: &'a Value) -> Option<Cow<'a, Value>> {
        js::walk(root, &self.keys)
    }
}

/// A path written as a plain `$…` string in an instance file.
pub enum FieldPath {
    Simple(RefPath),
    Json { query: Box<JpQuery>, singular: bool },
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Simple(p) => write!(f, "Simple({:?})", p.keys),
            FieldPath::Json { singular, .. } => write!(f, "JsonPath(singular: {singular})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub message: String,
    pub hint: String,
}

impl FieldPath {
    pub fn compile(src: &str) -> Result<FieldPath, PathError> {
        if let Some(keys) = simple_keys(src) {
            return Ok(FieldPath::Simple(RefPath { keys }));
        }
        match jsonpath_rust::parser::parse_json_path(src) {
            Ok(query) => {
                let singular = !(src.contains('*')
                    || src.contains("..")
                    || src.contains("[?")
                    || src.contains(':')
                    || src.contains(','));
                Ok(FieldPath::Json {
                    query: Box::new(query),
                    singular,
                })
            }
            Err(e) => Err(PathError {
                message: format!("`{src}` is not a valid path: {}", explain(src, &e)),
                hint: if src.starts_with("$.") || src == "$" {
                    "a path is `$.key.key[0]` or a JSONPath (RFC 9535) query".into()
                } else {
                    "paths start with `$.` (e.g. `$.traits.email`); a literal text starting with `$` is written {\"@literal\": \"…\"}".into()
                },
            }),
        }
    }

    pub fn get<'a>(&self, root: &'a Value) -> Option<Cow<'a, Value>> {
        match self {
            FieldPath::Simple(p) => p.get(root),
            FieldPath::Json { query, singular } => {
                let found = jsonpath_rust::query::js_path_process(query, root).ok()?;
                if *singular {
                    found.into_iter().next().map(|r| Cow::Borrowed(r.val()))
                } else if found.is_empty() {
                    // A query that matched nothing is a missing value (the key is dropped), as
                    // a missing path is; `[]` would reach Close as a value.
                    None
                } else {
                    Some(Cow::Owned(Value::Array(
                        found.into_iter().map(|r| r.val().clone()).collect(),
                    )))
                }
            }
        }
    }
}

/// One sentence for a JSONPath parse error. The parser's own text is a multi-line excerpt of
/// grammar rule names; all it tells a person is where it stopped, read off its `--> 1:COL` line.
fn explain(src: &str, e: &jsonpath_rust::parser::errors::JsonPathError) -> String {
    let text = e.to_string();
    let col = text
        .lines()
        .find_map(|l| l.split_once("--> ").map(|(_, at)| at))
        .and_then(|at| at.trim().rsplit(':').next())
        .and_then(|c| c.trim().parse::<usize>().ok());
    match col {
        Some(c) => match src.chars().nth(c.saturating_sub(1)) {
            Some(ch) => format!("unexpected `{ch}` at character {c}"),
            None => "it ends where more was expected".into(),
        },
        None => {
            let first = text.lines().next().unwrap_or_default().trim();
            if first.is_empty() {
                "it cannot be read".into()
            } else {
                first.to_string()
            }
        }
    }
}

/// Keys of a path in the simple dotted form (`$`, `.key`, `[0]`), or `None` if it needs JSONPath.
fn simple_keys(src: &str) -> Option<Vec<String>> {
    let rest = src.strip_prefix('$')?;
    let mut keys = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() || key.contains([']', '*', '\'', '"', '?']) || key.trim() != key {
                return None;
            }
            keys.push(key.to_string());
            s = &r[end..];
        } else if let Some(r) = s.strip_prefix('[') {
            let end = r.find(']')?;
            let idx = &r[..end];
            if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            keys.push(idx.to_string());
            s = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> Value {
        json!({"traits": {"email": "a@b.c", "addresses": [{"city": "London"}, {"city": "Paris"}]},
               "integrations": {"Actions Close": {"x": 1}}, "properties": {"a.b": 7}})
    }

    #[test]
    fn directive_paths_follow_the_reference() {
        let e = ev();
        let g = |p: &str| RefPath::for_directive(p).get(&e).map(Cow::into_owned);
        assert_eq!(g("$.traits.email"), Some(json!("a@b.c")));
        assert_eq!(g("traits.addresses[1].city"), Some(json!("Paris")));
        assert_eq!(g("$.integrations.Actions Close.x"), Some(json!(1)));
        assert_eq!(g("$.properties.a.b"), None);
        assert_eq!(g(""), Some(e.clone()));
    }

    #[test]
    fn simple_and_full_paths() {
        let e = ev();
        let g = |p: &str| FieldPath::compile(p).unwrap().get(&e).map(Cow::into_owned);
        assert!(matches!(
            FieldPath::compile("$.traits.email").unwrap(),
            FieldPath::Simple(_)
        ));
        assert!(matches!(
            FieldPath::compile("$..city").unwrap(),
            FieldPath::Json { .. }
        ));
        assert_eq!(g("$.traits.addresses[0].city"), Some(json!("London")));
        assert_eq!(g("$..city"), Some(json!(["London", "Paris"])));
        assert_eq!(g("$['properties']['a.b']"), Some(json!(7)));
        assert_eq!(g("$.nope"), None);
        assert_eq!(g("$..email_address"), None, "no match is missing, not []");
        assert_eq!(g("$.traits.addresses[*].zip"), None);
        let e = FieldPath::compile("$.traits.").unwrap_err();
        assert_eq!(
            e.message,
            "`$.traits.` is not a valid path: it ends where more was expected"
        );
        let e = FieldPath::compile("$.a[?@.b ==]").unwrap_err();
        assert!(
            !e.message.contains('\n') && !e.message.contains("-->"),
            "{}",
            e.message
        );
        assert!(e.message.contains("at character"), "{}", e.message);
        assert!(FieldPath::compile("$traits").is_err());
    }
}
