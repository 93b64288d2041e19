//! Helpers for closeflow's end-to-end tests: the real binary, the real simulator, loopback.

pub mod nats;
pub mod procs;
pub mod relay;
pub mod soak;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

static BUILT: OnceLock<PathBuf> = OnceLock::new();

/// Removes from a nested `cargo` command what cargo set for the running process
/// (`CARGO_MANIFEST_DIR` and friends): build scripts watch some of them (ring does), and a changed
/// value rebuilds them — then the next plain `cargo test` rebuilds them back.
pub fn clean_cargo_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let set_by_cargo = k.starts_with("CARGO_PKG_")
            || matches!(
                k.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_by_cargo {
            cmd.env_remove(&k);
        }
    }
}

/// Runs another `closeflow` binary than the debug build (the cluster bench runs a release
/// build); only before the first [`closeflow_bin`].
pub fn set_closeflow_bin(p: PathBuf) {
    let _ = BUILT.set(p);
}

/// The `closeflow` binary, built once per test run (a no-op when it is up to date), or the one
/// `CLOSEFLOW_TEST_BIN` names: to run today's tests against another build (an older one, to
/// see a new test fail before its fix).
pub fn closeflow_bin() -> PathBuf {
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CLOSEFLOW_TEST_BIN") {
                return PathBuf::from(p);
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            clean_cargo_env(&mut cmd);
            let status = cmd
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "closeflow-cli",
                    "--bin",
                    "closeflow",
                ])
                .current_dir(workspace_root())
                .status()
                .expect("cargo build runs");
            assert!(status.success(), "building closeflow failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map_or_else(|_| workspace_root().join("target"), PathBuf::from);
            target.join("debug").join("closeflow")
        })
        .clone()
}

/// Runs `closeflow ARGS…` in the workspace root, with colour off and a clean environment for
/// the variables the fixtures read.
pub fn closeflow(args: &[&str]) -> Output {
    Command::new(closeflow_bin())
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .env_remove("CLOSE_API_KEY")
        .env_remove("CLOSEFLOW_TEST_SURELY_UNSET")
        .env_remove("CLOSEFLOW_CLOSE_URL")
        .output()
        .expect("closeflow runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `closeflow ARGS…` with `input` on standard input.
pub fn closeflow_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(closeflow_bin())
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .env_remove("CLOSE_API_KEY")
        .env_remove("CLOSEFLOW_CLOSE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("closeflow runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("closeflow finishes")
}

/// A fresh directory for one test's files, under the system's temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("closeflow-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
