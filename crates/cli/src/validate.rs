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
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "files": files.len(), "errors": errors, "warnings": warnings, "diagnostics": all,
                }))?
            );
        }
        Format::Human => {
            for l in &loaded {
                print!(
                    "{}",
                    crate::render::diagnostics(&l.file, &l.source, &l.diagnostics, color)
                );
            }
            println!(
                "{} file(s), {} mapping(s): {errors} error(s), {warnings} warning(s)",
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
