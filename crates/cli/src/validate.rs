//! `closeflow validate`.

use crate::Format;
use crate::input::{Loaded, instance_files, load_instance};
use anyhow::Result;
use closeflow_mapping::instance::cross_check;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(
    paths: &[PathBuf],
    format: Format,
    deny_warnings: bool,
    color: bool,
) -> Result<ExitCode> {
    let files = instance_files(paths)?;
    let tests = crate::tests_cmd::test_files(paths)
        .unwrap_or_default()
        .len();
    let mut loaded: Vec<Loaded> = Vec::new();
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
    // Mapping tests beside the instances are checked too.
    for t in crate::tests_cmd::test_files(paths).unwrap_or_default() {
        let source = std::fs::read_to_string(&t).unwrap_or_default();
        let file = t.display().to_string();
        let problem = match crate::tests_cmd::read_test_file(&t) {
            Err(e) => Some(e.to_string()),
            Ok(doc) => closeflow_close::testing::parse(&doc).err().or_else(|| {
                let inst = crate::tests_cmd::instance_of(&t, &doc);
                (!inst.exists()).then(|| format!("its instance {} does not exist", inst.display()))
            }),
        };
        let mut diagnostics = Vec::new();
        if let Some(p) = problem {
            let mut d = closeflow_mapping::Diagnostic::error("bad_test_file", p)
                .hint("see the *.test.yaml files in mappings/ for the format");
            d.file.clone_from(&file);
            diagnostics.push(d);
        }
        loaded.push(Loaded {
            file,
            source,
            instance: None,
            diagnostics,
        });
    }
    let errors: usize = loaded
        .iter()
        .map(|l| l.diagnostics.iter().filter(|d| d.is_error()).count())
        .sum();
    let warnings: usize = loaded
        .iter()
        .map(|l| l.diagnostics.iter().filter(|d| !d.is_error()).count())
        .sum();
    match format {
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
                    crate::render::diagnostics(&l.file, &l.source, &l.diagnostics, color)
                );
            }
            outln!(
                "{} file(s), {} mapping(s), {tests} test file(s): {errors} error(s), {warnings} warning(s)",
                files.len(),
                mappings
            );
        }
    }
    let failed = errors > 0 || (deny_warnings && warnings > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
