//! Every default of `closeflow serve`, written once. The CLI's flags show these in `--help`,
//! [`super::ServeConfig::new`] and the sub-configurations' `Default`s start from them, so a
//! library user, a test and the binary all run with the same values. Plain values only: this
//! file imports nothing of the crate, so any module may read it. What is the queue's concept
//! (the dedup window, a cluster's ack deadline) is the queue crate's value, named here.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub const DATA_DIR: &str = "closeflow-data";

// Intake.
/// Events all instances may have waiting together (each gets an equal share).
pub const MAX_QUEUE: u64 = 1_000_000;
pub const MIN_FREE_DISK_MIB: u64 = 64;
/// The queue's own default, so a queue opened by a library user or `closeflow dlq` agrees.
pub const DEDUP_WINDOW: Duration = closeflow_queue::DEDUP_WINDOW;
pub const BODY_TIMEOUT: Duration = secs(10);
pub const MAX_CONNECTIONS: usize = 1024;
pub const HEADER_TIMEOUT: Duration = secs(10);

// Running.
pub const GRACE: Duration = secs(30);
pub const RELOAD_INTERVAL: Duration = secs(1);

// Delivery.
pub const CONCURRENCY: usize = 8;
/// Events a scheduler holds in memory (fetched, not finished).
pub const WINDOW: usize = 2_000;
pub const RETRY_ATTEMPTS: u32 = 10;
pub const RETRY_MAX_AGE: Duration = secs(4 * 3600);
pub const RETRY_BACKOFF: Duration = secs(1);
pub const RETRY_BACKOFF_CAP: Duration = secs(600);

// The embedded simulator.
pub const SIM_PORT: u16 = 9000;

// A cluster.
pub const ACK_WAIT: Duration = closeflow_queue::ACK_WAIT;
pub const PARTITIONS: u32 = 8;
