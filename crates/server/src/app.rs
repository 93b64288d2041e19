//! The HTTP application: what the routes share, and the router itself.

use crate::delivery::Wakers;
use crate::intake::{self, refuse};
use crate::queue::Queue;
use crate::registry::Registry;
use crate::{admin, ops};
use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub struct App<Q: Queue> {
    pub queue: Arc<Q>,
    pub registry: Arc<Registry>,
    pub wakers: Arc<Wakers>,
    /// Intake answers 503 past this many queued events.
    pub max_queue: u64,
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
    /// The origins whose pages may send events to the intake routes (CORS).
    pub cors_origins: intake::cors::Origins,
}

impl<Q: Queue> App<Q> {
    /// 503 with `Retry-After` when accepting more could not be made durable.
    pub fn back_pressure(&self) -> Option<Response> {
        if self.disk_full.load(Ordering::Relaxed) {
            return Some(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                "the queue's disk is nearly full; retry later",
            ));
        }
        let depth = self.queue.depth();
        if depth >= self.max_queue {
            return Some(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "{depth} events are waiting for delivery (the limit is {}); retry later",
                    self.max_queue
                ),
            ));
        }
        None
    }

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

pub fn router<Q: Queue>(app: Arc<App<Q>>) -> Router {
    let mut r = Router::new();
    for (path, kind) in intake::ROUTES {
        let kind = *kind;
        r = r.route(
            path,
            post(move |s, h, b| intake::ingest::<Q>(s, kind, h, b)),
        );
    }
    // CORS on the intake routes only: layered before the admin and ops routes are merged.
    let r = intake::cors::apply(r, &app.cors_origins);
    r.merge(ops::routes::<Q>())
        .merge(admin::routes::<Q>())
        .with_state(app)
}
