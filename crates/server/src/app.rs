//! The HTTP application's state: what every route shares (the router is in `router.rs`).

use crate::delivery::Wakers;
use crate::registry::Registry;
use closeflow_queue::Queue;
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub struct App<Q: Queue> {
    pub queue: Arc<Q>,
    pub registry: Arc<Registry>,
    pub wakers: Arc<Wakers>,
    /// Queued events all instances may hold together; each instance gets an equal share, so
    /// one whose Close is down fills only its own.
    pub max_queue: u64,
    /// Bytes of queue storage all instances may fill together, shared the same way.
    pub max_queue_bytes: Option<u64>,
    /// Requests without a Basic write key whose body is being looked into for a `writeKey`.
    pub unauthenticated: tokio::sync::Semaphore,
    /// Intake answers 503 when the data directory has less free space than this.
    pub min_free_disk: u64,
    pub data_dir: PathBuf,
    /// Set by the disk watcher (and by a failed write), cleared when space is back.
    pub disk_full: AtomicBool,
    pub shutting_down: AtomicBool,
    pub body_timeout: Duration,
    /// `CLOSEFLOW_ADMIN_TOKEN`; the admin routes answer 404 without it.
    pub admin_token: Option<SecretString>,
    pub free_disk: AtomicU64,
    /// Where journeys are kept, and the writer intake and delivery hand stages to.
    pub journals: crate::journey::Journals,
    pub recorder: Arc<crate::journey::Recorder>,
    /// The web console's sessions and samples.
    pub console: crate::console::state::Console,
}

impl<Q: Queue> App<Q> {
    /// Re-reads the free space of the data directory (the disk watcher calls this).
    pub fn check_disk(&self) {
        match fs4::available_space(&self.data_dir) {
            Ok(free) => {
                self.free_disk.store(free, Ordering::Relaxed);
                self.disk_full
                    .store(free < self.min_free_disk, Ordering::Relaxed);
            }
            // No data directory (a node whose queue is a NATS cluster): a full queue is
            // reported by the next refused write, not by this watch, so let intake try again.
            Err(_) if !self.data_dir.exists() => self.disk_full.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
    }
}
