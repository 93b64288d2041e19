//! The server's configuration: what `closeflow serve`'s flags resolve to (in one place, the
//! CLI's `ServeArgs::resolve`), handed down to intake, delivery and the queue. The defaults are
//! in [`defaults`], written once.

pub mod defaults;

use crate::{delivery, intake, listen, registry};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub config_dir: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Queued events all instances may hold together (each gets an equal share).
    pub max_queue: u64,
    /// Queue storage all instances may fill together (each gets an equal share); intake only:
    /// delivery can always record outcomes.
    pub max_queue_bytes: Option<u64>,
    pub min_free_disk: u64,
    pub dedup_window: Duration,
    /// How long journeys are kept (`--journey-retention`); zero keeps none.
    pub journey_retention: Duration,
    pub grace: Duration,
    pub reload_interval: Duration,
    pub body_timeout: Duration,
    pub connections: listen::Limits,
    pub delivery: delivery::Policy,
    pub client: registry::ClientPolicy,
    pub admin_token: Option<SecretString>,
    /// The origins whose pages may send events (CORS on the intake routes; default any).
    pub cors_origins: intake::cors::Origins,
    /// `None`: the embedded SQLite queue under `data_dir`; `Some`: a NATS JetStream cluster
    /// shared with other closeflow nodes.
    pub cluster: Option<ClusterConfig>,
}

/// How this node joins a NATS JetStream cluster (`closeflow serve --queue nats://…`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub urls: Vec<String>,
    pub node: String,
    pub ack_wait: Duration,
    pub partitions: u32,
    pub replicas: Option<usize>,
}

impl ServeConfig {
    pub fn new(config_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            config_dir,
            listen: defaults::LISTEN,
            data_dir: PathBuf::from(defaults::DATA_DIR),
            max_queue: defaults::MAX_QUEUE,
            max_queue_bytes: None,
            min_free_disk: defaults::MIN_FREE_DISK_MIB * 1024 * 1024,
            dedup_window: defaults::DEDUP_WINDOW,
            journey_retention: closeflow_queue::journey::RETENTION,
            grace: defaults::GRACE,
            reload_interval: defaults::RELOAD_INTERVAL,
            body_timeout: defaults::BODY_TIMEOUT,
            connections: listen::Limits::default(),
            delivery: delivery::Policy::default(),
            client: registry::ClientPolicy::default(),
            admin_token: None,
            cors_origins: intake::cors::Origins::Any,
            cluster: None,
        }
    }
}
