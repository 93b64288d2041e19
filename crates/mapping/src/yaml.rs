//! A YAML document as a tree that remembers where every node came from.
//!
//! serde-saphyr deserializes straight into types; we deserialize into this small spanned tree
//! first so that validation can look at the whole document, report every problem at once and
//! point at the exact key or value (ripgrep-style two stages: raw tree → validated config).

use crate::diag::{Diagnostic, Span, code, floor_char_boundary};
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
    // The YAML 1.2 core schema, as editors using our JSON Schema read the file: only
    // true/false are booleans, so `Yes`, `Off` and `NO` stay text (YAML 1.1 made them booleans).
    let options = serde_saphyr::options! { strict_booleans: true };
    let raw: Result<Spanned<RawKind>, _> = serde_saphyr::from_str_with_options(source, options);
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
            let (msg, hint) = match budget_breach(&e) {
                Some(sentence) => (
                    sentence,
                    "instance files are small; check that this is the file you meant",
                ),
                None => (
                    format!(
                        "invalid YAML: {}",
                        first_line(&e.without_snippet().to_string())
                    ),
                    "check indentation, quotes and colons on this line",
                ),
            };
            Err(Diagnostic::error(code::YAML_SYNTAX, msg)
                .at_opt(span)
                .hint(hint))
        }
    }
}

/// The reader's safety limits (nesting depth, size, aliases) as sentences, not debug text.
fn budget_breach(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as B;
    let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() else {
        return None;
    };
    Some(match breach {
        B::Depth { depth } => format!(
            "the YAML nests lists and mappings {depth} levels deep here; at most {} levels are read",
            depth.saturating_sub(1)
        ),
        B::Events { .. } | B::Nodes { .. } | B::InputBytes { .. } | B::ScalarBytes { .. } => {
            "the YAML document is too large to read".into()
        }
        B::Aliases { .. }
        | B::Anchors { .. }
        | B::AliasAnchorRatio { .. }
        | B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. } => {
            "the YAML uses too many anchors or aliases (`&name`, `*name`) to read safely".into()
        }
        B::Documents { .. } => "the file holds too many YAML documents (`---`)".into(),
        B::MergeKeys { .. } => "the YAML uses too many merge keys (`<<`)".into(),
        _ => "the YAML document exceeds a reading limit (size, nesting or aliases)".into(),
    })
}

/// The source span of `value[start..start + len]`, where `value` is the text of the scalar at
/// `node` (a trigger, say). A scalar's text is not always a copy of its source: quotes, escapes
/// (`\"`), `''`, block indentation and folded line breaks sit between them, so each character of
/// the value is found in the source in turn.
pub fn scalar_span(source: &str, node: Span, value: &str, start: usize, len: usize) -> Span {
    let raw = source
        .get(node.offset..node.offset + node.len)
        .unwrap_or_default();
    let (mut j, double) = match raw.as_bytes().first() {
        Some(b'"') => (1, true),
        Some(b'\'') => (1, false),
        _ => (0, false),
    };
    // offsets[i]: where value byte i starts in `raw` (bytes inside a character share its start).
    let mut offsets = Vec::with_capacity(value.len() + 1);
    for ch in value.chars() {
        let from = j;
        let mut found = None;
        while let Some(rc) = raw[j..].chars().next() {
            if double && rc == '\\' {
                let Some(next) = raw[j + 1..].chars().next() else {
                    break;
                };
                let width = match next {
                    '\n' | '\r' => {
                        // An escaped line break joins lines and stands for nothing.
                        j += 1 + next.len_utf8();
                        continue;
                    }
                    'x' => 4,
                    'u' => 6,
                    'U' => 10,
                    c => 1 + c.len_utf8(),
                };
                found = Some(j);
                j = (j + width).min(raw.len());
                break;
            }
            if rc == ch {
                found = Some(j);
                j += rc.len_utf8();
                break;
            }
            j += rc.len_utf8();
        }
        let at = found.unwrap_or_else(|| {
            j = from;
            from
        });
        offsets.extend(std::iter::repeat_n(at, ch.len_utf8()));
    }
    offsets.push(j);
    let at = |i: usize| node.offset + offsets[i.min(offsets.len() - 1)];
    let begin = at(start);
    if start >= value.len() {
        // Past the end (a trigger that stops too early): the character after it, if any.
        return Span::from_offset(source, begin, len.min(1));
    }
    let end = if len == 0 {
        begin
    } else {
        // One past the last character of the range.
        let last = (start + len - 1).min(value.len().saturating_sub(1));
        let last_char = value[floor_char_boundary(value, last)..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
        let src_last = at(last);
        let width = source[src_last..]
            .chars()
            .next()
            .map_or(0, char::len_utf8)
            .max(last_char.min(1));
        src_last + width
    };
    Span::from_offset(source, begin, end.max(begin) - begin)
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
    fn scalar_spans_find_the_text_in_its_source() {
        // Each source spells the trigger `type = "a" and tratis.x = 1`; `tratis` is at 15..21.
        for src in [
            "t: type = \"a\" and tratis.x = 1\n",
            "t: \"type = \\\"a\\\" and tratis.x = 1\"\n",
            "t: 'type = \"a\" and tratis.x = 1'\n",
            "t: >-\n  type = \"a\"\n  and tratis.x = 1\nu: 1\n",
            "t: |-\n    type = \"a\" and tratis.x = 1\nu: 1\n",
            "t: \"type = \\\"a\\\" and \\\n   tratis.x = 1\"\n",
        ] {
            let n = parse(src).unwrap();
            let t = n.get("t").unwrap();
            let value = t.as_str().unwrap();
            assert_eq!(&value[15..21], "tratis", "{src:?}");
            let s = scalar_span(src, t.span, value, 15, 6);
            assert_eq!(&src[s.offset..s.offset + s.len], "tratis", "{src:?}");
            let end = scalar_span(src, t.span, value, value.len(), 0);
            assert!(end.offset >= s.offset + s.len, "{src:?}");
        }
    }

    #[test]
    fn yaml_1_1_words_are_text() {
        let n = parse("a: Yes\nb: Off\nc: NO\nd: n\ne: true\nf: False\n").unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": "Yes", "b": "Off", "c": "NO", "d": "n", "e": true, "f": false})
        );
    }

    #[test]
    fn budget_errors_are_sentences() {
        let deep = format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.code, code::YAML_SYNTAX);
        assert!(e.message.contains("levels deep"), "{}", e.message);
        assert!(
            !e.message.contains('{') && !e.message.contains("budget"),
            "{}",
            e.message
        );
        assert!(e.span.is_some());
    }

    #[test]
    fn syntax_error_is_located() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.code, code::YAML_SYNTAX);
        assert!(e.span.is_some());
    }
}
