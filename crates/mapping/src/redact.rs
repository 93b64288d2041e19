//! Secrets out of source excerpts. Diagnostics show the lines around a problem; when an
//! `api_key` or `write_key` is written in the file (a `literal_secret` warning, or any problem
//! nearby), those lines would print it. Frontends render excerpts from [`redact`]'s copy of the
//! source instead, in which secret values are starred out byte for byte, so every offset, line
//! and column stays where it was.

use crate::env::secret_ranges;
use crate::schema::DestinationSchema;
use crate::yaml::{self, Kind, Node};

/// The source with every secret value starred out; `${VAR}` references stay readable.
pub fn redact(source: &str, schema: &DestinationSchema) -> String {
    let mut ranges = Vec::new();
    match yaml::parse(source) {
        Ok(root) => tree_ranges(source, &root, schema, &mut ranges),
        // Unparsable YAML has no tree, but its excerpts (the syntax error's) still show lines.
        Err(_) => line_ranges(source, schema, &mut ranges),
    }
    let mut bytes = source.as_bytes().to_vec();
    for (start, len) in ranges {
        for b in bytes.iter_mut().skip(start).take(len) {
            if !b.is_ascii_whitespace() {
                *b = b'*';
            }
        }
    }
    // Whole characters were replaced byte for byte and ASCII kept, so this cannot fail; fall
    // back to hiding everything rather than risk showing a key.
    String::from_utf8(bytes).unwrap_or_else(|_| "*".repeat(source.len()))
}

/// A top-level key that may hold a secret: `write_key` and anything that looks like a
/// misspelling of a key or token.
fn secret_top_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("key") || k.contains("secret") || k.contains("token")
}

fn tree_ranges(
    source: &str,
    root: &Node,
    schema: &DestinationSchema,
    out: &mut Vec<(usize, usize)>,
) {
    let Kind::Map(entries) = &root.kind else {
        return;
    };
    for (k, v) in entries {
        let key = k.key_text();
        if key == "settings"
            && let Kind::Map(settings) = &v.kind
        {
            for (sk, sv) in settings {
                let name = sk.key_text();
                // Known plain settings are shown; secret ones and unknown (perhaps misspelt
                // secret) ones are not.
                let plain = schema.settings.iter().any(|s| s.name == name && !s.secret);
                if !plain {
                    node_ranges(source, sv, out);
                }
            }
        } else if secret_top_key(&key) {
            node_ranges(source, v, out);
        }
    }
}

fn node_ranges(source: &str, node: &Node, out: &mut Vec<(usize, usize)>) {
    match &node.kind {
        Kind::Seq(items) => items.iter().for_each(|i| node_ranges(source, i, out)),
        Kind::Map(entries) => entries
            .iter()
            .for_each(|(_, v)| node_ranges(source, v, out)),
        _ => {
            let raw = source
                .get(node.span.offset..node.span.offset + node.span.len)
                .unwrap_or_default();
            // A quoted scalar keeps its quotes, so that the excerpt still reads as YAML.
            let quoted = raw.len() >= 2
                && (raw.starts_with('"') && raw.ends_with('"')
                    || raw.starts_with('\'') && raw.ends_with('\''));
            let (start, inner) = if quoted {
                (node.span.offset + 1, &raw[1..raw.len() - 1])
            } else {
                (node.span.offset, raw)
            };
            out.extend(
                secret_ranges(inner)
                    .into_iter()
                    .map(|(s, l)| (start + s, l)),
            );
        }
    }
}

/// Without a tree: values after a secret key on its line, and list items below it.
fn line_ranges(source: &str, schema: &DestinationSchema, out: &mut Vec<(usize, usize)>) {
    let names: Vec<&str> = schema
        .settings
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.name)
        .chain(["write_key"])
        .collect();
    let mut offset = 0;
    // The indentation of a secret key whose value may continue on the lines below.
    let mut open: Option<usize> = None;
    for line in source.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start().len();
        if let Some(key_indent) = open {
            if body.trim().is_empty() || indent > key_indent || body.trim_start().starts_with('-') {
                let item = body.trim_start().trim_start_matches('-').trim_start();
                let start = body.len() - item.len();
                for (s, l) in secret_ranges(item) {
                    out.push((offset + start + s, l));
                }
                offset += line.len();
                continue;
            }
            open = None;
        }
        for name in &names {
            let mut from = 0;
            while let Some(i) = body[from..].find(name) {
                let at = from + i + name.len();
                let rest = &body[at..];
                let after_quote = rest.trim_start_matches(['"', '\'']);
                if let Some(value) = after_quote.trim_start().strip_prefix(':') {
                    let start = body.len() - value.len();
                    // A flow list (`[wk_a, wk_b]`) holds several keys: all of it, up to its
                    // end, which a broken file may not have on this line (or at all).
                    let list = value.trim_start().starts_with('[');
                    let end = if list {
                        value.find(']').map_or(body.len(), |e| start + e)
                    } else {
                        value.find([',', '}']).map_or(body.len(), |e| start + e)
                    };
                    for (s, l) in secret_ranges(&body[start..end]) {
                        out.push((offset + start + s, l));
                    }
                    if value.trim().is_empty() || list && !value.contains(']') {
                        open = Some(indent);
                    }
                }
                from = at;
            }
        }
        offset += line.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SettingSpec;

    fn schema() -> DestinationSchema {
        DestinationSchema {
            name: "t",
            settings: vec![
                SettingSpec {
                    name: "api_key",
                    description: "",
                    required: true,
                    secret: true,
                    list: false,
                },
                SettingSpec {
                    name: "plain_one",
                    description: "",
                    required: false,
                    secret: false,
                    list: false,
                },
            ],
            actions: vec![],
        }
    }

    #[test]
    fn secrets_are_starred_and_offsets_kept() {
        let src = "name: x\nwrite_key: [wk_one, \"${WK:-wk_two}\"]\nsettings:\n  api_key: api_S3CRET # note\n  plain_one: visible\n  api_ky: typo_S3CRET\n";
        let r = redact(src, &schema());
        assert_eq!(r.len(), src.len());
        assert_eq!(r.lines().count(), src.lines().count());
        for secret in ["wk_one", "wk_two", "api_S3CRET", "typo_S3CRET"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("\"${WK:-******}\""), "{r}");
        assert!(r.contains("plain_one: visible"), "{r}");
        assert!(r.contains("name: x"), "{r}");
    }

    #[test]
    fn a_list_of_api_keys_is_redacted_item_by_item() {
        for src in [
            "name: x\nsettings:\n  api_key: [api_ONE_S3CRET, \"${K:-api_TWO_S3CRET}\"]\n  plain_one: visible\n",
            "name: x\nsettings:\n  api_key:\n    - api_ONE_S3CRET\n    - ${K:-api_TWO_S3CRET}\n  plain_one: visible\n",
            "name: x\nsettings: {api_key: [api_ONE_S3CRET, api_TWO_S3CRET], plain_one: visible}\n",
        ] {
            assert!(yaml::parse(src).is_ok(), "{src}");
            let r = redact(src, &schema());
            assert!(!r.contains("S3CRET"), "{r}");
            assert_eq!(r.len(), src.len());
            assert!(r.contains("plain_one: visible"), "{r}");
            assert!(
                !r.contains("${K:-api_TWO") && (r.contains("${K:-") || !src.contains("${K")),
                "{r}"
            );
        }
    }

    #[test]
    fn a_broken_flow_list_of_write_keys_is_redacted_whole() {
        for src in [
            "name: x\nwrite_key: [wk_ONE_S3CRET, wk_TWO_S3CRET\nmappings: []\n",
            "name: x\nwrite_key: [wk_ONE_S3CRET,\n  wk_TWO_S3CRET, ${WK}\nsettings: {api_key: [\n",
            "name: x\nwrite_key: [wk_ONE_S3CRET, \"wk_TWO_S3CRET\"]]\n",
        ] {
            assert!(yaml::parse(src).is_err(), "{src}");
            let r = redact(src, &schema());
            assert!(!r.contains("S3CRET"), "{r}");
            assert_eq!(r.len(), src.len());
            assert!(r.contains("name: x"), "{r}");
        }
    }

    #[test]
    fn unparsable_files_are_redacted_by_line() {
        let src = "name: x\nsettings:\n  api_key: api_S3CRET\nwrite_key:\n  - wk_S3CRET\n  - ${WK}\nmappings: [\n";
        assert!(yaml::parse(src).is_err());
        let r = redact(src, &schema());
        assert!(!r.contains("S3CRET"), "{r}");
        assert!(r.contains("${WK}"), "{r}");
        assert!(r.contains("mappings: ["), "{r}");
    }
}
