//! `/livez`, `/readyz` and `/metrics`.

use crate::app::App;
use crate::telemetry;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use closeflow_queue::Queue;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub fn routes<Q: Queue>() -> Router<Arc<App<Q>>> {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<Q>))
        .route("/metrics", get(metrics::<Q>))
}

async fn readyz<Q: Queue>(State(app): State<Arc<App<Q>>>) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics<Q: Queue>(State(app): State<Arc<App<Q>>>) -> Response {
    let mut text = telemetry::metrics().render();
    match app.queue.stats().await {
        Ok(stats) => text.push_str(&telemetry::render_queue(&stats)),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the queue cannot be read: {e}\n"),
            )
                .into_response();
        }
    }
    if let Some(c) = app.queue.cluster().await {
        // Which node this scrape came from, so per-process series can be told apart.
        text.push_str(&format!(
            "# HELP closeflow_node_info This process's node name in the cluster.\n# TYPE closeflow_node_info gauge\ncloseflow_node_info{{node=\"{}\"}} 1\n",
            c["node"].as_str().unwrap_or_default().replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    text.push_str(&telemetry::render_config_files(
        &app.registry.file_validity(),
    ));
    text.push_str(&format!(
        "# HELP closeflow_disk_free_bytes Free space where the queue lives.\n# TYPE closeflow_disk_free_bytes gauge\ncloseflow_disk_free_bytes {}\n",
        app.free_disk.load(Ordering::Relaxed)
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
