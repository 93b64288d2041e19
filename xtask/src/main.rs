//! `cargo xtask`: code generation and benchmarks.
#![forbid(unsafe_code)]

mod bench;
mod bench_cluster;
mod bench_delivery;
mod bench_diff;
mod bench_dry_run;
mod setup;
mod soak;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The JSON Schema of instance files, as generated from the code.
pub fn schema_text() -> String {
    let v = closeflow_mapping::jsonschema::instance_schema(&closeflow_close::schema::destination());
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["schema"] => {
            let path = root().join("schema/instance.schema.json");
            std::fs::create_dir_all(path.parent().context("schema dir")?)?;
            std::fs::write(&path, schema_text())?;
            println!("wrote {}", path.display());
        }
        ["schema", "--check"] => {
            let path = root().join("schema/instance.schema.json");
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != schema_text() {
                bail!("{} is stale: run `cargo xtask schema`", path.display());
            }
            println!("schema up to date");
        }
        ["bench", rest @ ..] => bench::run(rest)?,
        ["setup"] => setup::install(&root())?,
        ["test", rest @ ..] => setup::test(&root(), rest)?,
        ["soak", rest @ ..] => soak::run(rest)?,
        _ => bail!(
            "usage: cargo xtask test [ARGS for cargo test] | setup | soak [--events N] [--seed S] [--kills K] | schema [--check] | bench engine|diff|dry-run [--leads N] [--events M] | bench cluster"
        ),
    }
    Ok(())
}
