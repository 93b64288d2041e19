//! The fault soak and the crash loop: the real server and simulator processes, a seeded
//! workload sent the way Segment's libraries send (each request retried with the same body
//! until it is answered 200), injected faults, optional `kill -9`s of the server, then a
//! reconciliation of what Close holds against what the events should produce.
//!
//! `cargo xtask soak` runs it at size and prints the table; the test suite runs a short
//! crash loop through the same code.

pub mod reconcile;
pub mod workload;

use crate::procs::{ServerProc, SimProc, metric};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reconcile::Table;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use workload::{WRITE_KEY, Workload};

#[derive(Debug, Clone)]
pub struct Config {
    pub events: usize,
    pub seed: u64,
    /// `kill -9`s of the server at random moments (each followed by a restart).
    pub kills: usize,
    /// Inject the simulator's faults (5xx, 429 storms, latency, dropped connections, lost
    /// replies after a write).
    pub faults: bool,
    /// How long the events may take to be delivered before the run counts what is left.
    pub deadline: Duration,
    /// Requests in flight at once from the senders.
    pub senders: usize,
}

impl Config {
    pub fn new(events: usize, seed: u64) -> Config {
        Config {
            events,
            seed,
            kills: 0,
            faults: true,
            deadline: Duration::from_secs(600),
            senders: 24,
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub table: Table,
    pub elapsed: Duration,
    /// The server's directory (config, data, logs), kept when the run failed.
    pub dir: Option<std::path::PathBuf>,
}

/// The simulator's organisation: the custom fields the instance uses, and a rate-limit window
/// short enough for a soak to finish in minutes (the budget per window is the recorded one).
fn org() -> Value {
    json!({
        "api_keys": ["test_key"],
        "custom_fields": {
            "lead": [{"id": "cf_company", "name": "Company ID", "type": "text"},
                     {"id": "cf_plan", "name": "Plan", "type": "text"}],
            "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]
        },
        "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
        "leads": [],
        "limits": {"search": 16, "other": 240, "delete_lead": 80, "window_secs": 0.2}
    })
}

/// The faults for one second of the run: 20% 5xx, some latency, 3% dropped connections, 5%
/// lost replies (the write happened, the reply never came), and now and then a 429 storm.
fn faults(rng: &mut StdRng) -> Value {
    json!({
        "error_rate": 0.2,
        "latency_ms": rng.random_range(0..30),
        "drop_rate": 0.03,
        "lost_reply_rate": 0.05,
        "storm": if rng.random_bool(0.1) { 10 } else { 0 },
    })
}

fn route(body: &Value) -> &'static str {
    match body["type"].as_str() {
        Some("identify") => "/v1/identify",
        Some("group") => "/v1/group",
        _ => "/v1/track",
    }
}

/// Sends one request until it is answered 200, as Segment's libraries retry (same body, so
/// same `messageId`). A 4xx other than 408/429 can never succeed: reported, not retried. Nor is
/// a request still unanswered at `until` (the run's deadline): a server that never comes back
/// is a failure of the run, not a hang.
async fn send_until_accepted(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    mut body: Value,
    body_key: bool,
    until: Instant,
) -> Result<(), String> {
    if body_key {
        body["writeKey"] = json!(WRITE_KEY);
    }
    loop {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if !body_key {
            req = req.basic_auth(WRITE_KEY, Some(""));
        }
        let last = match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() && ![408, 429].contains(&r.status().as_u16()) => {
                let st = r.status();
                return Err(format!(
                    "{path}: {st}: {}",
                    r.text().await.unwrap_or_default()
                ));
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("failed: {e}"),
        };
        if Instant::now() >= until {
            return Err(format!(
                "{path}: not accepted by the run's deadline; the last attempt {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends every lane's events in order (lanes concurrently), in single-event requests and
/// small batches, with both auth forms; a lane stops at its first request still unaccepted at
/// `until`.
async fn send_all(
    w: Arc<Workload>,
    base: String,
    seed: u64,
    senders: usize,
    acked: Arc<AtomicUsize>,
    until: Instant,
) -> Vec<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let gate = Arc::new(tokio::sync::Semaphore::new(senders));
    let mut tasks = Vec::new();
    for (n, lane) in w.lanes.iter().enumerate() {
        let (w, http, base, gate, acked) = (
            w.clone(),
            http.clone(),
            base.clone(),
            gate.clone(),
            acked.clone(),
        );
        let lane = lane.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9e37_79b9));
            let mut errors = Vec::new();
            let mut i = 0;
            while i < lane.len() {
                let take = if rng.random_bool(0.2) {
                    rng.random_range(2..=3).min(lane.len() - i)
                } else {
                    1
                };
                let events: Vec<&workload::Event> =
                    lane[i..i + take].iter().map(|&k| &w.events[k]).collect();
                let (path, body) = if take == 1 {
                    (route(&events[0].body), events[0].body.clone())
                } else {
                    let batch: Vec<Value> = events.iter().map(|e| e.body.clone()).collect();
                    ("/v1/batch", json!({"batch": batch}))
                };
                let _permit = gate.acquire().await.expect("the gate stays open");
                let body_key = rng.random_bool(0.3);
                match send_until_accepted(&http, &base, path, body, body_key, until).await {
                    Ok(()) => {
                        acked.fetch_add(take, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e),
                }
                i += take;
                if i < lane.len() && Instant::now() >= until {
                    errors.push(format!(
                        "lane {n}: {} event(s) never sent: the run's deadline passed",
                        lane.len() - i
                    ));
                    break;
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(
            t.await
                .unwrap_or_else(|e| vec![format!("a sender panicked: {e}")]),
        );
    }
    errors
}

async fn scrape(s: &ServerProc) -> Option<String> {
    let r = reqwest::get(format!("{}/metrics", s.base())).await.ok()?;
    r.text().await.ok()
}

fn throttled_of(m: &str) -> u64 {
    metric(m, "closeflow_close_throttled_total", "instance=\"soak\"") as u64
}

/// Close calls this server process saw fail: 503s and cut connections.
fn failed_of(m: &str) -> u64 {
    (metric(m, "closeflow_close_requests_total", "status=\"503\"")
        + metric(
            m,
            "closeflow_close_requests_total",
            "status=\"network_error\"",
        )) as u64
}

/// Runs the soak (or, with `kills`, the crash loop) and reconciles.
pub async fn run(cfg: &Config) -> Report {
    let started = Instant::now();
    let w = Arc::new(workload::generate(cfg.events, cfg.seed));
    let sim = SimProc::start(&org()).await;
    let dir = tempfile::Builder::new()
        .prefix("closeflow-soak-")
        .tempdir()
        .expect("a temporary directory");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(
        config.join("soak.yaml"),
        workload::instance_yaml(&sim.api()),
    )
    .expect("instance file");
    let server = ServerProc::start(dir.path(), &["--concurrency", "8"], &[]).await;
    let base = server.base();
    let server = Arc::new(tokio::sync::Mutex::new(server));
    let mut rng = StdRng::seed_from_u64(cfg.seed);

    let done = Arc::new(AtomicBool::new(false));
    let fault_task = cfg.faults.then(|| {
        let (done, base, seed) = (done.clone(), sim.base(), cfg.seed);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
            let http = reqwest::Client::new();
            while !done.load(Ordering::Relaxed) {
                let _ = http
                    .post(format!("{base}/_sim/faults"))
                    .json(&faults(&mut rng))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });

    // The kills: at random points of the sending, or just after it (deliveries in flight).
    let acked = Arc::new(AtomicUsize::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut thresholds: Vec<f64> = (0..cfg.kills).map(|_| rng.random_range(0.1..1.0)).collect();
    thresholds.sort_by(f64::total_cmp);
    let until = started + cfg.deadline;
    let killer = {
        let (server, acked, throttled, failed) = (
            server.clone(),
            acked.clone(),
            throttled.clone(),
            failed.clone(),
        );
        let n = cfg.events;
        let seed = cfg.seed;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
            let mut killed = 0;
            for t in thresholds {
                let at = ((n as f64) * t) as usize;
                // Events that were never acknowledged (refused, or past the deadline) would
                // leave this waiting forever.
                while acked.load(Ordering::Relaxed) < at.min(n) {
                    if Instant::now() >= until {
                        return killed;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                let mut s = server.lock().await;
                if let Some(m) = scrape(&s).await {
                    throttled.fetch_add(throttled_of(&m), Ordering::Relaxed);
                    failed.fetch_add(failed_of(&m), Ordering::Relaxed);
                }
                s.kill9();
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                s.restart().await;
                killed += 1;
            }
            killed
        })
    };

    let mut problems = send_all(w.clone(), base, cfg.seed, cfg.senders, acked.clone(), until).await;
    match killer.await {
        Ok(k) if k < cfg.kills => problems.push(format!(
            "the kill loop made {k} of {} kills: the run's deadline passed first",
            cfg.kills
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("the kill loop failed: {e}")),
    }

    // Wait until every accepted event has a final outcome, faults still on.
    let s = server.lock().await;
    let label = "instance=\"soak\"";
    let mut m = String::new();
    while started.elapsed() < cfg.deadline {
        m = scrape(&s).await.unwrap_or_default();
        if metric(&m, "closeflow_events_accepted_total", label) >= cfg.events as f64
            && metric(&m, "closeflow_queue_depth", label) == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::Relaxed);
    if let Some(t) = fault_task {
        let _ = t.await;
    }
    sim.faults(json!({})).await;
    let state = sim.state().await;
    let queue = reconcile::read_queue(&s.dir.join("data/queue.db"), "soak").unwrap_or_else(|e| {
        problems.push(e);
        Default::default()
    });
    let mut table = reconcile::reconcile(
        &w,
        "soak",
        &queue,
        &state,
        &m,
        throttled.load(Ordering::Relaxed) + throttled_of(&m),
    );
    table.kills = cfg.kills;
    table.failed_calls = failed.load(Ordering::Relaxed) + failed_of(&m);
    table.problems.extend(problems);
    if s.log().contains("panicked") {
        table
            .problems
            .push("the server panicked (see its log)".into());
    }
    drop(s);
    let dir = (!table.ok()).then(|| dir.keep());
    Report {
        table,
        elapsed: started.elapsed(),
        dir,
    }
}
