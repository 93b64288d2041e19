//! Mapping tests (`<instance>.test.yaml`): an event and what must come of it: not triggered,
//! the mapped payload, and/or the plan against a given Close state. The runner returns expected
//! and actual side by side; frontends render the difference.
//!
//! ```yaml
//! state: default.state.json          # optional: the Close state plans are made against
//! tests:
//!   - name: Ada's new address is appended
//!     event: {type: identify, userId: u_42, traits: {email: ada@acme.com}}
//!     mapping: Identify → contact and lead   # optional when one mapping matches
//!     expect:
//!       payload: {contact_email: ada@acme.com, contact_external_id: u_42}
//!       plan:
//!         - unchanged lead_19aKq2
//!         - update_contact: cont_8f2Lm1
//!           changes: {emails: [ada@old.io, ada@acme.com]}
//!   - name: Page views are ignored
//!     event: {type: page, name: Home}
//!     expect: not_triggered
//! ```

use closeflow_close::plan::Step;
use closeflow_close::run;
use closeflow_close::state::State;
use closeflow_mapping::diag::{Diagnostic, Span, code};
use closeflow_mapping::events::Entry;
use closeflow_mapping::yaml::{self, Kind, Node};
use closeflow_mapping::{Instance, suggest};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct TestFile {
    /// `instance:`, when the test file names its instance (else it is `<name>.yaml` beside it).
    pub instance: Option<(String, Span)>,
    /// `state:`, the snapshot plans are made against, relative to the test file.
    pub state: Option<(String, Span)>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub event: Value,
    pub mapping: Option<String>,
    /// Where `mapping:` is, to point at an unknown mapping name.
    pub mapping_span: Option<Span>,
    pub not_triggered: bool,
    pub payload: Option<Value>,
    pub plan: Option<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub failures: Vec<Failure>,
}

/// One unmet expectation: what was expected, what happened (both as JSON for diffing).
#[derive(Debug, Clone)]
pub struct Failure {
    pub what: String,
    pub expected: Value,
    pub actual: Value,
}

const TOP_KEYS: &[&str] = &["instance", "state", "tests"];
const CASE_KEYS: &[&str] = &["name", "event", "mapping", "expect"];
const EXPECT_KEYS: &[&str] = &["payload", "plan", "not_triggered"];
/// Step kinds as a test names them (the plan's `kind`s).
pub const STEP_KINDS: &[&str] = &[
    "create_lead",
    "create_contact",
    "update_lead",
    "update_contact",
    "unchanged",
    "skipped",
];

/// Reads a test file, reporting every problem the way instance files are reported: located,
/// coded, with a hint (and a did-you-mean for misspelt keys and step kinds). The tests come back
/// whenever the file is a mapping at all, so that later checks (`check_against`, the `state:`
/// file) can report their problems too; run them only when there is no error.
pub fn load(file: &str, source: &str) -> (Option<TestFile>, Vec<Diagnostic>) {
    let mut r = TestFileReader {
        source,
        diags: Vec::new(),
    };
    let tf = match yaml::parse(source) {
        Ok(root) => r.file(&root),
        Err(d) => {
            r.diags.push(d);
            None
        }
    };
    for d in &mut r.diags {
        d.file = file.to_string();
        if d.hint.is_none() {
            d.hint = Some(closeflow_mapping::diag::default_hint(d.code).to_string());
        }
    }
    (tf, r.diags)
}

/// Problems only the instance can reveal: a test naming a mapping the instance does not have.
pub fn check_against(file: &str, tf: &TestFile, inst: &Instance) -> Vec<Diagnostic> {
    let names: Vec<&str> = inst.mappings.iter().map(|m| m.name.as_str()).collect();
    let mut out = Vec::new();
    for c in &tf.cases {
        let Some(m) = &c.mapping else { continue };
        if names.contains(&m.as_str()) {
            continue;
        }
        let hint = suggest::hint(m, &names).unwrap_or_else(|| {
            format!(
                "the mappings of {} are: {}",
                inst.file,
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let mut d = Diagnostic::error(
            code::UNKNOWN_MAPPING,
            format!(
                "test \"{}\": {} has no mapping named \"{m}\"",
                c.name, inst.file
            ),
        )
        .at_opt(c.mapping_span)
        .hint(hint);
        d.file = file.to_string();
        out.push(d);
    }
    out
}

struct TestFileReader<'s> {
    source: &'s str,
    diags: Vec<Diagnostic>,
}

impl TestFileReader<'_> {
    fn error(&mut self, code: &'static str, message: String, span: Span, hint: Option<String>) {
        self.diags
            .push(Diagnostic::error(code, message).at(span).maybe_hint(hint));
    }

    fn keys(&mut self, entries: &[(Node, Node)], allowed: &[&str], what: &str) {
        for (k, _) in entries {
            let key = k.key_text();
            if !allowed.contains(&key.as_str()) {
                let hint = suggest::hint(&key, allowed)
                    .unwrap_or_else(|| format!("{what} keys are: {}", allowed.join(", ")));
                self.error(
                    code::UNKNOWN_KEY,
                    format!("unknown key `{key}` in {what}"),
                    k.span,
                    Some(hint),
                );
            }
        }
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.error(
                    code::WRONG_TYPE,
                    format!("{what} must be text, but it is {}", node.type_name()),
                    node.span,
                    Some("write it as text, in quotes if YAML would read it otherwise".into()),
                );
                None
            }
        }
    }

    fn file(&mut self, root: &Node) -> Option<TestFile> {
        let Kind::Map(entries) = &root.kind else {
            self.error(
                code::WRONG_TYPE,
                format!(
                    "a test file is a mapping with `tests:`, but this is {}",
                    root.type_name()
                ),
                root.span,
                Some("start the file with `tests:` and a list of tests below it".into()),
            );
            return None;
        };
        self.keys(entries, TOP_KEYS, "a test file");
        let located = |r: &mut Self, key: &str| {
            let n = root.get(key)?;
            let what = format!("`{key}`");
            r.text(n, &what).map(|t| (t, n.span))
        };
        let instance = located(self, "instance");
        let state = located(self, "state");
        let cases = match root.get("tests") {
            None => {
                self.error(
                    code::MISSING_KEY,
                    "the test file has no `tests`".into(),
                    Span::from_offset(self.source, root.span.offset, 0),
                    Some("add `tests:` with a list of tests, each with a name, an event and what to expect".into()),
                );
                Vec::new()
            }
            Some(n) => match &n.kind {
                Kind::Seq(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| self.case(i, t))
                    .collect(),
                _ => {
                    self.error(
                        code::WRONG_TYPE,
                        format!("`tests` must be a list, but it is {}", n.type_name()),
                        n.span,
                        Some(
                            "start each test with `- name: …` on its own line under `tests:`"
                                .into(),
                        ),
                    );
                    Vec::new()
                }
            },
        };
        Some(TestFile {
            instance,
            state,
            cases,
        })
    }

    fn case(&mut self, i: usize, node: &Node) -> Option<Case> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                code::WRONG_TYPE,
                format!(
                    "test {} must be a mapping, but it is {}",
                    i + 1,
                    node.type_name()
                ),
                node.span,
                Some("a test has `name:`, `event:` and `expect:`".into()),
            );
            return None;
        };
        let name = match node.get("name") {
            Some(n) => self.text(n, "a test's `name`"),
            None => None,
        }
        .unwrap_or_else(|| format!("test {}", i + 1));
        let what = format!("test \"{name}\"");
        self.keys(entries, CASE_KEYS, &what);
        let start = Span::from_offset(self.source, node.span.offset, 0);
        let event = match node.get("event") {
            None => {
                self.error(
                    code::MISSING_KEY,
                    format!("{what} has no `event`"),
                    start,
                    Some("add `event: {type: identify, userId: u_1, traits: {…}}`".into()),
                );
                None
            }
            Some(e) => {
                let v = e.to_json();
                match closeflow_mapping::events::check(v.clone()) {
                    Entry::Event(_) => Some(v),
                    Entry::Invalid { message, .. } => {
                        self.error(
                            code::BAD_EVENT,
                            format!("{what}: {message}"),
                            e.span,
                            Some("an event is a mapping with a `type` (identify, track, group, page, screen, alias)".into()),
                        );
                        None
                    }
                }
            }
        };
        let (mapping, mapping_span) = match node.get("mapping") {
            Some(m) => (self.text(m, "`mapping`"), Some(m.span)),
            None => (None, None),
        };
        let mut case = Case {
            name: name.clone(),
            event: event.unwrap_or(Value::Null),
            mapping,
            mapping_span,
            not_triggered: false,
            payload: None,
            plan: None,
        };
        let expect_hint =
            "write `expect: not_triggered`, or a mapping with `payload:` and/or `plan:`";
        match node.get("expect") {
            None => self.error(
                code::MISSING_KEY,
                format!("{what} has no `expect`"),
                start,
                Some(expect_hint.into()),
            ),
            Some(e) => match &e.kind {
                Kind::Str(s) if s == "not_triggered" => case.not_triggered = true,
                Kind::Map(es) => {
                    self.keys(es, EXPECT_KEYS, "`expect`");
                    if let Some(n) = e.get("not_triggered") {
                        match n.kind {
                            Kind::Bool(b) => case.not_triggered = b,
                            _ => self.error(
                                code::WRONG_TYPE,
                                format!(
                                    "`not_triggered` must be true or false, but it is {}",
                                    n.type_name()
                                ),
                                n.span,
                                Some("write `not_triggered: true`".into()),
                            ),
                        }
                    }
                    if let Some(p) = e.get("payload") {
                        match p.kind {
                            Kind::Map(_) => case.payload = Some(p.to_json()),
                            _ => self.error(
                                code::WRONG_TYPE,
                                format!("`payload` must be a mapping, but it is {}", p.type_name()),
                                p.span,
                                Some("write the expected payload's fields, e.g. `payload: {contact_email: ada@acme.com}`".into()),
                            ),
                        }
                    }
                    if let Some(p) = e.get("plan") {
                        case.plan = self.plan(p);
                    }
                }
                _ => {
                    let hint = match &e.kind {
                        Kind::Str(s) => suggest::hint(s, &["not_triggered"]),
                        _ => None,
                    };
                    self.error(
                        code::WRONG_TYPE,
                        format!(
                            "`expect` must be `not_triggered` or a mapping, but it is {}",
                            describe(e)
                        ),
                        e.span,
                        Some(hint.unwrap_or_else(|| expect_hint.into())),
                    );
                }
            },
        }
        Some(case)
    }

    fn plan(&mut self, node: &Node) -> Option<Vec<Value>> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                code::WRONG_TYPE,
                format!("`plan` must be a list of steps, but it is {}", node.type_name()),
                node.span,
                Some("write one step per line: `- unchanged lead_1`, `- create_contact`, `- update_lead: lead_1`".into()),
            );
            return None;
        };
        for step in items {
            match &step.kind {
                Kind::Str(text) => {
                    let kind = text.split_whitespace().next().unwrap_or_default();
                    let at = Span::from_offset(
                        self.source,
                        yaml::scalar_span(self.source, step.span, text, 0, kind.len()).offset,
                        kind.len(),
                    );
                    self.step_kind(kind, at);
                }
                Kind::Map(entries) => {
                    let kinds: Vec<&(Node, Node)> = entries
                        .iter()
                        .filter(|(k, _)| k.key_text() != "changes")
                        .collect();
                    match kinds.as_slice() {
                        [(k, _)] => self.step_kind(&k.key_text(), k.span),
                        _ => self.error(
                            code::UNKNOWN_STEP,
                            format!("a step is one kind (with its id) and optional `changes`, but this has {} other keys", kinds.len()),
                            step.span,
                            Some("e.g. `- update_contact: cont_1` with `changes: {title: CTO}` below it".into()),
                        ),
                    }
                    if let Some(c) = step.get("changes")
                        && !matches!(c.kind, Kind::Map(_))
                    {
                        self.error(
                            code::WRONG_TYPE,
                            format!(
                                "`changes` must be a mapping of fields to new values, but it is {}",
                                c.type_name()
                            ),
                            c.span,
                            Some("e.g. `changes: {title: CTO}`".into()),
                        );
                    }
                }
                _ => self.error(
                    code::WRONG_TYPE,
                    format!(
                        "a step is text or a mapping, but this is {}",
                        step.type_name()
                    ),
                    step.span,
                    Some("e.g. `- unchanged lead_1` or `- update_lead: lead_1`".into()),
                ),
            }
        }
        Some(items.iter().map(Node::to_json).collect())
    }

    fn step_kind(&mut self, kind: &str, span: Span) {
        if STEP_KINDS.contains(&kind) {
            return;
        }
        let hint = suggest::hint(kind, STEP_KINDS)
            .unwrap_or_else(|| format!("step kinds are: {}", STEP_KINDS.join(", ")));
        self.error(
            code::UNKNOWN_STEP,
            format!("unknown step kind `{kind}`"),
            span,
            Some(hint),
        );
    }
}

fn describe(n: &Node) -> String {
    match &n.kind {
        Kind::Str(s) => format!("\"{s}\""),
        _ => n.type_name().to_string(),
    }
}

/// A step as a test states it: `kind`, `kind id`, `{kind: id, changes: {...}}`, `{skipped: reason}`.
fn step_matches(expected: &Value, s: &Step) -> bool {
    let kind = s.kind.as_str();
    match expected {
        Value::String(text) => {
            let mut parts = text.split_whitespace();
            let k = parts.next().unwrap_or_default();
            let rest = parts.next();
            k == kind
                && match rest {
                    None => true,
                    Some(r) if kind == "skipped" => s.reason.as_deref() == Some(r),
                    Some(id) => s.id.as_deref() == Some(id),
                }
        }
        Value::Object(m) => {
            let Some((k, v)) = m.iter().find(|(k, _)| *k != "changes") else {
                return false;
            };
            if k != kind {
                return false;
            }
            let target_ok = match (kind, v) {
                ("skipped", Value::String(r)) => s.reason.as_deref() == Some(r.as_str()),
                (_, Value::String(id)) => s.id.as_deref() == Some(id.as_str()),
                (_, Value::Null) => true,
                _ => false,
            };
            let changes_ok = match m.get("changes") {
                None => true,
                Some(Value::Object(want)) => want
                    .iter()
                    .all(|(f, after)| s.changes.iter().any(|c| &c.field == f && &c.after == after)),
                Some(_) => false,
            };
            target_ok && changes_ok
        }
        _ => false,
    }
}

/// How a step reads in a test file (for showing what actually happened).
pub fn step_text(s: &Step) -> Value {
    let kind = s.kind.as_str();
    let target = if kind == "skipped" {
        s.reason.clone()
    } else {
        s.id.clone()
    };
    if s.changes.is_empty() {
        return json!(match target {
            Some(t) => format!("{kind} {t}"),
            None => kind.to_string(),
        });
    }
    let changes: Map<String, Value> = s
        .changes
        .iter()
        .map(|c| (c.field.clone(), c.after.clone()))
        .collect();
    json!({ kind: target, "changes": changes })
}

pub async fn run_case(inst: &Instance, state: &State, case: &Case) -> Outcome {
    let mut failures = Vec::new();
    let entry = closeflow_mapping::events::check(case.event.clone());
    if let Entry::Invalid { message, .. } = &entry {
        failures.push(Failure {
            what: "the event is invalid".into(),
            expected: json!("a valid event"),
            actual: json!(message),
        });
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    }
    let mut overlay = closeflow_close::overlay::Overlay::default();
    let report = run::dry_run(inst, state, &mut overlay, 0, &entry).await;
    let matched: Vec<&run::MappingReport> = report.mappings.iter().filter(|m| m.matched).collect();
    let names: Vec<&str> = matched.iter().map(|m| m.name.as_str()).collect();
    let chosen = match &case.mapping {
        Some(n) => {
            if !inst.mappings.iter().any(|m| &m.name == n) {
                failures.push(Failure {
                    what: format!("no mapping is named \"{n}\""),
                    expected: json!(n),
                    actual: json!(
                        inst.mappings
                            .iter()
                            .map(|m| m.name.clone())
                            .collect::<Vec<_>>()
                    ),
                });
                return Outcome {
                    name: case.name.clone(),
                    failures,
                };
            }
            matched.iter().find(|m| &m.name == n).copied()
        }
        None => matched.first().copied(),
    };
    if case.not_triggered {
        let fired = match &case.mapping {
            Some(_) => chosen.is_some(),
            None => !matched.is_empty(),
        };
        if fired {
            failures.push(Failure {
                what: "expected no mapping to fire".into(),
                expected: json!([]),
                actual: json!(names),
            });
        }
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    }
    let Some(m) = chosen else {
        failures.push(Failure {
            what: "expected a mapping to fire".into(),
            expected: json!(case.mapping.clone().unwrap_or_else(|| "any mapping".into())),
            actual: json!(names),
        });
        return Outcome {
            name: case.name.clone(),
            failures,
        };
    };
    if case.mapping.is_none() && matched.len() > 1 {
        failures.push(Failure {
            what: "several mappings fire; name the one this test is about with `mapping:`".into(),
            expected: json!("one mapping"),
            actual: json!(names),
        });
    }
    if let Some(e) = &m.error {
        failures.push(Failure {
            what: "the mapping failed".into(),
            expected: json!("no error"),
            actual: json!(e),
        });
    }
    if let Some(want) = &case.payload {
        let got = m.payload.clone().map_or(Value::Null, Value::Object);
        if &got != want {
            failures.push(Failure {
                what: "payload".into(),
                expected: want.clone(),
                actual: got,
            });
        }
    }
    if let Some(want) = &case.plan {
        let ok = want.len() == m.steps.len()
            && want.iter().zip(&m.steps).all(|(w, s)| step_matches(w, s));
        if !ok {
            // A step that meets its expectation is shown as the test wrote it, so that the diff
            // marks only the steps that differ.
            let actual = m
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| match want.get(i) {
                    Some(w) if step_matches(w, s) => w.clone(),
                    _ => step_text(s),
                })
                .collect();
            failures.push(Failure {
                what: "plan".into(),
                expected: Value::Array(want.clone()),
                actual: Value::Array(actual),
            });
        }
    }
    Outcome {
        name: case.name.clone(),
        failures,
    }
}
