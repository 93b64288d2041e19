//! A YAML document as a tree that remembers where every node came from.
//!
//! serde-saphyr deserializes straight into types; we deserialize into this small spanned tree
//! first so that validation can look at the whole document, report every problem at once and
//! point at the exact key or value (ripgrep-style two stages: raw tree → validated config).

use crate::diag::{Diagnostic, Span, code};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Number(Number),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
    /// Key text of a mapping key (YAML allows non-string keys; we treat them by their text).
    pub fn key_text(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Number(n) => n.to_string(),
            _ => String::from("<complex key>"),
        }
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    /// The plain JSON value of this subtree.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => Value::Number(n.clone()),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.key_text(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }
    /// The span of the node at a JSON pointer below this one (`/a/0/b`), or the closest ancestor's.
    pub fn span_at(&self, pointer: &str) -> Span {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.kind {
                Kind::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.key_text() == seg)
                    .map(|(_, v)| v),
                Kind::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.span
    }
    /// The span of the key (not the value) at a JSON pointer, for "unknown key" style problems.
    pub fn key_span_at(&self, pointer: &str) -> Span {
        let (parent, last) = match pointer.rsplit_once('/') {
            Some(p) => p,
            None => return self.span,
        };
        let parent_node_span = self.span_at(parent);
        let mut node = self;
        for raw in parent.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.kind {
                Kind::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.key_text() == seg)
                    .map(|(_, v)| v),
                Kind::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return parent_node_span,
            }
        }
        let last = last.replace("~1", "/").replace("~0", "~");
        match &node.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_text() == last)
                .map_or(node.span, |(k, _)| k.span),
            _ => node.span,
        }
    }
}

/// Parses one YAML document. A syntax error comes back as a located diagnostic.
pub fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.trim().is_empty() {
        return Ok(Node {
            span: Span::from_offset(source, 0, 0),
            kind: Kind::Null,
        });
    }
    let raw: Result<Spanned<RawKind>, _> = serde_saphyr::from_str(source);
    match raw {
        Ok(s) => Ok(convert(source, s)),
        Err(e) => {
            let span = e.location().map(|l| {
                let off = l.span().byte_offset().map_or_else(
                    || line_col_offset(source, l.line() as usize, l.column() as usize),
                    |o| o as usize,
                );
                Span::from_offset(source, off, 1)
            });
            let msg = first_line(&e.without_snippet().to_string());
            Err(
                Diagnostic::error(code::YAML_SYNTAX, format!("invalid YAML: {msg}"))
                    .at_opt(span)
                    .hint("check indentation, quotes and colons on this line"),
            )
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn line_col_offset(source: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
        }
        off += l.len();
    }
    source.len()
}

fn convert(source: &str, s: Spanned<RawKind>) -> Node {
    let loc = s.referenced;
    let span = match (loc.span().byte_offset(), loc.span().byte_len()) {
        (Some(o), Some(l)) => Span::from_offset(source, o as usize, l as usize),
        _ => Span::from_offset(
            source,
            line_col_offset(source, loc.line() as usize, loc.column() as usize),
            0,
        ),
    };
    let kind = match s.value {
        RawKind::Null => Kind::Null,
        RawKind::Bool(b) => Kind::Bool(b),
        RawKind::Number(n) => Kind::Number(n),
        RawKind::Str(s) => Kind::Str(s),
        RawKind::Seq(items) => Kind::Seq(items.into_iter().map(|i| convert(source, i)).collect()),
        RawKind::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert(source, k), convert(source, v)))
                .collect(),
        ),
    };
    let span = match &kind {
        // A collection's reported span is its first token; widen it to cover its children so
        // that underlining a whole mapping shows something sensible.
        Kind::Map(entries) if !entries.is_empty() => {
            let last = &entries[entries.len() - 1].1.span;
            let end = (last.offset + last.len).max(span.offset);
            Span::from_offset(source, span.offset, end - span.offset)
        }
        _ => span,
    };
    Node { span, kind }
}

enum RawKind {
    Null,
    Bool(bool),
    Number(Number),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<RawKind>, Spanned<RawKind>)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_none<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
        Ok(i64::try_from(v).map_or_else(
            |_| RawKind::Str(v.to_string()),
            |i| RawKind::Number(i.into()),
        ))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        Ok(u64::try_from(v).map_or_else(
            |_| RawKind::Str(v.to_string()),
            |i| RawKind::Number(i.into()),
        ))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
        Ok(Number::from_f64(v).map_or(RawKind::Str(v.to_string()), RawKind::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawKind>>()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Spanned<RawKind>, Spanned<RawKind>>()? {
            entries.push((k, v));
        }
        Ok(RawKind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spans_of_keys_and_values() {
        let src = "name: acme\nmappings:\n  - name: x\n    trigger: type = \"identify\"\n";
        let n = parse(src).unwrap();
        let name = n.get("name").unwrap();
        assert_eq!(name.as_str(), Some("acme"));
        assert_eq!((name.span.line, name.span.column), (1, 7));
        assert_eq!(
            &src[name.span.offset..name.span.offset + name.span.len],
            "acme"
        );
        let trig = n.span_at("/mappings/0/trigger");
        assert_eq!(trig.line, 4);
        assert_eq!(&src[trig.offset..trig.offset + 17], "type = \"identify\"");
        let key = n.key_span_at("/mappings/0/trigger");
        assert_eq!(&src[key.offset..key.offset + key.len], "trigger");
    }

    #[test]
    fn scalars_have_their_types() {
        let n = parse("a: 1\nb: true\nc: null\nd: \"1\"\ne: 1.5\nf: ~\n").unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": 1, "b": true, "c": null, "d": "1", "e": 1.5, "f": null})
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.code, code::YAML_SYNTAX);
        assert!(e.span.is_some());
    }
}
