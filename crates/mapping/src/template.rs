//! `{{path}}` templates, compiled once into literal pieces and paths.
//!
//! Reference semantics: `{{{p}}}` and `{{p}}` (inner text trimmed) read `p` with the reference's
//! `get` (no `$.` stripping); missing or null renders as `""`, other values as `String(v)`
//! (numbers as text, objects as `[object Object]`), with no HTML escaping.
//! One deliberate difference: the reference substitutes `{{{…}}}` first and then scans the
//! result again for `{{…}}`, so a value that itself contains `{{x}}` would be expanded a second
//! time; we substitute each placeholder once.

use crate::js;
use crate::path::RefPath;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Path(RefPath),
}

impl Template {
    pub fn compile(src: &str) -> Template {
        let mut parts = Vec::new();
        for (is_ph, piece) in split(src, 3) {
            if is_ph {
                parts.push(Part::Path(RefPath::for_template(piece.trim())));
            } else {
                for (is_ph2, p2) in split(piece, 2) {
                    if is_ph2 {
                        parts.push(Part::Path(RefPath::for_template(p2.trim())));
                    } else if !p2.is_empty() {
                        parts.push(Part::Text(p2.to_string()));
                    }
                }
            }
        }
        Template { parts }
    }

    /// The byte offset of a `{{` that opens no placeholder (unclosed, or `{{}}`): such text
    /// would be sent as it is, braces and all, which is never what a mapping meant.
    pub fn stray_open(src: &str) -> Option<usize> {
        let offset = |piece: &str| piece.as_ptr() as usize - src.as_ptr() as usize;
        for (is_ph, piece) in split(src, 3) {
            if is_ph {
                continue;
            }
            for (is_ph2, p2) in split(piece, 2) {
                if !is_ph2 && let Some(i) = p2.find("{{") {
                    return Some(offset(p2) + i);
                }
            }
        }
        None
    }

    pub fn render(&self, data: &Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Path(path) => {
                    if let Some(v) = path.get(data)
                        && !v.is_null()
                    {
                        js::push_js_string(&mut out, &v);
                    }
                }
            }
        }
        out
    }
}

/// Splits `s` into literal text and placeholder bodies delimited by `n` braces, where a body is
/// one or more characters other than `}` (the reference's `\{\{([^}]+)\}\}`).
fn split(s: &str, n: usize) -> Vec<(bool, &str)> {
    let open = "{".repeat(n);
    let close = "}".repeat(n);
    let mut out = Vec::new();
    let rest = s;
    let mut text_start = 0usize;
    let mut pos = 0usize;
    while let Some(i) = rest[pos..].find(&open) {
        let body_start = pos + i + n;
        let body_len = rest[body_start..]
            .find('}')
            .unwrap_or(rest.len() - body_start);
        if body_len > 0 && rest[body_start + body_len..].starts_with(&close) {
            out.push((false, &rest[text_start..pos + i]));
            out.push((true, &rest[body_start..body_start + body_len]));
            pos = body_start + body_len + n;
            text_start = pos;
        } else {
            pos += i + 1;
        }
        if pos >= rest.len() {
            break;
        }
    }
    out.push((false, &rest[text_start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_the_reference() {
        let e = json!({"traits": {"first_name": "Ada", "last_name": "Lovelace", "phone": 5551234,
                       "company": {"id": 1}, "nothing": null, "email": "a@b"}});
        let r = |t: &str| Template::compile(t).render(&e);
        assert_eq!(
            r("{{traits.first_name}} {{traits.last_name}}"),
            "Ada Lovelace"
        );
        assert_eq!(
            r(
                "{{traits.phone}}|{{traits.company}}|{{traits.nope}}|{{traits.nothing}}|{{{traits.email}}}"
            ),
            "5551234|[object Object]|||a@b"
        );
        assert_eq!(r("plain text"), "plain text");
        assert_eq!(r("{{ traits.first_name }}!"), "Ada!");
        assert_eq!(r("{{}} {{traits.first_name"), "{{}} {{traits.first_name");
    }

    #[test]
    fn stray_braces_are_found() {
        assert_eq!(
            Template::stray_open("{{traits.name}} and {{traits.x"),
            Some(20)
        );
        assert_eq!(Template::stray_open("Hi {{traits.name"), Some(3));
        assert_eq!(Template::stray_open("{{}}"), Some(0));
        assert_eq!(Template::stray_open("{{traits.a}} {{{traits.b}}}"), None);
        assert_eq!(Template::stray_open("no braces {"), None);
    }
}
