//! `closeflow test`: mapping tests, with a diff for each failure. Test files are checked the
//! way instance files are (every problem, located, with hints) before any test runs; `validate`
//! uses the same check.

use crate::input::is_test_file;
use anyhow::{Context, Result, bail};
use closeflow_close::state::State;
use closeflow_close_tools::testing::{self, TestFile};
use closeflow_mapping::diag::{Diagnostic, Span, code};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `*.test.yaml` files named by `paths`: those in directories, those named directly, and those
/// beside an instance file named directly (`inst.yml` → `inst.test.yaml` or `inst.test.yml`).
pub fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = crate::input::files(paths, is_test_file, is_test_file)?;
    for p in paths.iter().filter(|p| p.is_file() && !is_test_file(p)) {
        for t in sibling_tests(p) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// A file's name without `.yaml`/`.yml` (and without `.test` for a test file).
fn stem(f: &Path) -> Option<&str> {
    let name = f.file_name()?.to_str()?;
    let base = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))?;
    Some(base.strip_suffix(".test").unwrap_or(base))
}

fn sibling_tests(instance: &Path) -> Vec<PathBuf> {
    let dir = instance.parent().unwrap_or(Path::new(""));
    let Some(stem) = stem(instance) else {
        return vec![];
    };
    ["test.yaml", "test.yml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .filter(|p| p.is_file())
        .collect()
}

/// The instance a test file is about: `instance:` in it, else the file beside it with its own
/// name without `.test` (`.yaml` or `.yml`, whichever exists).
pub fn instance_of(test: &Path, named: Option<&str>) -> PathBuf {
    let dir = test.parent().unwrap_or(Path::new(""));
    if let Some(i) = named {
        return dir.join(i);
    }
    let stem = stem(test).unwrap_or_default();
    let yaml = dir.join(format!("{stem}.yaml"));
    let yml = dir.join(format!("{stem}.yml"));
    if !yaml.exists() && yml.exists() {
        yml
    } else {
        yaml
    }
}

/// A test file, read and checked.
pub struct Checked {
    pub file: String,
    pub source: String,
    pub tests: Option<TestFile>,
    pub instance: PathBuf,
    pub state: Option<State>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Reads a test file and checks all of it: its own shape, that its instance and `state:` files
/// exist (and read), and that every `mapping:` it names is one of the instance's.
pub fn check(path: &Path) -> Result<Checked> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    let (tests, mut diagnostics) = testing::load(&file, &source);
    let start = Span::from_offset(&source, 0, 0);
    let mut problem = |code: &'static str, message: String, span: Span, hint: String| {
        let mut d = Diagnostic::error(code, message).at(span).hint(hint);
        d.file.clone_from(&file);
        diagnostics.push(d);
    };
    let named = tests
        .as_ref()
        .and_then(|t| t.instance.as_ref())
        .map(|(i, s)| (i.as_str(), *s));
    let instance = instance_of(path, named.map(|(i, _)| i));
    let mut state = None;
    if let Some(tf) = &tests {
        if !instance.is_file() {
            problem(
                code::MISSING_FILE,
                format!("the instance this file tests, {}, does not exist", instance.display()),
                named.map_or(start, |(_, s)| s),
                "name the test file after its instance (default.test.yaml tests default.yaml), or say `instance: file.yaml`".into(),
            );
        }
        if let Some((s, span)) = &tf.state {
            let p = path.parent().unwrap_or(Path::new("")).join(s);
            match read_state(&p) {
                Ok(st) => state = Some(st),
                Err((code, why)) => problem(
                    code,
                    why,
                    *span,
                    "`state:` names a simulator snapshot (JSON) beside the test file".into(),
                ),
            }
        }
        if instance.is_file() {
            let l = crate::input::load_instance(&instance)?;
            if let Some(inst) = &l.instance {
                diagnostics.extend(testing::check_against(&file, tf, inst));
            }
        }
    }
    Ok(Checked {
        file,
        source,
        tests,
        instance,
        state,
        diagnostics,
    })
}

fn read_state(p: &Path) -> Result<State, (&'static str, String)> {
    let shown = p.display();
    let text = std::fs::read_to_string(p).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            _ => format!("cannot be read: {e}"),
        };
        (code::MISSING_FILE, format!("the state file {shown} {why}"))
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        (
            code::BAD_STATE,
            format!("the state file {shown} is not valid JSON: {e}"),
        )
    })?;
    State::from_snapshot(&v).map_err(|e| {
        (
            code::BAD_STATE,
            format!("the state file {shown} is not a snapshot: {e}"),
        )
    })
}

pub fn run(paths: &[PathBuf], color: bool) -> Result<ExitCode> {
    let files = test_files(paths)?;
    if files.is_empty() {
        bail!("no mapping tests (*.test.yaml) found");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for path in &files {
        outln!("{}", path.display());
        let c = check(path)?;
        if c.has_errors() {
            broken += 1;
            out!(
                "{}",
                crate::render::diagnostics(&c.file, &c.source, &c.diagnostics, color)
            );
            continue;
        }
        let Some(tf) = &c.tests else { continue };
        let inst = crate::input::require_instance(&c.instance, color)?;
        let state = c.state.unwrap_or_default();
        for case in &tf.cases {
            let o = rt.block_on(testing::run_case(&inst, &state, case));
            if o.failures.is_empty() {
                passed += 1;
                outln!("  ✓ {}", o.name);
            } else {
                failed += 1;
                outln!("  ✗ {}", o.name);
                for f in &o.failures {
                    out!("{}", crate::test_diff::diff(f));
                }
            }
        }
    }
    if broken > 0 {
        outln!("{passed} passed, {failed} failed, {broken} test file(s) not run (see above)");
    } else {
        outln!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 || broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
