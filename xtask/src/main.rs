//! `cargo xtask`: code generation and benchmarks.
#![forbid(unsafe_code)]

mod args;
mod bench;
mod bench_cluster;
mod bench_delivery;
mod bench_diff;
mod bench_dry_run;
mod bench_journey;
mod child;
mod setup;
mod shape;
mod soak;
mod traffic;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release `closeflow` binary (the benchmarks run it) and returns its path, under
/// `$CARGO_TARGET_DIR` when that is set. The nested cargo runs without the variables cargo set
/// for this process, which would otherwise rerun build scripts (see
/// [`closeflow_e2e::clean_cargo_env`]).
fn release_closeflow() -> Result<PathBuf> {
    let root = root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    closeflow_e2e::clean_cargo_env(&mut cmd);
    let status = cmd
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "closeflow-cli",
            "--bin",
            "closeflow",
        ])
        .current_dir(&root)
        .status()
        .context("cargo build runs")?;
    if !status.success() {
        bail!("building closeflow (release) failed");
    }
    // A relative CARGO_TARGET_DIR is relative to where cargo ran: the workspace root.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    Ok(target.join("release").join("closeflow"))
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
        ["shape"] => shape::run(&root())?,
        ["setup"] => setup::install(&root())?,
        ["test", rest @ ..] => setup::test(&root(), rest)?,
        ["soak", rest @ ..] => soak::run(rest)?,
        _ => bail!(
            "usage: cargo xtask test [ARGS for cargo test] | setup | shape | soak [--events N] [--seed S] [--kills K] | schema [--check] | bench engine|diff [--events N] [--generate DIR]|dry-run [--leads N] [--events M] [--generate DIR] | bench cluster|journey"
        ),
    }
    Ok(())
}
