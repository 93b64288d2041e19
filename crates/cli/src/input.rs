//! Reading instance files and events from disk or standard input.

use anyhow::{Context, Result, bail};
use closeflow_close::schema;
use closeflow_mapping::{Diagnostic, Instance, instance};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The files named by `paths`: in directories (one level deep, sorted) those `in_dir` accepts,
/// and the files named directly that `named` accepts.
pub fn files(
    paths: &[PathBuf],
    in_dir: fn(&Path) -> bool,
    named: fn(&Path) -> bool,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| in_dir(f))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.exists() {
            if named(p) {
                out.push(p.clone());
            }
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// Instance files named by `paths` (mapping tests `*.test.yaml` are not instances).
pub fn instance_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    files(paths, is_instance_file, |f| !is_test_file(f))
}

/// A mapping test file (`*.test.yaml`): `closeflow test` runs it, and it is no instance.
pub fn is_test_file(f: &Path) -> bool {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

pub fn is_instance_file(f: &Path) -> bool {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.contains(".test.")
}

pub struct Loaded {
    pub file: String,
    /// The file's text for excerpts, with secret values starred out.
    pub source: String,
    /// The file's text as it is, for further checks; never shown.
    pub raw: String,
    pub instance: Option<Instance>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn load_instance(path: &Path) -> Result<Loaded> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    Ok(load_source(file, source))
}

/// Loads an instance from text read elsewhere (a git revision); `file` names it in diagnostics.
pub fn load_source(file: String, source: String) -> Loaded {
    let env = |k: &str| std::env::var(k).ok();
    let schema = schema::destination();
    let (instance, diagnostics) = instance::load(&file, &source, &schema, &env);
    Loaded {
        file,
        source: closeflow_mapping::redact::redact(&source, &schema),
        raw: source,
        instance,
        diagnostics,
    }
}

/// Loads one instance for a command that needs it valid; its errors end the command.
pub fn require_instance(path: &Path, color: bool) -> Result<Instance> {
    require_loaded(load_instance(path)?, color)
}

/// The instance, or its diagnostics on standard error and an error that ends the command.
pub fn require_loaded(l: Loaded, color: bool) -> Result<Instance> {
    let errors = l.diagnostics.iter().filter(|d| d.is_error()).count();
    if let Some(i) = l.instance {
        return Ok(i);
    }
    eprint!(
        "{}",
        crate::render::diagnostics(&l.file, &l.source, &l.diagnostics, color)
    );
    bail!(
        "{} is not valid ({errors} error(s)); run `closeflow validate {}`",
        l.file,
        l.file
    )
}

/// An event given as a file path, `-` for standard input, or inline JSON.
pub fn read_event(arg: &str) -> Result<serde_json::Value> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read event file {arg}"))?
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).context("the event is not valid JSON")?;
    if !v.is_object() {
        bail!("an event is a JSON object");
    }
    Ok(v)
}
