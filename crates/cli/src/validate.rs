//! `closeflow validate`.

use crate::Format;
use crate::input::{Loaded, instance_files, load_instance};
use anyhow::Result;
use closeflow_mapping::diag::{Diagnostic, Severity, code};
use closeflow_mapping::instance::cross_check;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

pub struct Validate<'a> {
    pub paths: &'a [PathBuf],
    pub format: Format,
    pub deny_warnings: bool,
    /// Also check against a Close organisation: `sim:STATE.json` or `close` (live, read-only).
    pub against: Option<&'a str>,
    pub close_url: Option<&'a str>,
    pub color: bool,
}

pub fn run(a: Validate<'_>) -> Result<ExitCode> {
    let files = instance_files(a.paths)?;
    let test_files = crate::tests_cmd::test_files(a.paths)?;
    let mut loaded: Vec<Loaded> = Vec::new();
    // A directory without a single instance file is a mistake worth saying: "0 errors" would
    // read as "all is well".
    for p in a.paths.iter().filter(|p| p.is_dir()) {
        if instance_files(std::slice::from_ref(p))?.is_empty() {
            let mut d = Diagnostic::error(
                code::MISSING_FILE,
                "no instance file (*.yaml, *.yml) in this directory",
            )
            .hint("name an instance file or a directory holding one; mapping tests (*.test.yaml) are checked with their instance");
            d.file = p.display().to_string();
            loaded.push(Loaded {
                file: d.file.clone(),
                source: String::new(),
                raw: String::new(),
                instance: None,
                diagnostics: vec![d],
            });
        }
    }
    for f in &files {
        loaded.push(load_instance(f)?);
    }
    let (cross, mappings) = {
        let instances: Vec<_> = loaded.iter().filter_map(|l| l.instance.as_ref()).collect();
        let mappings: usize = instances.iter().map(|i| i.mappings.len()).sum();
        (cross_check(&instances), mappings)
    };
    for d in cross {
        if let Some(l) = loaded.iter_mut().find(|l| l.file == d.file) {
            l.diagnostics.push(d);
        }
    }
    if let Some(against) = a.against {
        crate::against::check(&mut loaded, against, a.close_url)?;
    }
    // Mapping tests beside the instances are checked too, as thoroughly as `test` would.
    for t in &test_files {
        let c = crate::tests_cmd::check(t)?;
        loaded.push(Loaded {
            file: c.file,
            raw: c.source.clone(),
            source: c.source,
            instance: None,
            diagnostics: c.diagnostics,
        });
    }
    if a.deny_warnings {
        // Denied warnings are errors everywhere: in the count, the exit code and the rendering.
        for d in loaded.iter_mut().flat_map(|l| l.diagnostics.iter_mut()) {
            d.severity = Severity::Error;
        }
    }
    let errors: usize = loaded
        .iter()
        .map(|l| l.diagnostics.iter().filter(|d| d.is_error()).count())
        .sum();
    let warnings: usize = loaded
        .iter()
        .map(|l| l.diagnostics.iter().filter(|d| !d.is_error()).count())
        .sum();
    let tests = test_files.len();
    match a.format {
        Format::Json => {
            let all: Vec<_> = loaded.iter().flat_map(|l| l.diagnostics.iter()).collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "files": files.len(), "test_files": tests, "errors": errors, "warnings": warnings, "diagnostics": all,
                }))?
            );
        }
        Format::Human => {
            for l in &loaded {
                out!(
                    "{}",
                    crate::render::diagnostics(&l.file, &l.source, &l.diagnostics, a.color)
                );
            }
            let denied = if a.deny_warnings {
                " (warnings denied: counted as errors)"
            } else {
                ""
            };
            outln!(
                "{} file(s), {} mapping(s), {tests} test file(s): {errors} error(s), {warnings} warning(s){denied}",
                files.len(),
                mappings
            );
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
