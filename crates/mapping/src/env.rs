//! `${VAR}` and `${VAR:-default}` in instance files, read one way for expansion, for the
//! `literal_secret` warning and for redaction.

/// A piece of a value: literal text, or a variable reference. Offsets are bytes into the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text {
        at: usize,
        text: &'a str,
    },
    Var {
        /// The whole `${…}`, for pointing at it.
        at: usize,
        len: usize,
        name: &'a str,
        /// The default and where it starts, for `${VAR:-default}`.
        default: Option<(usize, &'a str)>,
    },
}

/// Splits a value into text and references. An unterminated `${` is text.
pub fn pieces(raw: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = raw[pos..].find("${") {
        let start = pos + i;
        let Some(close) = raw[start + 2..].find('}') else {
            break;
        };
        let close = start + 2 + close;
        if start > pos {
            out.push(Piece::Text {
                at: pos,
                text: &raw[pos..start],
            });
        }
        let inner = &raw[start + 2..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some((start + 2 + n.len() + 2, d))),
            None => (inner, None),
        };
        out.push(Piece::Var {
            at: start,
            len: close + 1 - start,
            name,
            default,
        });
        pos = close + 1;
    }
    if pos < raw.len() {
        out.push(Piece::Text {
            at: pos,
            text: &raw[pos..],
        });
    }
    out
}

/// Byte ranges of a secret's text to hide: everything but the `${VAR}` references themselves
/// (a default is hidden too: it may be a key).
pub fn secret_ranges(raw: &str) -> Vec<(usize, usize)> {
    pieces(raw)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Text { at, text } => Some((at, text.len())),
            Piece::Var {
                default: Some((at, d)),
                ..
            } => Some((at, d.len())),
            Piece::Var { .. } => None,
        })
        .filter(|(_, len)| *len > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_and_ranges() {
        let raw = "a${X}b${Y:-dflt}${Z";
        assert_eq!(
            pieces(raw),
            vec![
                Piece::Text { at: 0, text: "a" },
                Piece::Var {
                    at: 1,
                    len: 4,
                    name: "X",
                    default: None
                },
                Piece::Text { at: 5, text: "b" },
                Piece::Var {
                    at: 6,
                    len: 10,
                    name: "Y",
                    default: Some((11, "dflt"))
                },
                Piece::Text {
                    at: 16,
                    text: "${Z"
                },
            ]
        );
        assert_eq!(secret_ranges(raw), vec![(0, 1), (5, 1), (11, 4), (16, 3)]);
        assert_eq!(secret_ranges("${K}"), vec![]);
    }
}
