//! closeflow's ingestion server: Segment-compatible intake → durable queue → per-key delivery
//! through the Close action core.
//!
//! ```text
//! HTTP ─► intake (auth, limits, enrich) ─► queue (SQLite, fsync; or NATS JetStream) ─► delivery (per key) ─► close::run::send
//! ```
//! An event is answered 200 only once it is durable; it leaves the queue only with a final
//! outcome (applied, skipped, dead-lettered), recorded and counted once.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod console;
pub mod datadir;
pub mod delivery;
pub mod error;
pub mod intake;
pub mod journey;
pub mod listen;
pub mod ops;

pub mod registry;
pub mod router;
pub mod telemetry;

use anyhow::{Context, Result};
use app::App;
use closeflow_queue::{
    self as queue,
    sqlite::{Options, SqliteQueue},
};
pub use config::{ClusterConfig, ServeConfig};
use delivery::{Deliverer, Wakers};
use registry::{FileReport, Registry};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use telemetry::{ConfigLoaded, InternalEvent};
use tokio::sync::watch;
use tracing::{info, warn};

fn emit_reports(reports: &[FileReport]) -> bool {
    let mut loaded = false;
    for r in reports {
        match r {
            FileReport::Loaded {
                file,
                instance,
                warnings,
            } => {
                loaded = true;
                ConfigLoaded::Loaded {
                    file: &file.display().to_string(),
                    instance,
                    warnings,
                }
                .emit();
            }
            FileReport::Invalid {
                file,
                kept,
                diagnostics,
            } => ConfigLoaded::Invalid {
                file: &file.display().to_string(),
                kept: kept.as_deref(),
                diagnostics,
            }
            .emit(),
            FileReport::Removed { file, instance } => ConfigLoaded::Removed {
                file: &file.display().to_string(),
                instance,
            }
            .emit(),
            FileReport::Unreadable { file, error } => ConfigLoaded::Unreadable {
                file: &file.display().to_string(),
                error,
            }
            .emit(),
            FileReport::NotAFile { file } => ConfigLoaded::NotAFile {
                file: &file.display().to_string(),
            }
            .emit(),
        }
    }
    loaded
}

fn open_queue_with(mut o: Options, dedup_window: Duration) -> Result<SqliteQueue> {
    let data_dir = o
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    o.dedup_window_ms = dedup_window.as_millis() as i64;
    o.retention_ms = o.dedup_window_ms;
    SqliteQueue::open(o).with_context(|| format!("cannot open the queue in {}", data_dir.display()))
}

/// Resolves at the first SIGTERM or Ctrl-C (only Ctrl-C off Unix).
pub async fn terminated() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Connects to the JetStream cluster: intake partitions events by the person they are about
/// ([`delivery::keys::partition`]), and
/// arrivals on any node wake this node's schedulers.
pub async fn connect_cluster(
    c: &ClusterConfig,
    dedup_window: Duration,
    registry: Option<Arc<Registry>>,
    wakers: Option<Arc<Wakers>>,
) -> Result<queue::jetstream::JetStreamQueue> {
    let mut o = queue::jetstream::Options::new(c.urls.clone(), c.node.clone());
    o.ack_wait = c.ack_wait;
    o.partitions = c.partitions.max(1);
    o.replicas = c.replicas;
    o.dedup_window = dedup_window;
    o.retention = dedup_window;
    let keyer: Option<queue::jetstream::Keyer> = registry.map(|r| {
        Arc::new(move |instance: &str, body: &str| {
            let active = r.get(instance)?;
            let ev: serde_json::Value = serde_json::from_str(body).ok()?;
            let (keys, _) = delivery::keys::of(&active.instance, &ev);
            delivery::keys::partition(&keys).map(delivery::keys::Key::lock_name)
        }) as queue::jetstream::Keyer
    });
    let arrived: Option<queue::jetstream::Arrived> =
        wakers.map(|w| Arc::new(move |i: &str| w.wake(i)) as queue::jetstream::Arrived);
    queue::jetstream::JetStreamQueue::connect(o, keyer, arrived)
        .await
        .with_context(|| format!("cannot use the NATS cluster at {}", c.urls.join(",")))
}

/// Connects to the cluster and reads it once. A cluster electing a leader (a NATS node just
/// restarted) answers nothing for a few seconds, and a node started then should wait for it, not
/// exit: every step is tried again for a minute. A mismatched `--ack-wait` fails at once.
async fn join_cluster(
    c: &ClusterConfig,
    cfg: &ServeConfig,
    registry: &Arc<Registry>,
    wakers: &Arc<Wakers>,
) -> Result<queue::jetstream::JetStreamQueue> {
    let started = std::time::Instant::now();
    loop {
        let attempt = async {
            let q = connect_cluster(
                c,
                cfg.dedup_window,
                Some(registry.clone()),
                Some(wakers.clone()),
            )
            .await?;
            let timing = q.check_timing().await?;
            queue::Inspect::stats(&q).await?;
            anyhow::Ok((q, timing))
        };
        match attempt.await {
            Ok((q, Ok(()))) => return Ok(q),
            Ok((_, Err(mismatch))) => anyhow::bail!(mismatch),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                warn!(error = %format!("{e:#}"), "the NATS cluster is not ready; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the server until SIGTERM/Ctrl-C, then shuts down gracefully: intake stops (503), work
/// in flight gets `grace` to finish, and whatever is left stays queued for the next start.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    telemetry::metrics();
    let mut client = cfg.client.clone();
    // Several nodes write one organisation: a cached "no match" for a company is searched
    // again before it is planned on (another node may have created its lead meanwhile).
    client.live.shared_writers = cfg.cluster.is_some();
    let registry = Arc::new(Registry::new(&cfg.config_dir, client));
    let reports = registry.scan().with_context(|| {
        format!(
            "cannot read the config directory {}",
            cfg.config_dir.display()
        )
    })?;
    emit_reports(&reports);
    if !registry.has_intake() {
        warn!(dir = %cfg.config_dir.display(), "no instance has a write_key: nothing can be sent to this server");
    }
    let wakers = Arc::new(Wakers::default());
    match cfg.cluster.clone() {
        None => {
            let _lock = datadir::lock(
                &cfg.data_dir,
                &format!(
                    "closeflow serve (pid {}, --listen {}, started {})",
                    std::process::id(),
                    cfg.listen,
                    jiff::Timestamp::now()
                        .round(jiff::Unit::Second)
                        .unwrap_or_default()
                ),
            )?;
            let opts = Options::in_dir(&cfg.data_dir);
            let queue = Arc::new(open_queue_with(opts, cfg.dedup_window)?);
            if let Some(aside) = &queue.report.quarantined_file {
                warn!(moved_to = %aside.display(), "the queue file was unreadable: moved aside, a new one was started");
            }
            if queue.report.quarantined_records > 0 {
                warn!(
                    records = queue.report.quarantined_records,
                    "unreadable queue records were set aside (table `quarantine`)"
                );
            }
            let journals = if cfg.journey_retention.is_zero() {
                journey::Journals::Off
            } else {
                journey::Journals::Sqlite(
                    queue::journey::SqliteJournal::open(&cfg.data_dir, cfg.journey_retention)
                        .context("cannot open the journey file")?,
                )
            };
            run(cfg, queue, registry, wakers, journals).await
        }
        Some(c) => {
            let queue = join_cluster(&c, &cfg, &registry, &wakers).await?;
            queue.start();
            info!(node = %queue.node(), replicas = queue.replicas(), nats = %c.urls.join(","), "joined the NATS JetStream cluster");
            let journals = if cfg.journey_retention.is_zero() {
                journey::Journals::Off
            } else {
                journey::Journals::Nats(
                    queue
                        .journal(cfg.journey_retention)
                        .await
                        .context("cannot open the journey stream")?,
                )
            };
            run(cfg, Arc::new(queue), registry, wakers, journals).await
        }
    }
}

async fn run<Q: queue::Queue>(
    cfg: ServeConfig,
    queue: Arc<Q>,
    registry: Arc<Registry>,
    wakers: Arc<Wakers>,
    journals: journey::Journals,
) -> Result<()> {
    let recorder = journey::Recorder::start(journals.clone());
    // A courtesy check only: a queue that cannot be read right now is no reason not to start.
    match queue::Inspect::stats(&*queue).await {
        Ok(stats) => {
            for s in stats {
                if s.queued > 0 && registry.get(&s.instance).is_none() {
                    warn!(instance = %s.instance, queued = s.queued, "events are queued for an instance that is not configured; they wait until it is");
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot read the queue's counts at start"),
    }
    let app = Arc::new(App {
        queue: queue.clone(),
        registry: registry.clone(),
        wakers: wakers.clone(),
        max_queue: cfg.max_queue,
        max_queue_bytes: cfg.max_queue_bytes,
        unauthenticated: tokio::sync::Semaphore::new(1),
        min_free_disk: cfg.min_free_disk,
        data_dir: cfg.data_dir.clone(),
        disk_full: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        body_timeout: cfg.body_timeout,
        admin_token: cfg.admin_token.clone(),
        free_disk: AtomicU64::new(0),
        journals: journals.clone(),
        recorder: recorder.clone(),
        console: console::Console::default(),
    });
    app.check_disk();

    let (stop_tx, stop_rx) = watch::channel(false);
    let deliverer = Arc::new(Deliverer {
        queue: queue.clone(),
        registry: registry.clone(),
        wakers: wakers.clone(),
        policy: cfg.delivery.clone(),
        stop: stop_rx.clone(),
        recorder: recorder.clone(),
    });
    let mut running = HashSet::new();
    let mut schedulers = deliverer.start_new(&mut running);

    // Hot reload, pruning and the disk watch: background chores until shutdown.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let (registry, mut stop) = (registry.clone(), stop_rx.clone());
        let every = cfg.reload_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let r = registry.clone();
                match tokio::task::spawn_blocking(move || r.scan()).await {
                    Ok(Ok(reports)) if emit_reports(&reports) => {
                        let _ = reload_tx.send(());
                    }
                    Ok(Err(e)) => warn!(error = %e, "cannot read the config directory"),
                    _ => {}
                }
            }
        });
    }
    {
        let (app, queue, mut stop) = (app.clone(), queue.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                app.check_disk();
                ticks += 1;
                if ticks.is_multiple_of(5) && app.admin_token.is_some() {
                    console::overview::sample(&app).await;
                }
                if ticks.is_multiple_of(60) {
                    queue.maintain().await;
                    app.journals.prune().await;
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, config = %cfg.config_dir.display(), data = %cfg.data_dir.display(), "closeflow serve is listening");

    // Spans for every request; no log line per 5xx: each refusal is logged and counted once,
    // by kind, as it is rendered (`error::Refusal`) (tower-http's default would add an ERROR line for every
    // 503 a client is sent while a queue is full, thousands a minute).
    let router = router::router(app.clone(), &cfg.cors_origins)
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()));
    let (down_tx, down_rx) = watch::channel(false);
    let server = tokio::spawn(listen::serve(
        listener,
        router,
        cfg.connections.clone(),
        down_rx.clone(),
    ));

    let signal = terminated();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            Some(()) = reload_rx.recv() => {
                schedulers.extend(deliverer.start_new(&mut running));
                wakers.wake_all();
            }
        }
    }

    // Still listening while in-flight deliveries finish: intake answers 503 with Retry-After and
    // /readyz 503, so clients retry elsewhere and load balancers take this node out, instead
    // of seeing refused connections. The listener closes once delivery is done or `grace` is up.
    info!(grace = ?cfg.grace, "shutting down: intake answers 503, finishing deliveries in flight");
    app.shutting_down.store(true, Ordering::Relaxed);
    app.unauthenticated.close();
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + cfg.grace;
    let delivered = tokio::time::timeout_at(deadline, async {
        for s in schedulers {
            let _ = s.await;
        }
    })
    .await;
    let _ = down_tx.send(true);
    // Requests already being answered get what is left of the grace, and at least a moment.
    let closed = tokio::time::timeout_at(
        deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)),
        server,
    )
    .await;
    if delivered.is_err() || closed.is_err() {
        warn!(
            "grace period over: deliveries still in flight stay queued and resume at the next start"
        );
    }
    // Stages of the last attempts, before the process ends.
    recorder.flush().await;
    info!("stopped");
    Ok(())
}
