//! `closeflow sim` as a process: the port it got, saving on SIGTERM, its documented surface.

use closeflow_e2e::{closeflow, closeflow_bin, scratch};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A simulator process, stopped when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Its exit status, or `None` if it is still running after `limit`.
    fn wait_at_most(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

#[test]
fn port_zero_is_reported_and_sigterm_saves_the_state_with_its_limits() {
    let dir = scratch("sim");
    let state = dir.join("start.json");
    let saved = dir.join("saved.json");
    // A partial `limits`: the other values keep the recorded profile.
    std::fs::write(
        &state,
        r#"{"limits": {"search": 3}, "leads": [{"id": "lead_1", "name": "Acme"}]}"#,
    )
    .unwrap();
    let mut child = Running(
        Command::new(closeflow_bin())
            .args(["sim", "--port", "0", "--state"])
            .arg(&state)
            .arg("--save")
            .arg(&saved)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let port: u16 = first
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    assert_ne!(port, 0, "{first}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live: Value = rt
        .block_on(async {
            reqwest::get(format!("http://127.0.0.1:{port}/_sim/state"))
                .await?
                .json()
                .await
        })
        .unwrap();
    assert_eq!(live["leads"][0]["id"], "lead_1");
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let ended = child.wait_at_most(Duration::from_secs(20));
    assert!(
        ended.is_some_and(|s| s.success()),
        "SIGTERM ends it cleanly: {ended:?}"
    );
    let snap: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(snap["leads"][0]["name"], "Acme");
    assert_eq!(snap["limits"]["search"], 3, "{snap}");
    assert_eq!(snap["limits"]["other"], 240, "{snap}");
}

#[test]
fn help_documents_faults_and_limits() {
    let out = closeflow(&["sim", "--help"]);
    let t = String::from_utf8(out.stdout).unwrap();
    for key in [
        "/_sim/faults",
        "error_rate",
        "storm",
        "latency_ms",
        "drop_rate",
        "lost_reply_rate",
        "\"limits\"",
        "window_secs",
        "SIGTERM",
    ] {
        assert!(t.contains(key), "`sim --help` does not mention {key}:\n{t}");
    }
    let readme =
        std::fs::read_to_string(closeflow_e2e::workspace_root().join("README.md")).unwrap();
    for key in ["lost_reply_rate", "window_secs", "\"limits\""] {
        assert!(readme.contains(key), "README does not mention {key}");
    }
}

#[test]
fn a_bad_limits_value_is_refused() {
    let dir = scratch("sim-limits");
    let state = dir.join("bad.json");
    std::fs::write(&state, r#"{"limits": {"serch": 3}}"#).unwrap();
    let mut child = Running(
        Command::new(closeflow_bin())
            .args(["sim", "--port", "0", "--state"])
            .arg(&state)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let ended = child.wait_at_most(Duration::from_secs(20));
    assert_eq!(
        ended.and_then(|s| s.code()),
        Some(1),
        "the simulator must refuse to start"
    );
    let mut e = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut e).unwrap();
    assert!(e.contains("limits") && e.contains("serch"), "{e}");
}
