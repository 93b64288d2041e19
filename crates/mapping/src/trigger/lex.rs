//! The trigger language's tokens.

use super::{TriggerError, err};
use crate::diag::code;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    LParen,
    RParen,
    Comma,
    Bang,
    Cmp(&'static str),
    Str(String),
    SingleStr(String),
    Num(String),
    Ident(Vec<String>),
    And,
    Or,
}

impl Kind {
    pub(super) fn describe(&self) -> String {
        match self {
            Kind::LParen => "`(`".into(),
            Kind::RParen => "`)`".into(),
            Kind::Comma => "`,`".into(),
            Kind::Bang => "`!`".into(),
            Kind::Cmp(c) => format!("`{c}`"),
            Kind::Str(s) => format!("\"{s}\""),
            Kind::SingleStr(s) => format!("'{s}'"),
            Kind::Num(n) => format!("number {n}"),
            Kind::Ident(p) => format!("`{}`", p.join(".")),
            Kind::And => "`and`".into(),
            Kind::Or => "`or`".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Tok {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) len: usize,
}

pub(super) fn lex(src: &str) -> Result<Vec<Tok>, TriggerError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let is_ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b'\\';
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'\\';
    while i < b.len() {
        let c = b[i];
        let start = i;
        let single = |k: Kind| Tok {
            kind: k,
            start,
            len: 1,
        };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => out.push(single(Kind::LParen)),
            b')' => out.push(single(Kind::RParen)),
            b',' => out.push(single(Kind::Comma)),
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok {
                    kind: Kind::Cmp("!="),
                    start,
                    len: 2,
                });
                i += 1;
            }
            b'!' => out.push(single(Kind::Bang)),
            b'=' => out.push(single(Kind::Cmp("="))),
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', false) => "<",
                    (b'<', true) => "<=",
                    (_, false) => ">",
                    (_, true) => ">=",
                };
                out.push(Tok {
                    kind: Kind::Cmp(op),
                    start,
                    len: 1 + usize::from(eq),
                });
                i += usize::from(eq);
            }
            b'"' | b'\'' => {
                let Some(end) = src[i + 1..].find(c as char) else {
                    return Err(err(
                        code::TRIGGER_SYNTAX,
                        "unterminated string",
                        Some("close the string with a matching quote"),
                        start,
                        src.len() - start,
                    ));
                };
                let text = src[i + 1..i + 1 + end].to_string();
                out.push(Tok {
                    kind: if c == b'"' {
                        Kind::Str(text)
                    } else {
                        Kind::SingleStr(text)
                    },
                    start,
                    len: end + 2,
                });
                i += end + 1;
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                    j += 1;
                }
                let text = &src[i..j];
                let digits = text.trim_start_matches(['-', '+']);
                if digits.is_empty()
                    || digits.matches('.').count() > 1
                    || digits.ends_with('.')
                    || digits == "."
                {
                    return Err(err(
                        code::TRIGGER_SYNTAX,
                        format!("`{text}` is not a number"),
                        Some("numbers look like 42, -7 or 4.5; text goes in double quotes"),
                        start,
                        j - i,
                    ));
                }
                out.push(Tok {
                    kind: Kind::Num(text.to_string()),
                    start,
                    len: j - i,
                });
                i = j - 1;
            }
            c if is_ident_start(c) => {
                let mut segs = vec![String::new()];
                let mut j = i;
                while let Some(&c) = b.get(j) {
                    if c == b'\\' {
                        let Some(next) = src[j + 1..].chars().next() else {
                            return Err(err(
                                code::TRIGGER_SYNTAX,
                                "`\\` at the end of the trigger escapes nothing",
                                Some(
                                    "`\\` escapes the next character of a field name, e.g. `properties.product\\ 1`",
                                ),
                                j,
                                1,
                            ));
                        };
                        if let Some(s) = segs.last_mut() {
                            s.push(next)
                        }
                        j += 1 + next.len_utf8();
                    } else if is_ident(c) {
                        if let Some(s) = segs.last_mut() {
                            s.push(c as char)
                        }
                        j += 1;
                    } else if c == b'.' && b.get(j + 1).is_some_and(|n| is_ident(*n)) {
                        segs.push(String::new());
                        j += 1;
                    } else {
                        break;
                    }
                }
                let kind = match segs.as_slice() {
                    [w] if w == "and" && src[i..j] == *"and" => Kind::And,
                    [w] if w == "or" && src[i..j] == *"or" => Kind::Or,
                    _ => Kind::Ident(segs),
                };
                out.push(Tok {
                    kind,
                    start,
                    len: j - i,
                });
                i = j - 1;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                let hint = match ch {
                    '&' => "join conditions with `and` (not `&` or `&&`)",
                    '|' => "join conditions with `or` (not `|` or `||`)",
                    _ => {
                        "text values go in double quotes (`event = \"Sign-up (web)\"`); in a field name, escape the character with `\\`"
                    }
                };
                return Err(err(
                    code::TRIGGER_SYNTAX,
                    format!("unexpected character `{ch}`"),
                    Some(hint),
                    start,
                    ch.len_utf8(),
                ));
            }
        }
        i += 1;
    }
    Ok(out)
}
