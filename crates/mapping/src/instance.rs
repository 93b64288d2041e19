//! Instance files: raw YAML tree → validated, compiled instance, with every problem collected.

use crate::diag::{Diagnostic, Span, code};
use crate::schema::{ActionSchema, DestinationSchema, FieldKind};
use crate::suggest;
use crate::trigger::Trigger;
use crate::value::{EvalError, Program};
use crate::yaml::{self, Kind, Node};
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
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Plain(s) => write!(f, "{s:?}"),
            Setting::Secret(_) => f.write_str("[redacted]"),
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
                    .at(node.span),
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
                    .at(node.span),
                );
                None
            }
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
        let mut rest = raw.as_str();
        let mut ok = true;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            // `${VAR:-default}` as in the shell: the default when VAR is unset or empty.
            let (var, default) = match inner.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (inner, None),
            };
            match (
                (self.env)(var).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    ok = false;
                    let span = locate_in(self.source, node.span, &format!("${{{inner}}}"));
                    self.push(
                        Diagnostic::error(
                            code::UNSET_ENV_VAR,
                            format!("environment variable `{var}` is not set"),
                        )
                        .at(span)
                        .hint(format!(
                            "export {var}=… before running, or put the value in the file"
                        )),
                    );
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
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
        let endpoint = root
            .get("endpoint")
            .and_then(|n| self.expand(n, "`endpoint`"));
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

    /// `write_key: KEY` or `write_key: [KEY, …]`; empty keys are refused (an empty key would
    /// let any sender in).
    fn write_keys(&mut self, node: &Node) -> Vec<SecretString> {
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
        if let Kind::Str(s) = &node.kind
            && !s.is_empty()
            && !s.contains("${")
        {
            self.push(
                Diagnostic::warning(
                    code::LITERAL_SECRET,
                    format!("`{key}` is written in the file"),
                )
                .at(node.span)
                .hint(format!(
                    "read it from the environment: {key}: ${{{}}}",
                    key.to_ascii_uppercase()
                )),
            );
        }
    }

    fn settings(&mut self, node: Option<&Node>, root: &Node) -> BTreeMap<String, Setting> {
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
                    .at(node.span),
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
                    Diagnostic::error(code::WRONG_TYPE, "`enabled` must be true or false").at(span),
                );
                true
            }
        };
        let action = match node.get("action") {
            Some(a) => self
                .string(a, "`action`")
                .and_then(|a| match self.schema.action(&a) {
                    Some(act) => Some(act),
                    None => {
                        let names: Vec<&str> = self.schema.actions.iter().map(|x| x.name).collect();
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
                        None
                    }
                }),
            None => {
                let names: Vec<&str> = self.schema.actions.iter().map(|x| x.name).collect();
                self.push(
                    Diagnostic::error(code::MISSING_KEY, "this mapping has no `action`")
                        .at(Span::from_offset(self.source, node.span.offset, 0))
                        .hint(format!("actions: {}", names.join(", "))),
                );
                None
            }
        };
        let trigger = self.trigger(node.get("trigger"), action);
        let compiled = action.and_then(|a| self.fields(node.get("fields"), a, settings));
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
                let at = span.map(|s| {
                    // Quoted YAML scalars start one byte before the text.
                    let quote = usize::from(self.source[s.offset..].starts_with(['"', '\'']));
                    s.narrow(self.source, quote + e.start, e.len.max(1))
                });
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
            if let Some(msg) = literal_kind_problem(spec.kind, v) {
                ok = false;
                self.push(
                    Diagnostic::error(code::WRONG_TYPE, format!("{} ({key}) {msg}", spec.label))
                        .at(v.span),
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

/// A literal value that can never fit the field's type (a directive or path is checked at run time).
fn literal_kind_problem(kind: FieldKind, v: &Node) -> Option<String> {
    let is_dynamic = match &v.kind {
        Kind::Str(s) => s.starts_with('$') || s.contains("{{"),
        Kind::Map(e) => e.iter().any(|(k, _)| k.key_text().starts_with('@')),
        _ => false,
    };
    if is_dynamic {
        return None;
    }
    match (kind, &v.kind) {
        (FieldKind::Boolean, Kind::Str(s)) if s != "true" && s != "false" => {
            Some(format!("must be true or false, but it is \"{s}\""))
        }
        (FieldKind::Boolean, Kind::Number(_) | Kind::Map(_) | Kind::Seq(_)) => Some(format!(
            "must be true or false, but it is {}",
            v.type_name()
        )),
        (FieldKind::String, Kind::Map(_)) => Some("must be text, but it is a mapping".into()),
        (FieldKind::String, Kind::Seq(items)) if items.len() > 1 => {
            Some("must be text, but it is a list".into())
        }
        (FieldKind::Object, Kind::Str(_) | Kind::Number(_) | Kind::Bool(_) | Kind::Seq(_)) => {
            Some(format!(
                "must be a mapping of custom field ids to values, but it is {}",
                v.type_name()
            ))
        }
        _ => None,
    }
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
