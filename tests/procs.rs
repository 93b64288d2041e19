//! Real processes on loopback for end-to-end tests: the simulator (`closeflow sim`) and the
//! server (`closeflow serve`), each on a free port, killed when dropped.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now (the OS picks it; the race until it is bound is benign
/// on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `cond` until it holds or `limit` passes (a liveness deadline, not a speed claim).
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .expect("closeflow starts");
        Proc { child: Some(child) }
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The recorded rate-limit profile with its window scaled down, so that tests stay short.
pub fn fast_limits() -> Value {
    json!({"search": 16, "other": 240, "delete_lead": 80, "window_secs": 0.5})
}

/// A simulator snapshot with the custom fields the server tests use and no records.
pub fn empty_org() -> Value {
    json!({
        "api_keys": ["test_key"],
        "custom_fields": {
            "lead": [{"id": "cf_company", "name": "Company ID", "type": "text"},
                     {"id": "cf_plan", "name": "Plan", "type": "text"}],
            "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]
        },
        "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
        "leads": [],
        "limits": fast_limits()
    })
}

pub struct SimProc {
    proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl SimProc {
    pub async fn start(snapshot: &Value) -> SimProc {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state.json");
        std::fs::write(&state, snapshot.to_string()).expect("write snapshot");
        let port = free_port();
        let mut cmd = Command::new(crate::closeflow_bin());
        cmd.args(["sim", "--port", &port.to_string(), "--state"])
            .arg(&state);
        let proc = Proc::spawn(cmd, &dir.path().join("sim.log"));
        let s = SimProc {
            proc,
            port,
            _dir: dir,
        };
        let url = format!("{}/_sim/state", s.base());
        wait_for("the simulator to listen", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        s
    }
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// The API base URL, as an instance's `endpoint`.
    pub fn api(&self) -> String {
        format!("{}/api/v1/", self.base())
    }
    pub async fn state(&self) -> Value {
        reqwest::get(format!("{}/_sim/state", self.base()))
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("state is JSON")
    }
    /// Requests the simulator has answered in an endpoint group (`search`, `other`).
    pub async fn answered(&self, group: &str) -> u64 {
        let s: Value = reqwest::get(format!("{}/_sim/stats", self.base()))
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("stats are JSON");
        s[group]["requests"].as_u64().unwrap_or(0)
    }
    /// Waits until a delivery is writing to a slow Close: its lookups (the read-ahead's search)
    /// were answered, so its first write is under way for as long as the injected latency.
    pub async fn wait_writing(&self) {
        wait_for(
            "a delivery's lookups answered",
            Duration::from_secs(30),
            || async { self.answered("search").await >= 1 },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pub async fn faults(&self, f: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_sim/faults", self.base()))
            .json(&f)
            .send()
            .await
            .expect("simulator answers");
        assert!(r.status().is_success(), "faults accepted");
    }
    pub fn kill(&mut self) {
        self.proc.kill9();
    }
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

/// Every lead of a simulator state, and every contact (with its lead's id).
pub fn leads(state: &Value) -> Vec<Value> {
    state["leads"].as_array().cloned().unwrap_or_default()
}

pub fn contacts(state: &Value) -> Vec<Value> {
    leads(state)
        .iter()
        .flat_map(|l| l["contacts"].as_array().cloned().unwrap_or_default())
        .collect()
}

pub struct ServerProc {
    proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    restarts: u32,
}

impl ServerProc {
    /// Starts `closeflow serve` over `dir/config` with its data in `dir/data`, logs in
    /// `dir/server-N.log` (JSON lines), quick retries, and waits until it is ready.
    pub async fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProc {
        let mut s = ServerProc {
            proc: Proc { child: None },
            port: free_port(),
            dir: dir.to_path_buf(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            restarts: 0,
        };
        s.launch().await;
        s
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("server-{}.log", self.restarts))
    }

    async fn launch(&mut self) {
        let mut cmd = Command::new(crate::closeflow_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(self.dir.join("config"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--log-format", "json", "--reload-interval", "200ms"])
            .args(["--retry-backoff", "50ms", "--retry-backoff-cap", "500ms"])
            .args(&self.args)
            .env_remove("CLOSEFLOW_CLOSE_URL")
            .env_remove("CLOSEFLOW_ADMIN_TOKEN")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.proc = Proc::spawn(cmd, &self.log_path());
        let url = format!("{}/readyz", self.base());
        let start = Instant::now();
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            let exited = self
                .proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the server was not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Starts it again on the same port, config and data.
    pub async fn restart(&mut self) {
        self.kill9();
        self.restarts += 1;
        self.launch().await;
    }

    /// Starts it again with other extra arguments (same port, config and data).
    pub async fn restart_with(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.restart().await;
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.proc.pid()?;
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let mut child = self.proc.child.take()?;
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGTERM without waiting: the server is in its shutdown while the caller goes on.
    pub fn signal_term(&self) {
        if let Some(pid) = self.proc.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits (at most `limit`) for the process to exit, after [`ServerProc::signal_term`].
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.proc.child.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        (0..=self.restarts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("server-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base()))
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap_or_default()
    }
}

/// The value of one Prometheus sample (`name{labels}`), summed over matching lines when
/// `labels` is a prefix of several label sets; 0 when absent.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, "}"));
            (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Posts a JSON body to the server with HTTP Basic auth.
pub async fn post(base: &str, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body);
    if let Some(k) = key {
        r = r.basic_auth(k, Some(""));
    }
    let resp = r.send().await.expect("server answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The simulator in this process, served on a loopback port (for tests that drive the action
/// core directly): its handle, and its API base URL.
pub async fn sim_in_process(snapshot: &Value) -> (closeflow_sim::Sim, String) {
    let sim = closeflow_sim::Sim::from_snapshot(Some(snapshot)).expect("a valid snapshot");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let s = sim.clone();
    tokio::spawn(async move { closeflow_sim::serve(listener, s).await });
    (sim, format!("http://{addr}/api/v1/"))
}
