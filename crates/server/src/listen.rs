//! The front door: accepting connections with bounds that hostile or broken clients cannot
//! push past. At most `max_connections` are open at once (one more is accepted and closed at
//! once, so the client learns straight away instead of hanging in the backlog); a connection
//! that does not finish sending a request's headers within `header_timeout` — idle after a
//! reply, or trickling bytes — is closed; a body that trickles is the intake's business
//! (`--body-timeout`, answered 408). HTTP/1.1 only: it is what Segment's libraries and
//! webhooks speak, and it keeps one set of timeouts to reason about.

use crate::config::defaults;
use crate::telemetry::{self, InternalEvent};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: defaults::MAX_CONNECTIONS,
            header_timeout: defaults::HEADER_TIMEOUT,
        }
    }
}

/// Serves `router` until `down` turns true, then lets open requests finish (the caller bounds
/// how long) and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut down: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => Some(a),
            _ = down.wait_for(|d| *d) => None,
        };
        let Some(accepted) = accepted else { break };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close, do not spin.
                telemetry::AcceptFailed { error: &e }.emit();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            telemetry::ConnectionRefused.emit();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let mut down = down.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                r = down.wait_for(|d| *d) => r.is_ok(),
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all connections closed.
    let _ = slots
        .acquire_many(limits.max_connections.max(1) as u32)
        .await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
