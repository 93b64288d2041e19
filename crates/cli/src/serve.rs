//! `closeflow serve`: flags → the server's configuration. Everything else is in the server crate.

use crate::duration::{Span, span};
use anyhow::{Context, Result};
use closeflow_server::config::defaults;
use closeflow_server::registry::ClientPolicy;
use closeflow_server::{ServeConfig, telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// Counts that 0 would turn into a server that never does anything: refused with the flag's
// name by clap, rather than quietly raised to 1.
fn at_least_one_u64() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}
fn at_least_one_u32() -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}
fn at_least_one_usize() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The directory of instance files (each one with a write_key is an intake).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Where the queue lives (a SQLite file, readable with `sqlite3`).
    #[arg(long, default_value = defaults::DATA_DIR)]
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
    /// its write keys are answered 503 (with Retry-After) once its share is waiting (0: intake
    /// refuses every event while delivery drains what waits).
    #[arg(long, default_value_t = defaults::MAX_QUEUE)]
    pub max_queue: u64,
    /// Queue storage all instances may fill together (MiB; default: no limit but the disk),
    /// shared the same way. It limits intake only: delivery always records its outcomes.
    #[arg(long, value_parser = at_least_one_u64())]
    pub max_queue_mib: Option<u64>,
    /// Intake answers 503 while the data directory has less free space than this (MiB).
    #[arg(long, default_value_t = defaults::MIN_FREE_DISK_MIB)]
    pub min_free_disk_mib: u64,
    /// A messageId seen again within this window is a duplicate (per instance).
    #[arg(long, default_value_t = Span(defaults::DEDUP_WINDOW), value_parser = span)]
    pub dedup_window: Span,
    /// How long each accepted event's journey (received, verdicts, plan, Close calls, outcome)
    /// is kept for `closeflow trace`, `/admin/events` and the console; 0 keeps none.
    #[arg(long, default_value_t = Span(closeflow_queue::journey::RETENTION), value_parser = span)]
    pub journey_retention: Span,
    /// On SIGTERM: how long deliveries in flight may take to finish.
    #[arg(long, default_value_t = Span(defaults::GRACE), value_parser = span)]
    pub grace: Span,
    /// How often instance files are checked for changes (hot reload).
    #[arg(long, default_value_t = Span(defaults::RELOAD_INTERVAL), value_parser = span)]
    pub reload_interval: Span,
    /// A request body that takes longer than this to arrive is answered 408.
    #[arg(long, default_value_t = Span(defaults::BODY_TIMEOUT), value_parser = span)]
    pub body_timeout: Span,
    /// Connections open at once; one more is closed at once.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS, value_parser = at_least_one_usize())]
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this (idle after a reply,
    /// or trickling) is closed.
    #[arg(long, default_value_t = Span(defaults::HEADER_TIMEOUT), value_parser = span)]
    pub header_timeout: Span,
    /// Events in flight at once per instance (events sharing a lookup key never are).
    #[arg(long, default_value_t = defaults::CONCURRENCY, value_parser = at_least_one_usize())]
    pub concurrency: usize,
    /// An event is dead-lettered after this many failed attempts **and** --retry-max-age.
    #[arg(long, default_value_t = defaults::RETRY_ATTEMPTS, value_parser = at_least_one_u32())]
    pub retry_attempts: u32,
    #[arg(long, default_value_t = Span(defaults::RETRY_MAX_AGE), value_parser = span)]
    pub retry_max_age: Span,
    /// The first retry's delay; it doubles (with jitter) up to --retry-backoff-cap.
    #[arg(long, default_value_t = Span(defaults::RETRY_BACKOFF), value_parser = span)]
    pub retry_backoff: Span,
    #[arg(long, default_value_t = Span(defaults::RETRY_BACKOFF_CAP), value_parser = span)]
    pub retry_backoff_cap: Span,
    /// Per Close call: the reply timeout, and attempts within one delivery attempt.
    #[arg(long, default_value_t = Span(ClientPolicy::default().timeout), value_parser = span)]
    pub close_timeout: Span,
    #[arg(long, default_value_t = ClientPolicy::default().attempts, value_parser = at_least_one_u32())]
    pub close_attempts: u32,
    #[command(flatten)]
    pub lookups: crate::lookups::LookupArgs,
    /// The embedded default: run the Close simulator in this process (from this snapshot, or
    /// empty with `--sim ''`) and point every instance at it. No Close account needed.
    #[arg(long, value_name = "STATE.json")]
    pub sim: Option<PathBuf>,
    /// The embedded simulator's port (its API at http://127.0.0.1:PORT/api/v1/).
    #[arg(long, default_value_t = defaults::SIM_PORT)]
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
    #[arg(long, default_value_t = Span(defaults::ACK_WAIT), value_parser = span)]
    pub ack_wait: Span,
    /// Cluster: partitions of a new instance's queue (spread over the live nodes).
    #[arg(long, default_value_t = defaults::PARTITIONS, value_parser = at_least_one_u32())]
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

impl ServeArgs {
    /// The one place where flags become the server's configuration.
    pub fn resolve(&self) -> Result<ServeConfig> {
        if !self.config.is_dir() {
            anyhow::bail!(
                "--config {}: not a directory of instance files",
                self.config.display()
            );
        }
        let mut cfg = ServeConfig::new(self.config.clone());
        cfg.listen = self.listen;
        cfg.data_dir = self.data_dir.clone();
        cfg.max_queue = self.max_queue;
        cfg.max_queue_bytes = self.max_queue_mib.map(|m| m * 1024 * 1024);
        cfg.min_free_disk = self.min_free_disk_mib * 1024 * 1024;
        cfg.dedup_window = self.dedup_window.0;
        cfg.journey_retention = self.journey_retention.0;
        cfg.grace = self.grace.0;
        cfg.reload_interval = self.reload_interval.0;
        cfg.body_timeout = self.body_timeout.0;
        cfg.cors_origins = self.cors_origins.clone();
        cfg.connections.max_connections = self.max_connections;
        cfg.connections.header_timeout = self.header_timeout.0;
        cfg.delivery.concurrency = self.concurrency;
        cfg.delivery.retry.max_attempts = self.retry_attempts;
        cfg.delivery.retry.max_age = self.retry_max_age.0;
        cfg.delivery.retry.backoff_base = self.retry_backoff.0;
        cfg.delivery.retry.backoff_cap = self.retry_backoff_cap.0.max(self.retry_backoff.0);
        cfg.client.close_url = self.close_url.clone();
        cfg.client.timeout = self.close_timeout.0;
        cfg.client.attempts = self.close_attempts;
        cfg.client.search = self.lookups.search_options();
        cfg.client.live = self.lookups.options();
        if let QueueChoice::Nats(urls) = &self.queue {
            if self.ack_wait.0 < Duration::from_secs(1) {
                anyhow::bail!("--ack-wait {}: at least 1s", self.ack_wait);
            }
            cfg.cluster = Some(closeflow_server::ClusterConfig {
                urls: urls.clone(),
                node: self
                    .node_id
                    .clone()
                    .unwrap_or_else(|| default_node_id(&self.listen)),
                ack_wait: self.ack_wait.0,
                partitions: self.partitions,
                replicas: self.replicas,
            });
        }
        cfg.admin_token = std::env::var("CLOSEFLOW_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Into::into);
        Ok(cfg)
    }
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    telemetry::init_logs(match a.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    });
    let mut cfg = a.resolve()?;
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
