//! `closeflow test`: mapping tests, with a diff for each failure.

use anyhow::{Context, Result, bail};
use closeflow_close::state::State;
use closeflow_close::testing::{self, Failure};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `*.test.yaml` files named by `paths`.
pub fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    crate::input::files(paths, is_test_file, is_test_file)
}

pub fn is_test_file(f: &Path) -> bool {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

/// The instance a test file is about: `instance:` in it, else its own name without `.test`.
pub fn instance_of(test: &Path, doc: &serde_json::Value) -> PathBuf {
    let dir = test.parent().unwrap_or(Path::new("."));
    if let Some(i) = doc.get("instance").and_then(|v| v.as_str()) {
        return dir.join(i);
    }
    let name = test
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    dir.join(
        name.replace(".test.yaml", ".yaml")
            .replace(".test.yml", ".yml"),
    )
}

pub fn read_test_file(path: &Path) -> Result<serde_json::Value> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let node = closeflow_mapping::yaml::parse(&source).map_err(|d| {
        let at = d
            .span
            .map(|s| format!(":{}:{}", s.line, s.column))
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {}", path.display(), d.message)
    })?;
    Ok(node.to_json())
}

fn render(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

pub fn diff(f: &Failure) -> String {
    let (e, a) = (render(&f.expected), render(&f.actual));
    let d = similar::TextDiff::from_lines(&e, &a);
    let mut out = String::new();
    let _ = writeln!(out, "      {} differs (- expected, + actual):", f.what);
    for change in d.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let _ = write!(out, "      {sign} {change}");
    }
    out
}

pub fn run(paths: &[PathBuf], color: bool) -> Result<ExitCode> {
    let files = test_files(paths)?;
    if files.is_empty() {
        bail!("no mapping tests (*.test.yaml) found");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        outln!("{}", file.display());
        let doc = read_test_file(file)?;
        let tf = testing::parse(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let inst = crate::input::require_instance(&instance_of(file, &doc), color)?;
        let state = match &tf.state {
            Some(s) => {
                let p = file.parent().unwrap_or(Path::new(".")).join(s);
                let v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                )
                .with_context(|| format!("{} is not valid JSON", p.display()))?;
                State::from_snapshot(&v).map_err(anyhow::Error::msg)?
            }
            None => State::default(),
        };
        for case in &tf.cases {
            let o = rt.block_on(testing::run_case(&inst, &state, case));
            if o.failures.is_empty() {
                passed += 1;
                outln!("  ✓ {}", o.name);
            } else {
                failed += 1;
                outln!("  ✗ {}", o.name);
                for f in &o.failures {
                    out!("{}", diff(f));
                }
            }
        }
    }
    outln!("{passed} passed, {failed} failed");
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
