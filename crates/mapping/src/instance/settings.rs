//! An instance's settings and write keys: values from the environment, secrets kept secret,
//! and a warning for every secret written in the file.

use super::{Loader, Setting, locate_in};
use crate::diag::{Diagnostic, Span, code};
use crate::env;
use crate::yaml::{Kind, Node};
use secrecy::SecretString;
use std::collections::BTreeMap;

impl Loader<'_> {
    /// `write_key: KEY` or `write_key: [KEY, …]`; empty keys are refused (an empty key would
    /// let any sender in).
    pub(super) fn write_keys(&mut self, node: &Node) -> Vec<SecretString> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for n in items {
            self.literal_secret_warning(n, "write_key");
            match self.expand(n, "`write_key`") {
                Some(k) if !k.trim().is_empty() => out.push(SecretString::from(k)),
                Some(_) => self.push(
                    Diagnostic::error(code::WRONG_TYPE, "`write_key` is empty")
                        .at(n.span)
                        .hint("set it to the key your sources send, e.g. ${SEGMENT_WRITE_KEY}"),
                ),
                None => {}
            }
        }
        out
    }

    fn literal_secret_warning(&mut self, node: &Node, key: &str) {
        let Kind::Str(s) = &node.kind else {
            return;
        };
        let var = key.to_ascii_uppercase();
        let pieces = env::pieces(s);
        if pieces
            .iter()
            .any(|p| matches!(p, env::Piece::Text { text, .. } if !text.trim().is_empty()))
        {
            self.push(
                Diagnostic::warning(
                    code::LITERAL_SECRET,
                    format!("`{key}` is written in the file"),
                )
                .at(node.span)
                .hint(format!("read it from the environment: {key}: ${{{var}}}")),
            );
        }
        for p in &pieces {
            let env::Piece::Var {
                name,
                default: Some((_, d)),
                ..
            } = p
            else {
                continue;
            };
            if looks_like_a_key(d) {
                let span = locate_in(self.source, node.span, &format!(":-{d}"));
                self.push(
                    Diagnostic::warning(
                        code::LITERAL_SECRET,
                        format!("the default of `${{{name}:-…}}` writes the `{key}` into the file"),
                    )
                    .at(span)
                    .hint(format!(
                        "drop the default and export {name} instead: {key}: ${{{name}}}"
                    )),
                );
            }
        }
    }

    pub(super) fn settings(
        &mut self,
        node: Option<&Node>,
        root: &Node,
    ) -> BTreeMap<String, Setting> {
        let mut out = BTreeMap::new();
        let entries: &[(Node, Node)] = match node {
            Some(n) if matches!(n.kind, Kind::Null) => &[],
            Some(n) => self.entries(n, "`settings`").unwrap_or(&[]),
            None => &[],
        };
        let known: Vec<&str> = self.schema.settings.iter().map(|s| s.name).collect();
        self.check_keys(entries, &known, "settings");
        for (k, v) in entries {
            let key = k.key_text();
            let Some(spec) = self.schema.setting(&key) else {
                continue;
            };
            if matches!(v.kind, Kind::Null) {
                continue;
            }
            if spec.secret {
                self.literal_secret_warning(v, &key);
            }
            if let Some(val) = self.expand(v, &format!("setting `{key}`")) {
                out.insert(
                    key,
                    if spec.secret {
                        Setting::Secret(SecretString::from(val))
                    } else {
                        Setting::Plain(val)
                    },
                );
            }
        }
        for spec in self.schema.settings.iter().filter(|s| s.required) {
            let given = entries
                .iter()
                .any(|(k, v)| k.key_text() == spec.name && !matches!(v.kind, Kind::Null));
            if !given {
                let span = node.map_or(Span::from_offset(self.source, root.span.offset, 0), |n| {
                    Span::from_offset(self.source, n.span.offset, 0)
                });
                self.push(
                    Diagnostic::error(
                        code::MISSING_KEY,
                        format!("setting `{}` is required", spec.name),
                    )
                    .at(span)
                    .hint(format!("{}: {}", spec.name, spec.description)),
                );
            }
        }
        out
    }
}

/// Whether a `${VAR:-default}`'s default has the shape of a real credential: a Close API key
/// (`api_…`) or a generated key (20 characters or more, no spaces: Segment's write keys have 32).
/// Short placeholders for local trials, the simulator's `test_key` or a demo's `wk_default`, are
/// not secrets, and the shipped examples use them.
fn looks_like_a_key(default: &str) -> bool {
    let d = default.trim();
    d.starts_with("api_") || (d.chars().count() >= 20 && !d.contains(char::is_whitespace))
}
