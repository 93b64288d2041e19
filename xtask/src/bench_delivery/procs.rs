//! The processes a delivery run starts — the simulator, `closeflow send`, `closeflow serve` —
//! each in a directory of its own, and how their progress is read while they run: `send`'s
//! resume file (one line per event it finished, written and flushed after each; see
//! crates/cli/src/resume.rs) and `serve`'s `/metrics` (events applied + skipped +
//! dead-lettered). Close calls are counted by the simulator (`GET /_sim/stats`).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often progress is read.
const TICK: Duration = Duration::from_millis(50);
/// No progress for this long ends the bench with an error (an event that failed is never
/// recorded as done).
const STALL: Duration = Duration::from_secs(120);

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "closeflow-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    /// Kept with `BENCH_KEEP=1` in the environment (its path on standard error), to look into
    /// a run's logs and inputs afterwards.
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Blocking HTTP for the bench's own requests.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Http> {
        Ok(Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::new(),
        })
    }
    fn text(&self, url: &str) -> Result<String> {
        self.rt
            .block_on(async { Ok(self.client.get(url).send().await?.text().await?) })
    }
    fn wait_up(&self, url: &str) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let up = self.rt.block_on(self.client.get(url).send());
            if up.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            std::thread::sleep(TICK);
        }
        bail!("{url} did not come up")
    }
    /// `events` to `serve`'s intake, 100 to a `/v1/batch`.
    fn post(&self, base: &str, events: &[Value]) -> Result<()> {
        self.rt.block_on(async {
            for chunk in events.chunks(100) {
                let r = self
                    .client
                    .post(format!("{base}/v1/batch"))
                    .basic_auth("wk_bench", Some(""))
                    .json(&json!({"batch": chunk}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("intake refused a batch: {}", r.status());
                }
            }
            Ok(())
        })
    }
}

/// Close requests the simulator served, per endpoint group, and the 429s among them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calls {
    pub search: u64,
    pub other: u64,
    pub throttled: u64,
}

impl Calls {
    fn since(self, before: Calls) -> Calls {
        Calls {
            search: self.search - before.search,
            other: self.other - before.other,
            throttled: self.throttled - before.throttled,
        }
    }
}

/// `closeflow sim --state ORG.json` (the recorded rate limits: no `limits` in the snapshot).
struct Sim {
    _p: Proc,
    port: u16,
}

impl Sim {
    fn start(bin: &Path, dir: &Path, org: &Value, http: &Http) -> Result<Sim> {
        let state = dir.join("org.json");
        std::fs::write(&state, org.to_string())?;
        let port = free_port()?;
        let p = Command::new(bin)
            .args(["sim", "--port", &port.to_string(), "--state"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let sim = Sim { _p: Proc(p), port };
        http.wait_up(&sim.stats_url())?;
        Ok(sim)
    }
    fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/_sim/stats", self.port)
    }
    fn calls(&self, http: &Http) -> Result<Calls> {
        let s: Value = serde_json::from_str(&http.text(&self.stats_url())?)?;
        let n = |g: &str, k: &str| s[g][k].as_u64().unwrap_or(0);
        Ok(Calls {
            search: n("search", "requests"),
            other: n("other", "requests"),
            throttled: n("search", "throttled") + n("other", "throttled"),
        })
    }
    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/", self.port)
    }
}

/// One part of a run: its events done over time (seconds since the part began: when its
/// first event was handed over), and the Close calls made from its start until all were done.
pub struct Phase {
    pub events: usize,
    pub samples: Vec<(f64, usize)>,
    pub calls: Calls,
    /// Something the figures should be read with (an exit status, dead letters).
    pub note: Option<String>,
}

impl Phase {
    pub fn done(&self) -> usize {
        self.samples.last().map_or(0, |s| s.1)
    }
    /// When the last event was done (the first reading with every event done), or the last
    /// reading for a part stopped early.
    pub fn end(&self) -> f64 {
        self.samples
            .iter()
            .find(|s| s.1 >= self.events)
            .or(self.samples.last())
            .map_or(0.0, |s| s.0)
    }
    /// Events per second in steady state: over the last whole `window`s before the end that
    /// leave out the part's first `window` (the burst budget), i.e. over k × `window` with
    /// k = ⌊(end − window) / window⌋, so that a span holds as many rate-window resets as
    /// windows; the done count at its start is the last reading at or before it. `None` when
    /// the part ended before 2 × `window` (no whole window after the first).
    pub fn steady(&self, window: f64) -> Option<(f64, f64)> {
        let end = self.end();
        let k = ((end - window) / window).floor();
        if k < 1.0 {
            return None;
        }
        let from = end - k * window;
        let at = |t: f64| {
            self.samples
                .iter()
                .rev()
                .find(|s| s.0 <= t)
                .map_or(0, |s| s.1)
        };
        Some(((at(end) - at(from)) as f64 / (end - from), end - from))
    }
}

/// How a part's progress is read, and the samples taken so far.
struct Sampler {
    started: Instant,
    samples: Vec<(f64, usize)>,
    last_progress: Instant,
}

impl Sampler {
    fn new() -> Sampler {
        let now = Instant::now();
        Sampler {
            started: now,
            samples: vec![(0.0, 0)],
            last_progress: now,
        }
    }
    fn push(&mut self, done: usize) -> Result<()> {
        if done > self.samples.last().map_or(0, |s| s.1) {
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() > STALL {
            bail!("no progress for {} s", STALL.as_secs());
        }
        self.samples
            .push((self.started.elapsed().as_secs_f64(), done));
        Ok(())
    }
    fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// How `send` is run.
pub struct SendRun<'a> {
    /// The events, in parts: every part but the last is settled (all recorded in the resume
    /// file) before the next is handed over. One part: a file, `send --instance bench.yaml
    /// events.jsonl`; more: standard input, each part followed by [`PAD`] padding events (no
    /// mapping matches them) so that `send`'s read-ahead, waiting for more input, holds only
    /// padding while the part's last events are applied.
    pub parts: &'a [&'a [Value]],
    pub naive: bool,
    /// Stop (kill) `send` when its last part has run this long.
    pub cap: Option<Duration>,
}

/// Padding events after each settled part of a `send` run on standard input (more than its
/// default `--lookahead` of 100 reads ahead).
pub const PAD: usize = 200;

fn resume_lines(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".closeflow-send-") && n.ends_with(".done")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count()
        })
        .sum()
}

/// `closeflow send` (in a fresh directory: its resume file the default one) against a fresh
/// simulator of `org`; one [`Phase`] per part.
pub fn send(bin: &Path, org: &Value, run: &SendRun<'_>) -> Result<Vec<Phase>> {
    let dir = TempDir::new()?;
    let http = Http::new()?;
    let sim = Sim::start(bin, &dir.0, org, &http)?;
    std::fs::write(
        dir.0.join("bench.yaml"),
        super::mix::instance(&sim.api_url()),
    )?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(&dir.0)
        .args(["send", "--instance", "bench.yaml"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("send.err"))?);
    if run.naive {
        cmd.arg("--naive");
    }
    let piped = run.parts.len() > 1;
    if piped {
        cmd.stdin(Stdio::piped());
    } else {
        let file = dir.0.join("events.jsonl");
        std::fs::write(&file, lines(run.parts[0].iter()))?;
        cmd.arg("events.jsonl").stdin(Stdio::null());
    }
    let mut child = Proc(cmd.spawn().context("closeflow send starts")?);
    let mut stdin = child.0.stdin.take();
    let mut phases = Vec::new();
    let mut base = 0;
    for (k, part) in run.parts.iter().enumerate() {
        let last = k + 1 == run.parts.len();
        let before = sim.calls(&http)?;
        let mut s = Sampler::new();
        let writer = stdin.take().map(|mut input| {
            let mut text = lines(part.iter());
            if !last {
                text += &lines(super::mix::padding(&k.to_string(), PAD).iter());
            }
            std::thread::spawn(move || -> std::io::Result<_> {
                input.write_all(text.as_bytes())?;
                // After the last part the input ends (the pipe closes) here.
                Ok((!last).then_some(input))
            })
        });
        let (mut exited, mut capped) = (None, false);
        loop {
            std::thread::sleep(TICK);
            let done = resume_lines(&dir.0).saturating_sub(base).min(part.len());
            s.push(done)
                .with_context(|| format!("closeflow send, part {}", k + 1))?;
            if done >= part.len() {
                break;
            }
            if let Some(status) = child.0.try_wait()? {
                exited = Some(status);
                break;
            }
            if last && run.cap.is_some_and(|c| s.secs() >= c.as_secs_f64()) {
                capped = true;
                break;
            }
        }
        if let Some(w) = writer {
            stdin = w.join().map_err(|_| anyhow::anyhow!("writer thread"))??;
        }
        let note = match exited {
            Some(st) if !st.success() => Some(format!(
                "send exited {st}: {}",
                std::fs::read_to_string(dir.0.join("send.err"))?
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Some(_) if s.samples.last().map_or(0, |x| x.1) < part.len() => {
                Some("send exited before every event was recorded".into())
            }
            _ if capped => Some(stopped(&s, part.len())),
            _ => None,
        };
        phases.push(Phase {
            events: part.len(),
            samples: s.samples,
            calls: sim.calls(&http)?.since(before),
            note,
        });
        base += part.len() + if last { 0 } else { PAD };
    }
    if phases.last().is_some_and(|p| p.done() >= p.events) {
        let status = child.0.wait()?;
        if !status.success() && phases.last().is_some_and(|p| p.note.is_none()) {
            let err = std::fs::read_to_string(dir.0.join("send.err"))?;
            if let Some(p) = phases.last_mut() {
                p.note = Some(format!(
                    "send exited {status}: {}",
                    err.lines().last().unwrap_or("")
                ));
            }
        }
    }
    Ok(phases)
}

fn stopped(s: &Sampler, events: usize) -> String {
    format!(
        "stopped at {:.0} s, {} of {events} done",
        s.secs(),
        s.samples.last().map_or(0, |x| x.1)
    )
}

fn lines<'a>(events: impl Iterator<Item = &'a Value>) -> String {
    events.map(|e| e.to_string() + "\n").collect()
}

/// `closeflow serve --config config --listen 127.0.0.1:PORT` (in a fresh directory: its data
/// directory the default one) against a fresh simulator of `org`; each part posted to the
/// intake in batches of 100, then waited for until every event is settled (applied, skipped
/// or dead-lettered) and the queue is empty — the last part at most `cap` long; one [`Phase`]
/// per part.
pub fn serve(
    bin: &Path,
    org: &Value,
    parts: &[&[Value]],
    cap: Option<Duration>,
) -> Result<Vec<Phase>> {
    serve_keys(bin, org, parts, cap, 1)
}

/// [`serve`] with one instance over `keys` API keys of the organisation.
pub fn serve_keys(
    bin: &Path,
    org: &Value,
    parts: &[&[Value]],
    cap: Option<Duration>,
    keys: usize,
) -> Result<Vec<Phase>> {
    let dir = TempDir::new()?;
    let http = Http::new()?;
    let sim = Sim::start(bin, &dir.0, org, &http)?;
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(
        config.join("bench.yaml"),
        super::mix::instance_with_keys(&sim.api_url(), keys),
    )?;
    let port = free_port()?;
    let server = Command::new(bin)
        .current_dir(&dir.0)
        .args(["serve", "--config", "config", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("closeflow serve starts")?;
    let _server = Proc(server);
    let base_url = format!("http://127.0.0.1:{port}");
    http.wait_up(&format!("{base_url}/readyz"))?;
    let mut phases = Vec::new();
    let mut settled_before = 0;
    let mut dead_before = 0;
    for (k, part) in parts.iter().enumerate() {
        let before = sim.calls(&http)?;
        let mut s = Sampler::new();
        http.post(&base_url, part)?;
        let (settled, dead, capped) = loop {
            let m = http.text(&format!("{base_url}/metrics"))?;
            let sum = |name: &str| -> usize {
                m.lines()
                    .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>() as usize
            };
            let dead = sum("closeflow_events_dead_lettered_total");
            let settled = sum("closeflow_events_applied_total")
                + sum("closeflow_events_skipped_total")
                + dead;
            let done = settled.saturating_sub(settled_before).min(part.len());
            s.push(done)
                .with_context(|| format!("closeflow serve, part {}", k + 1))?;
            if done >= part.len() && sum("closeflow_queue_depth{") == 0 {
                break (settled, dead, None);
            }
            if k + 1 == parts.len() && cap.is_some_and(|c| s.secs() >= c.as_secs_f64()) {
                break (settled, dead, Some(stopped(&s, part.len())));
            }
            std::thread::sleep(TICK);
        };
        phases.push(Phase {
            events: part.len(),
            samples: s.samples,
            calls: sim.calls(&http)?.since(before),
            note: (dead > dead_before)
                .then(|| format!("{} dead-lettered", dead - dead_before))
                .or(capped),
        });
        settled_before = settled;
        dead_before = dead;
    }
    Ok(phases)
}
