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
            if spec.list
                && spec.secret
                && let Kind::Seq(items) = &v.kind
            {
                if let Some(list) = self.secret_list(v, items, &key) {
                    out.insert(key, list);
                }
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

impl Loader<'_> {
    /// A secret setting written as a list (`api_key: [${KEY_A}, ${KEY_B}]`): every item
    /// expanded, none empty, the list not empty, a repeat counted once; each item draws its own
    /// `literal_secret` warning, and no message names a value.
    fn secret_list(&mut self, node: &Node, items: &[Node], key: &str) -> Option<Setting> {
        if items.is_empty() {
            self.push(
                Diagnostic::error(
                    code::WRONG_TYPE,
                    format!("setting `{key}` is an empty list"),
                )
                .at(node.span)
                .hint(format!(
                    "give at least one value, e.g. {key}: ${{{}}}",
                    key.to_ascii_uppercase()
                )),
            );
            return None;
        }
        let mut values: Vec<String> = Vec::new();
        let mut ok = true;
        for item in items {
            self.literal_secret_warning(item, key);
            match self.expand(item, &format!("an item of setting `{key}`")) {
                Some(v) if !v.trim().is_empty() => {
                    if values.contains(&v) {
                        // The value is not named: it may be a secret.
                        self.push(
                            Diagnostic::warning(
                                code::DUPLICATE_VALUE,
                                format!("setting `{key}` lists the same value twice"),
                            )
                            .at(item.span)
                            .hint("each value counts once; remove the repeat"),
                        );
                    } else {
                        values.push(v);
                    }
                }
                Some(_) => {
                    ok = false;
                    self.push(
                        Diagnostic::error(
                            code::WRONG_TYPE,
                            format!("an item of setting `{key}` is empty"),
                        )
                        .at(item.span)
                        .hint("remove it, or set the environment variable it reads"),
                    );
                }
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(Setting::Secrets(
            values.into_iter().map(SecretString::from).collect(),
        ))
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

#[cfg(test)]
mod tests {
    use crate::diag::{Diagnostic, code};
    use crate::instance::{Instance, Setting, load};
    use crate::schema::{DestinationSchema, SettingSpec};
    use secrecy::ExposeSecret;

    fn schema() -> DestinationSchema {
        let spec = |name, list| SettingSpec {
            name,
            description: "",
            required: false,
            secret: true,
            list,
        };
        DestinationSchema {
            name: "t",
            settings: vec![spec("api_key", true), spec("token", false)],
            actions: vec![],
        }
    }

    fn run(settings: &str) -> (Option<Instance>, Vec<Diagnostic>, String) {
        let src = format!("name: x\nsettings:\n{settings}mappings: []\n");
        let env = |v: &str| (v == "KEY_B").then(|| "api_FROM_ENV_S3CRET".to_string());
        let (inst, diags) = load("x.yaml", &src, &schema(), &env);
        (inst, diags, src)
    }

    fn shown(inst: &Option<Instance>, diags: &[Diagnostic], src: &str) -> String {
        format!(
            "{inst:?}\n{diags:?}\n{}\n{}",
            serde_json::to_string(diags).unwrap(),
            crate::redact::redact(src, &schema())
        )
    }

    #[test]
    fn a_list_of_secrets_loads_and_stays_secret() {
        for settings in [
            "  api_key: [api_ONE_S3CRET, \"${KEY_B}\"]\n",
            "  api_key:\n    - api_ONE_S3CRET\n    - ${KEY_B}\n",
        ] {
            let (inst, diags, src) = run(settings);
            let inst = inst.unwrap_or_else(|| panic!("{diags:?}"));
            let Some(Setting::Secrets(keys)) = inst.setting("api_key") else {
                panic!("{:?}", inst.setting("api_key"));
            };
            let keys: Vec<&str> = keys.iter().map(|k| k.expose_secret()).collect();
            assert_eq!(keys, ["api_ONE_S3CRET", "api_FROM_ENV_S3CRET"]);
            // The literal item is warned about; the one read from the environment is not.
            let literal: Vec<_> = diags
                .iter()
                .filter(|d| d.code == code::LITERAL_SECRET)
                .collect();
            assert_eq!(literal.len(), 1, "{diags:?}");
            let all = shown(&Some(inst), &diags, &src);
            assert!(!all.contains("S3CRET"), "{all}");
            assert!(all.contains("[2 redacted]"), "{all}");
        }
    }

    #[test]
    fn one_key_is_still_one_secret() {
        let (inst, diags, _) = run("  api_key: ${KEY_B}\n");
        let inst = inst.unwrap_or_else(|| panic!("{diags:?}"));
        assert!(
            matches!(inst.setting("api_key"), Some(Setting::Secret(k)) if k.expose_secret() == "api_FROM_ENV_S3CRET")
        );
        assert!(diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn bad_lists_are_refused_without_naming_a_value() {
        for (settings, want) in [
            ("  api_key: []\n", code::WRONG_TYPE),
            ("  api_key: [api_ONE_S3CRET, \"\"]\n", code::WRONG_TYPE),
            (
                "  api_key: [api_ONE_S3CRET, \"${KEY_UNSET}\"]\n",
                code::UNSET_ENV_VAR,
            ),
            (
                "  token: [api_ONE_S3CRET, api_TWO_S3CRET]\n",
                code::WRONG_TYPE,
            ),
        ] {
            let (inst, diags, src) = run(settings);
            assert!(
                diags.iter().any(|d| d.code == want && d.is_error()),
                "{settings}: {diags:?}"
            );
            assert!(inst.as_ref().is_none_or(|i| i.settings.is_empty()));
            let all = shown(&inst, &diags, &src);
            assert!(!all.contains("S3CRET"), "{all}");
        }
    }

    #[test]
    fn a_repeated_key_counts_once_with_a_warning() {
        let (inst, diags, src) = run("  api_key: [\"${KEY_B}\", \"${KEY_B}\"]\n");
        let inst = inst.unwrap_or_else(|| panic!("{diags:?}"));
        assert!(matches!(inst.setting("api_key"), Some(Setting::Secrets(k)) if k.len() == 1));
        assert!(
            diags.iter().any(|d| d.code == code::DUPLICATE_VALUE),
            "{diags:?}"
        );
        let all = shown(&Some(inst), &diags, &src);
        assert!(!all.contains("S3CRET"), "{all}");
    }
}
