//! Reading one Rust source file for the shape check: just enough to find its `mod` declarations
//! and the `crate::`/`super::`/`self::` paths it names, each with the inline-module scope it
//! sits in. Comments and literals are blanked first, so that text in them is never read as code.

use regex::Regex;
use std::sync::LazyLock;

/// What one file declares and names.
#[derive(Debug, Default)]
pub struct Scan {
    /// `mod name;` declarations: the inline modules around them, the name, a `#[path]` if any.
    pub mods: Vec<ModDecl>,
    /// `mod name { … }` blocks, by their path of inline names inside the file.
    pub inline: Vec<Vec<String>>,
    /// Paths that start with `crate`, `super` or `self`.
    pub refs: Vec<PathRef>,
}

#[derive(Debug)]
pub struct ModDecl {
    pub scope: Vec<String>,
    pub name: String,
    pub path_attr: Option<String>,
}

#[derive(Debug)]
pub struct PathRef {
    /// Inline modules (inside this file) that the path is written in.
    pub scope: Vec<String>,
    pub segments: Vec<String>,
    pub line: usize,
}

static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\bmod\s+(?:r#)?(\w+)\s*([;{])",
        r"|\buse\s+([^;]*);",
        r"|\b((?:crate|super|self)(?:\s*::\s*\w+)+)",
        r"|([{}])",
    ))
    .expect("token regex")
});

static PATH_ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"#\[path\s*=\s*"([^"]+)"\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;"#)
        .expect("path attribute regex")
});

/// Scans a file's text.
pub fn scan(text: &str) -> Scan {
    let path_attrs: Vec<(String, String)> = PATH_ATTR
        .captures_iter(text)
        .map(|c| (c[2].to_string(), c[1].to_string()))
        .collect();
    let code = blank_comments_and_literals(text);
    let mut out = Scan::default();
    // Inline modules open around the current position, each with the brace depth inside it.
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let scope = |open: &[(String, usize)]| open.iter().map(|(n, _)| n.clone()).collect();
    for c in TOKEN.captures_iter(&code) {
        let at = c.get(0).map_or(0, |m| m.start());
        let line = code[..at].matches('\n').count() + 1;
        if let (Some(name), Some(end)) = (c.get(1), c.get(2)) {
            if end.as_str() == ";" {
                let name = name.as_str().to_string();
                let path_attr = path_attrs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, p)| p.clone());
                out.mods.push(ModDecl {
                    scope: scope(&open),
                    name,
                    path_attr,
                });
            } else {
                depth += 1;
                open.push((name.as_str().to_string(), depth));
                out.inline.push(scope(&open));
            }
        } else if let Some(tree) = c.get(3) {
            let mut paths = Vec::new();
            expand_use(tree.as_str(), &[], &mut paths);
            for segments in paths {
                out.refs.push(PathRef {
                    scope: scope(&open),
                    segments,
                    line,
                });
            }
        } else if let Some(path) = c.get(4) {
            out.refs.push(PathRef {
                scope: scope(&open),
                segments: path
                    .as_str()
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .collect(),
                line,
            });
        } else if c.get(5).is_some_and(|b| b.as_str() == "{") {
            depth += 1;
        } else {
            if open.last().is_some_and(|(_, d)| *d == depth) {
                open.pop();
            }
            depth = depth.saturating_sub(1);
        }
    }
    out.refs
        .retain(|r| matches!(r.segments[0].as_str(), "crate" | "super" | "self"));
    out
}

/// Expands a use tree (`a::{b, c::{d, self}}`) into its paths.
fn expand_use(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let (Some(open), Some(close)) = (tree.find('{'), tree.rfind('}')) {
        let mut head = prefix.to_vec();
        head.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..close];
        let mut level = 0;
        let mut start = 0;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand_use(&inner[start..i], &head, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[start..], &head, out);
        return;
    }
    let tree = tree.split(" as ").next().unwrap_or_default();
    let mut path = prefix.to_vec();
    for s in segments(tree) {
        // `a::{self}` names `a` itself.
        if s != "self" || path.is_empty() {
            path.push(s);
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

fn segments(text: &str) -> Vec<String> {
    text.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_string)
        .collect()
}

/// The text with comments and the insides of string and character literals replaced by
/// spaces (newlines kept, so line numbers still hold).
pub fn blank_comments_and_literals(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut level = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    level += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && (i == 0 || !ident(b[i - 1]))
            && raw_string_start(&b, i + usize::from(c == 'b') + 1).is_some()
        {
            let from = i + usize::from(c == 'b') + 1;
            let hashes = raw_string_start(&b, from).unwrap_or_default();
            i = from + hashes + 1;
            out.push('"');
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || b.get(i + 2) == Some(&'\'')) {
            // A character literal (a lifetime has no closing quote two places on).
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `b[i]`: `#…#"` opens a raw string; the number of `#`s.
fn raw_string_start(b: &[char], i: usize) -> Option<usize> {
    let hashes = b[i.min(b.len())..]
        .iter()
        .take_while(|c| **c == '#')
        .count();
    (b.get(i + hashes) == Some(&'"')).then_some(hashes)
}
