//! The HTTP application: what the routes share, and the router itself.

use crate::delivery::Wakers;
use crate::intake::{self, refuse};
use crate::registry::Registry;
use crate::{admin, ops};
use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
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
    /// The origins whose pages may send events to the intake routes (CORS).
    pub cors_origins: intake::cors::Origins,
}

impl<Q: Queue> App<Q> {
    /// 503 with `Retry-After` while the disk is nearly full: nothing could be made durable.
    pub fn disk_pressure(&self) -> Option<Response> {
        self.disk_full.load(Ordering::Relaxed).then(|| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                "the queue's disk is nearly full; retry later",
            )
        })
    }

    /// 503 with `Retry-After` when one of `instances` holds its full share of the queue.
    pub fn back_pressure(&self, instances: &[String]) -> Option<Response> {
        let n = self.registry.intake_count().max(1) as u64;
        let events = self.max_queue / n;
        let bytes = self.max_queue_bytes.map(|b| b / n);
        for inst in instances {
            let load = self.queue.load(inst);
            if load.queued >= events {
                return Some(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    format!(
                        "{} events of instance {inst} are waiting for delivery (its share of the queue is {events}); retry later",
                        load.queued
                    ),
                ));
            }
            if let Some(limit) = bytes
                && load.bytes >= limit
            {
                return Some(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    format!(
                        "instance {inst} fills {} MiB of the queue (its share is {} MiB); retry later",
                        load.bytes >> 20,
                        limit.div_ceil(1 << 20)
                    ),
                ));
            }
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
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin::guard::<Q>,
        ))
        .with_state(app)
}
