//! `closeflow serve`: flags → the server's configuration. Everything else is in the server crate.

use crate::duration::duration;
use anyhow::{Context, Result};
use closeflow_server::{ServeConfig, telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The directory of instance files (each one with a write_key is an intake).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the queue lives (a SQLite file, readable with `sqlite3`).
    #[arg(long, default_value = "closeflow-data")]
    pub data_dir: PathBuf,
    /// The Close API base URL for every instance (overrides each instance's endpoint).
    #[arg(long, env = "CLOSEFLOW_CLOSE_URL")]
    pub close_url: Option<String>,
    /// Log lines as text or as JSON objects (the last one given wins).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        overrides_with = "log_format"
    )]
    pub log_format: LogFormat,
    /// Events all instances may have waiting together; each instance gets an equal share, and
    /// its write keys are answered 503 (with Retry-After) once its share is waiting.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_queue: u64,
    /// Queue storage all instances may fill together (MiB; default: no limit but the disk),
    /// shared the same way. It limits intake only: delivery always records its outcomes.
    #[arg(long)]
    pub max_queue_mib: Option<u64>,
    /// Intake answers 503 while the data directory has less free space than this (MiB).
    #[arg(long, default_value_t = 64)]
    pub min_free_disk_mib: u64,
    /// A messageId seen again within this window is a duplicate (per instance).
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub dedup_window: Duration,
    /// On SIGTERM: how long deliveries in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub grace: Duration,
    /// How often instance files are checked for changes (hot reload).
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub reload_interval: Duration,
    /// A request body that takes longer than this to arrive is answered 408.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub body_timeout: Duration,
    /// Connections open at once; one more is closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this (idle after a reply,
    /// or trickling) is closed.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Events in flight at once per instance (events sharing a lookup key never are).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// An event is dead-lettered after this many failed attempts **and** --retry-max-age.
    #[arg(long, default_value_t = 10)]
    pub retry_attempts: u32,
    #[arg(long, default_value = "4h", value_parser = duration)]
    pub retry_max_age: Duration,
    /// The first retry's delay; it doubles (with jitter) up to --retry-backoff-cap.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub retry_backoff: Duration,
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub retry_backoff_cap: Duration,
    /// Per Close call: the reply timeout, and attempts within one delivery attempt.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub close_timeout: Duration,
    #[arg(long, default_value_t = 3)]
    pub close_attempts: u32,
    #[command(flatten)]
    pub lookups: crate::lookups::LookupArgs,
    /// The embedded default: run the Close simulator in this process (from this snapshot, or
    /// empty with `--sim ''`) and point every instance at it. No Close account needed.
    #[arg(long, value_name = "STATE.json")]
    pub sim: Option<PathBuf>,
    /// The embedded simulator's port (its API at http://127.0.0.1:PORT/api/v1/).
    #[arg(long, default_value_t = 9000)]
    pub sim_port: u16,
    /// Where the queue lives: `sqlite` (the default: a file under --data-dir), or a NATS
    /// JetStream cluster shared by several closeflow nodes: `nats://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, default_value = "sqlite", value_parser = queue_choice)]
    pub queue: QueueChoice,
    /// This node's name in the cluster (unique, stable across restarts).
    /// Default: the host name and the --listen port.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Cluster: an event a node took but neither settled nor extended within this goes to
    /// another node (extended at each lease tick, a quarter of it, while Close is slow). Same on
    /// every node.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub ack_wait: Duration,
    /// Cluster: partitions of a new instance's queue (spread over the live nodes).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Cluster: replicas of each stream (default: the cluster's size, at most 3).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The origins whose web pages may send events (CORS on the intake routes): `*` for any
    /// (a browser's write key is public anyway), or a comma-separated list such as
    /// `https://www.example.com,https://app.example.com`.
    #[arg(long, default_value = "*", value_parser = closeflow_server::intake::cors::Origins::parse)]
    pub cors_origins: closeflow_server::intake::cors::Origins,
}

#[derive(Debug, Clone)]
pub enum QueueChoice {
    Sqlite,
    Nats(Vec<String>),
}

/// `sqlite` or `nats://HOST:PORT[,HOST:PORT…]` (later entries may leave out `nats://`).
pub fn queue_choice(s: &str) -> Result<QueueChoice, String> {
    let s = s.trim();
    if s == "sqlite" {
        return Ok(QueueChoice::Sqlite);
    }
    if !s.starts_with("nats://") {
        return Err(format!(
            "`{s}`: the queue is `sqlite` or `nats://HOST:PORT[,HOST:PORT…]`"
        ));
    }
    let mut urls = Vec::new();
    for part in s.split(',') {
        let hp = part.trim().trim_start_matches("nats://");
        let ok = hp
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("`{part}` in --queue is not HOST:PORT"));
        }
        urls.push(format!("nats://{hp}"));
    }
    Ok(QueueChoice::Nats(urls))
}

fn default_node_id(listen: &SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", listen.port())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    telemetry::init_logs(match a.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    });
    if !a.config.is_dir() {
        anyhow::bail!(
            "--config {}: not a directory of instance files",
            a.config.display()
        );
    }
    let mut cfg = ServeConfig::new(a.config);
    cfg.listen = a.listen;
    cfg.data_dir = a.data_dir;
    cfg.max_queue = a.max_queue;
    cfg.max_queue_bytes = a.max_queue_mib.map(|m| m.max(1) * 1024 * 1024);
    cfg.min_free_disk = a.min_free_disk_mib * 1024 * 1024;
    cfg.dedup_window = a.dedup_window;
    cfg.grace = a.grace;
    cfg.reload_interval = a.reload_interval;
    cfg.body_timeout = a.body_timeout;
    cfg.cors_origins = a.cors_origins;
    cfg.connections.max_connections = a.max_connections.max(1);
    cfg.connections.header_timeout = a.header_timeout;
    cfg.delivery.concurrency = a.concurrency.max(1);
    cfg.delivery.retry.max_attempts = a.retry_attempts.max(1);
    cfg.delivery.retry.max_age = a.retry_max_age;
    cfg.delivery.retry.backoff_base = a.retry_backoff;
    cfg.delivery.retry.backoff_cap = a.retry_backoff_cap.max(a.retry_backoff);
    cfg.client.close_url = a.close_url;
    cfg.client.timeout = a.close_timeout;
    cfg.client.attempts = a.close_attempts.max(1);
    cfg.client.lookup_mode = a.lookups.mode();
    cfg.client.search_chunk = a.lookups.search_chunk.max(1);
    cfg.client.live = a.lookups.options();
    if let QueueChoice::Nats(urls) = a.queue {
        if a.ack_wait < Duration::from_secs(1) {
            anyhow::bail!("--ack-wait {:?}: at least 1s", a.ack_wait);
        }
        cfg.cluster = Some(closeflow_server::ClusterConfig {
            urls,
            node: a.node_id.unwrap_or_else(|| default_node_id(&a.listen)),
            ack_wait: a.ack_wait,
            partitions: a.partitions.max(1),
            replicas: a.replicas,
        });
    }
    cfg.admin_token = std::env::var("CLOSEFLOW_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Into::into);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Some(state) = &a.sim {
        let snapshot = if state.as_os_str().is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(state)
                .with_context(|| format!("cannot read {}", state.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", state.display()))?,
            )
        };
        let sim = closeflow_sim::Sim::from_snapshot(snapshot.as_ref())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{} is not a simulator snapshot", state.display()))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", a.sim_port)))
            .with_context(|| {
                format!(
                    "cannot listen on 127.0.0.1:{} for the simulator",
                    a.sim_port
                )
            })?;
        let port = listener.local_addr()?.port();
        rt.spawn(closeflow_sim::serve(listener, sim));
        let url = format!("http://127.0.0.1:{port}/api/v1/");
        tracing::info!(%url, state = %format!("http://127.0.0.1:{port}/_sim/state"), "embedded Close simulator: every instance delivers here");
        cfg.client.close_url = Some(url);
    }
    rt.block_on(closeflow_server::serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}
