//! Instance files: raw YAML tree → validated, compiled instance, with every problem collected.

use crate::diag::{Diagnostic, Span, code};
use crate::env;
use crate::schema::{ActionSchema, DestinationSchema};
use crate::suggest;
use crate::trigger::Trigger;
use crate::value::{EvalError, Program};
use crate::yaml::{self, Kind, Node};

mod literal;
mod settings;
use literal::{BOOLEAN_HINT, literal_kind_problem};
use secrecy::SecretString;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The reference product's limit of mappings per destination instance.
pub const MAX_MAPPINGS: usize = 50;

const TOP_KEYS: &[&str] = &["name", "write_key", "endpoint", "settings", "mappings"];
const MAPPING_KEYS: &[&str] = &["name", "enabled", "trigger", "action", "fields"];

/// A setting's value; secrets are kept out of `Debug` and every output.
#[derive(Clone)]
pub enum Setting {
    Plain(String),
    Secret(SecretString),
    /// A list of secrets, for a setting that may hold several (`api_key: [${KEY_A}, ${KEY_B}]`);
    /// never empty, each value non-empty.
    Secrets(Vec<SecretString>),
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Plain(s) => write!(f, "{s:?}"),
            Setting::Secret(_) => f.write_str("[redacted]"),
            Setting::Secrets(v) => write!(f, "[{} redacted]", v.len()),
        }
    }
}

impl Setting {
    /// A secret setting's values: one, or each of a list's.
    pub fn secrets(&self) -> Vec<&SecretString> {
        match self {
            Setting::Plain(_) => Vec::new(),
            Setting::Secret(s) => vec![s],
            Setting::Secrets(v) => v.iter().collect(),
        }
    }
}

/// A loaded, validated instance.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    pub file: String,
    /// What senders authenticate with at the server's intake: one key per connected source
    /// (web, server, mobile), as Segment connects several sources to one destination.
    pub write_keys: Vec<SecretString>,
    pub endpoint: Option<String>,
    pub settings: BTreeMap<String, Setting>,
    pub mappings: Vec<Mapping>,
    /// Where the instance's `name` is, for cross-file checks.
    pub name_span: Span,
}

#[derive(Debug)]
pub struct Mapping {
    pub name: String,
    pub enabled: bool,
    pub trigger: Trigger,
    pub action: String,
    pub program: Program,
    /// The fields as written, merged over the action's defaults (for display).
    pub fields: Map<String, Value>,
}

/// What one mapping made of one event.
#[derive(Debug)]
pub struct MappingOutcome<'a> {
    pub mapping: &'a Mapping,
    pub matched: bool,
    /// `None` when the trigger did not match.
    pub payload: Option<Result<Map<String, Value>, EvalError>>,
}

impl Instance {
    /// Every enabled mapping's verdict on the event, in file order.
    pub fn evaluate<'a>(&'a self, event: &Value) -> Vec<MappingOutcome<'a>> {
        self.mappings
            .iter()
            .filter(|m| m.enabled)
            .map(|m| {
                let matched = m.trigger.matches(event);
                MappingOutcome {
                    mapping: m,
                    matched,
                    payload: matched.then(|| m.program.evaluate(event)),
                }
            })
            .collect()
    }

    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.get(name)
    }

    /// A non-secret setting's text (empty values count as unset).
    pub fn plain_setting(&self, name: &str) -> Option<&str> {
        match self.settings.get(name) {
            Some(Setting::Plain(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

/// Loads one instance file. Returns the instance when there is no error (warnings allowed),
/// and every diagnostic either way.
pub fn load(
    file: &str,
    source: &str,
    schema: &DestinationSchema,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Instance>, Vec<Diagnostic>) {
    let mut l = Loader {
        file,
        source,
        schema,
        env,
        diags: Vec::new(),
        mapping: None,
    };
    let inst = match yaml::parse(source) {
        Ok(root) => l.instance(&root),
        Err(d) => {
            l.push(d);
            None
        }
    };
    let failed = l.diags.iter().any(Diagnostic::is_error);
    (if failed { None } else { inst }, l.diags)
}

/// Problems that span files: instance names must be unique.
pub fn cross_check(instances: &[&Instance]) -> Vec<Diagnostic> {
    let mut seen: BTreeMap<&str, &Instance> = BTreeMap::new();
    let mut out = Vec::new();
    for i in instances {
        if let Some(first) = seen.get(i.name.as_str()) {
            let mut d = Diagnostic::error(
                code::DUPLICATE_NAME,
                format!("instance name \"{}\" is used twice", i.name),
            )
            .at(i.name_span)
            .hint(format!(
                "first used in {} line {}; instance names are unique",
                first.file, first.name_span.line
            ));
            d.file = i.file.clone();
            out.push(d);
        } else {
            seen.insert(&i.name, i);
        }
    }
    out
}

struct Loader<'a> {
    file: &'a str,
    source: &'a str,
    schema: &'a DestinationSchema,
    env: &'a dyn Fn(&str) -> Option<String>,
    diags: Vec<Diagnostic>,
    mapping: Option<String>,
}

impl Loader<'_> {
    fn push(&mut self, mut d: Diagnostic) {
        d.file = self.file.to_string();
        if d.hint.is_none() {
            d.hint = Some(crate::diag::default_hint(d.code).to_string());
        }
        if d.mapping.is_none() {
            d.mapping.clone_from(&self.mapping);
        }
        self.diags.push(d);
    }

    fn entries<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            Kind::Map(e) => Some(e),
            _ => {
                self.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("{what} must be a mapping, but it is {}", node.type_name()),
                    )
                    .at(node.span)
                    .hint("write `key: value` pairs, each on its own line, indented under it"),
                );
                None
            }
        }
    }

    fn check_keys(&mut self, entries: &[(Node, Node)], allowed: &[&str], what: &str) {
        for (k, _) in entries {
            let key = k.key_text();
            if !allowed.contains(&key.as_str()) {
                let hint = suggest::hint(&key, allowed)
                    .unwrap_or_else(|| format!("{what} keys are: {}", allowed.join(", ")));
                self.push(
                    Diagnostic::error(code::UNKNOWN_KEY, format!("unknown key `{key}` in {what}"))
                        .at(k.span)
                        .hint(hint),
                );
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("{what} must be text, but it is {}", node.type_name()),
                    )
                    .at(node.span)
                    .hint(self.quote_hint(node)),
                );
                None
            }
        }
    }

    /// How to make a scalar YAML reads as a boolean, number or null into text.
    fn quote_hint(&self, node: &Node) -> String {
        match node.kind {
            Kind::Bool(_) | Kind::Number(_) | Kind::Null => {
                let raw = self
                    .source
                    .get(node.span.offset..node.span.offset + node.span.len)
                    .filter(|r| !r.is_empty() && !r.contains('\n'))
                    .unwrap_or("…");
                format!("put it in quotes to make it text: \"{raw}\"")
            }
            _ => "write a single text value".into(),
        }
    }

    /// `${VAR}` expansion from the environment; an unset variable is an error at the value.
    fn expand(&mut self, node: &Node, what: &str) -> Option<String> {
        let raw = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Number(n) => n.to_string(),
            Kind::Bool(b) => b.to_string(),
            _ => return self.string(node, what),
        };
        let mut out = String::new();
        let mut ok = true;
        for p in env::pieces(&raw) {
            let (name, default, whole) = match p {
                env::Piece::Text { text, .. } => {
                    out.push_str(text);
                    continue;
                }
                env::Piece::Var {
                    at,
                    len,
                    name,
                    default,
                } => (name, default.map(|(_, d)| d), &raw[at..at + len]),
            };
            // `${VAR:-default}` as in the shell: the default when VAR is unset or empty.
            match (
                (self.env)(name).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    ok = false;
                    let span = locate_in(self.source, node.span, whole);
                    self.push(
                        Diagnostic::error(
                            code::UNSET_ENV_VAR,
                            format!("environment variable `{name}` is not set"),
                        )
                        .at(span)
                        .hint(format!(
                            "export {name}=… before running, or put the value in the file"
                        )),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    fn instance(&mut self, root: &Node) -> Option<Instance> {
        let entries = self.entries(root, "an instance file")?;
        self.check_keys(entries, TOP_KEYS, "an instance");
        let name = match root.get("name") {
            Some(n) => self.string(n, "`name`"),
            None => {
                self.push(
                    Diagnostic::error(code::MISSING_KEY, "the instance has no `name`")
                        .at(Span::from_offset(self.source, root.span.offset, 0))
                        .hint("add `name: my-close` at the top"),
                );
                None
            }
        };
        let write_keys = root
            .get("write_key")
            .map(|n| self.write_keys(n))
            .unwrap_or_default();
        let endpoint = root.get("endpoint").and_then(|n| {
            let url = self.expand(n, "`endpoint`")?;
            match check_url(&url) {
                Ok(()) => Some(url),
                Err(why) => {
                    self.push(
                        Diagnostic::error(code::BAD_URL, format!("`endpoint` is not a usable URL: {why}"))
                            .at(n.span)
                            .hint("the Close API base URL, e.g. https://api.close.com/api/v1/ or a simulator's http://127.0.0.1:9000/api/v1/"),
                    );
                    None
                }
            }
        });
        let settings = self.settings(root.get("settings"), root);
        let mappings = match root.get("mappings") {
            Some(n) => self.mappings(n, &settings),
            None => {
                self.push(
                    Diagnostic::error(code::MISSING_KEY, "the instance has no `mappings`")
                        .at(Span::from_offset(self.source, root.span.offset, 0))
                        .hint("add a `mappings:` list; each mapping has a name, a trigger, an action and fields"),
                );
                Vec::new()
            }
        };
        Some(Instance {
            name: name?,
            file: self.file.to_string(),
            write_keys,
            endpoint,
            settings,
            mappings,
            name_span: root.get("name").map_or(root.span, |n| n.span),
        })
    }

    fn mappings(&mut self, node: &Node, settings: &BTreeMap<String, Setting>) -> Vec<Mapping> {
        let items = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Vec::new(),
            _ => {
                self.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("`mappings` must be a list, but it is {}", node.type_name()),
                    )
                    .at(node.span)
                    .hint("start each mapping with `- name: …` on its own line under `mappings:`"),
                );
                return Vec::new();
            }
        };
        if items.len() > MAX_MAPPINGS {
            let extra = &items[MAX_MAPPINGS];
            self.push(
                Diagnostic::error(
                    code::TOO_MANY_MAPPINGS,
                    format!("an instance has at most {MAX_MAPPINGS} mappings; this is mapping {} of {}", MAX_MAPPINGS + 1, items.len()),
                )
                .at(Span::from_offset(self.source, extra.span.offset, extra.span.len.min(40)))
                .hint("split the instance in two, or merge mappings that share an action with `or` in one trigger"),
            );
        }
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        let mut out = Vec::new();
        for item in items {
            if let Some(m) = self.mapping(item, settings, &mut seen) {
                out.push(m);
            }
        }
        self.mapping = None;
        out
    }

    fn mapping(
        &mut self,
        node: &Node,
        settings: &BTreeMap<String, Setting>,
        seen: &mut BTreeMap<String, Span>,
    ) -> Option<Mapping> {
        self.mapping = None;
        let entries = self.entries(node, "a mapping")?;
        let name = match node.get("name") {
            Some(n) => self.string(n, "a mapping's `name`"),
            None => {
                self.push(
                    Diagnostic::error(code::MISSING_KEY, "this mapping has no `name`")
                        .at(Span::from_offset(self.source, node.span.offset, 0))
                        .hint("every mapping needs a name, unique in its instance"),
                );
                None
            }
        };
        self.mapping.clone_from(&name);
        self.check_keys(entries, MAPPING_KEYS, "a mapping");
        if let (Some(n), Some(nn)) = (&name, node.get("name")) {
            if let Some(first) = seen.get(n) {
                let line = first.line;
                self.push(
                    Diagnostic::error(
                        code::DUPLICATE_NAME,
                        format!("mapping name \"{n}\" is used twice"),
                    )
                    .at(nn.span)
                    .hint(format!(
                        "first used on line {line}; mapping names are unique per instance"
                    )),
                );
            } else {
                seen.insert(n.clone(), nn.span);
            }
        }
        let enabled = match node.get("enabled").map(|n| (&n.kind, n.span)) {
            None => true,
            Some((Kind::Bool(b), _)) => *b,
            Some((_, span)) => {
                self.push(
                    Diagnostic::error(code::WRONG_TYPE, "`enabled` must be true or false")
                        .at(span)
                        .hint(BOOLEAN_HINT),
                );
                true
            }
        };
        // With an unknown or missing action, the fields are still checked, against the action
        // it most likely meant, so that fixing the action does not reveal a second round.
        let names: Vec<&str> = self.schema.actions.iter().map(|x| x.name).collect();
        let only = match self.schema.actions.as_slice() {
            [one] => Some(one),
            _ => None,
        };
        let (action, check_as) = match node.get("action") {
            Some(a) => match self.string(a, "`action`") {
                Some(a) => match self.schema.action(&a) {
                    Some(act) => (Some(act), Some(act)),
                    None => {
                        let guess = suggest::did_you_mean(&a, names.iter().copied())
                            .and_then(|n| self.schema.action(n))
                            .or(only);
                        let hint = suggest::hint(&a, &names)
                            .unwrap_or_else(|| format!("actions: {}", names.join(", ")));
                        self.push(
                            Diagnostic::error(
                                code::UNKNOWN_ACTION,
                                format!("unknown action `{a}`"),
                            )
                            .at(node.get("action").map_or(node.span, |n| n.span))
                            .hint(hint),
                        );
                        (None, guess)
                    }
                },
                None => (None, only),
            },
            None => {
                self.push(
                    Diagnostic::error(code::MISSING_KEY, "this mapping has no `action`")
                        .at(Span::from_offset(self.source, node.span.offset, 0))
                        .hint(format!("actions: {}", names.join(", "))),
                );
                (None, only)
            }
        };
        let trigger = self.trigger(node.get("trigger"), check_as);
        let compiled = check_as.and_then(|a| self.fields(node.get("fields"), a, settings));
        let (program, fields) = compiled?;
        Some(Mapping {
            name: name?,
            enabled,
            trigger: trigger?,
            action: action?.name.to_string(),
            program,
            fields,
        })
    }

    fn trigger(&mut self, node: Option<&Node>, action: Option<&ActionSchema>) -> Option<Trigger> {
        let (src, span) = match node {
            Some(n) => (self.string(n, "`trigger`")?, Some(n.span)),
            None => (action?.default_trigger.to_string(), None),
        };
        match Trigger::parse(&src) {
            Ok(t) => Some(t),
            Err(e) => {
                let at =
                    span.map(|s| yaml::scalar_span(self.source, s, &src, e.start, e.len.max(1)));
                self.push(
                    Diagnostic::error(e.code, format!("trigger: {}", e.message))
                        .at_opt(at)
                        .maybe_hint(e.hint),
                );
                None
            }
        }
    }

    fn fields(
        &mut self,
        node: Option<&Node>,
        action: &ActionSchema,
        settings: &BTreeMap<String, Setting>,
    ) -> Option<(Program, Map<String, Value>)> {
        let given: &[(Node, Node)] = match node {
            None => &[],
            Some(n) if matches!(n.kind, Kind::Null) => &[],
            Some(n) => self.entries(n, "`fields`")?,
        };
        let mut ok = true;
        let names: Vec<&str> = action.fields.iter().map(|f| f.name).collect();
        for (k, v) in given {
            let key = k.key_text();
            let Some(spec) = action.field(&key) else {
                ok = false;
                let hint = suggest::hint(&key, &names)
                    .unwrap_or_else(|| format!("fields of {}: {}", action.name, names.join(", ")));
                self.push(
                    Diagnostic::error(
                        code::UNKNOWN_FIELD,
                        format!("action `{}` has no field `{key}`", action.name),
                    )
                    .at(k.span)
                    .hint(hint),
                );
                continue;
            };
            if let Some(setting) = spec.requires_setting {
                let set = matches!(settings.get(setting), Some(Setting::Plain(s)) if !s.is_empty());
                if !set && !matches!(v.kind, Kind::Null) {
                    self.push(
                        Diagnostic::warning(
                            code::KEY_WITHOUT_SETTING,
                            format!("`{key}` is mapped but the setting `{setting}` is empty, so it will be ignored"),
                        )
                        .at(k.span)
                        .hint(format!("set `settings.{setting}` to the Close custom field id (cf_…)")),
                    );
                }
            }
            if !spec.key_prefixes.is_empty()
                && let Kind::Map(entries) = &v.kind
            {
                let directive = entries.iter().any(|(k, _)| k.key_text().starts_with('@'));
                for (ck, _) in entries.iter().filter(|_| !directive) {
                    let t = ck.key_text();
                    if let Some(Err(why)) = spec.key_check.map(|check| check(&t)) {
                        ok = false;
                        self.push(
                            Diagnostic::error(code::BAD_FIELD_KEY, format!("`{key}` key `{t}`: {why}"))
                                .at(ck.span)
                                .hint("keys are custom field ids (cf_…), optionally with `.add` or `.remove` for multi-value fields"),
                        );
                        continue;
                    }
                    let base = t.split('.').next().unwrap_or_default();
                    let reserved = spec.reserved_keys.iter().find(|(setting, _)| {
                        matches!(settings.get(*setting), Some(Setting::Plain(s)) if s == base)
                    });
                    if let Some((setting, owner)) = reserved {
                        ok = false;
                        self.push(
                            Diagnostic::error(
                                code::RESERVED_FIELD_KEY,
                                format!("`{key}` may not set `{base}`: it is the lookup key field (`settings.{setting}`)"),
                            )
                            .at(ck.span)
                            .hint(format!("map the key with `{owner}`; writing it another way would move the record out of its own lookup")),
                        );
                        continue;
                    }
                    if !spec.key_prefixes.iter().any(|p| t.starts_with(p)) {
                        self.push(
                            Diagnostic::warning(
                                code::CUSTOM_FIELD_ID,
                                format!("`{t}` does not look like a Close custom field id"),
                            )
                            .at(ck.span)
                            .hint(format!(
                                "custom field ids start with {}",
                                spec.key_prefixes.join(", ")
                            )),
                        );
                    }
                }
            }
            if let Some((msg, hint)) = literal_kind_problem(spec.kind, v) {
                ok = false;
                self.push(
                    Diagnostic::error(code::WRONG_TYPE, format!("{} ({key}) {msg}", spec.label))
                        .at(v.span)
                        .hint(hint),
                );
            }
        }
        // Fields left out take the action's default mapping.
        let mut merged = Map::new();
        for f in &action.fields {
            if let Some((_, v)) = given.iter().find(|(k, _)| k.key_text() == f.name) {
                merged.insert(f.name.to_string(), v.to_json());
            } else if let Some(d) = &f.default {
                merged.insert(f.name.to_string(), d.clone());
            }
        }
        let mut problems = Vec::new();
        let program = Program::compile(&merged, &mut problems);
        for p in problems {
            let span = node.map(|n| {
                if p.code == code::UNKNOWN_DIRECTIVE || p.code == code::DIRECTIVE_KEYS {
                    n.key_span_at(&p.pointer)
                } else {
                    n.span_at(&p.pointer)
                }
            });
            let msg = format!("{} {}", p.pointer.trim_start_matches('/'), p.message);
            let d = if p.warning {
                Diagnostic::warning(p.code, msg)
            } else {
                ok = false;
                Diagnostic::error(p.code, msg)
            };
            self.push(d.at_opt(span).maybe_hint(p.hint));
        }
        ok.then_some((program, merged))
    }
}

/// An `http`/`https` URL with a host (the reason when it is not). Never echoes credentials.
pub fn check_url(text: &str) -> Result<(), String> {
    let u = url::Url::parse(text.trim()).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("the scheme is `{}`, not http or https", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".into());
    }
    Ok(())
}

/// The span of `needle` inside a node's source text, or the node's span.
fn locate_in(source: &str, span: Span, needle: &str) -> Span {
    let end = (span.offset + span.len.max(needle.len()) + 2).min(source.len());
    source
        .get(span.offset..end)
        .and_then(|s| s.find(needle))
        .map_or(span, |i| {
            Span::from_offset(source, span.offset + i, needle.len())
        })
}
