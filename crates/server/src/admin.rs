//! The dead-letter store over HTTP, behind `CLOSEFLOW_ADMIN_TOKEN` (`Authorization: Bearer …`).
//! Without a token configured the routes do not exist (404), so nothing is open by default.

use crate::app::App;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use closeflow_queue::{DeadLetter, Queue};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes<Q: Queue>() -> Router<Arc<App<Q>>> {
    Router::new()
        .route("/admin/dlq", get(list::<Q>))
        .route("/admin/dlq/replay", post(replay_all::<Q>))
        .route("/admin/dlq/{id}", get(show::<Q>).delete(drop_one::<Q>))
        .route("/admin/dlq/{id}/replay", post(replay_one::<Q>))
        .route("/admin/cluster", get(cluster::<Q>))
}

/// This node's part in a cluster: its name, the live nodes, the partitions it owns.
async fn cluster<Q: Queue>(State(app): State<Arc<App<Q>>>) -> Response {
    match app.queue.cluster().await {
        Some(v) => axum::Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this server's queue is not shared (no --queue nats://…)",
        ),
    }
}

#[derive(serde::Deserialize)]
pub struct Filter {
    instance: Option<String>,
}

/// A dead letter as JSON, its event as an object (not as text).
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    v["body"] = serde_json::from_str(&d.body).unwrap_or_else(|_| Value::String(d.body.clone()));
    v
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({"error": msg}))).into_response()
}

/// Wraps every route and the fallback, so it runs before extraction for every `/admin…` path:
/// with no token configured they all answer 404 (nothing is there), and with one a request
/// without it gets 401 before anything else is looked at (an unknown path, a malformed id, a
/// wrong method).
pub async fn guard<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let p = req.uri().path();
    if p != "/admin" && !p.starts_with("/admin/") {
        return next.run(req).await;
    }
    match authorize(&app, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    }
}

fn authorize<Q: Queue>(app: &App<Q>, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &app.admin_token else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq::constant_time_eq(given.trim().as_bytes(), token.expose_secret().as_bytes())
    {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid admin token is required (Authorization: Bearer …)",
        ))
    }
}

fn queue_error(e: &closeflow_queue::QueueError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

async fn list<Q: Queue>(State(app): State<Arc<App<Q>>>, Query(f): Query<Filter>) -> Response {
    match app.queue.dead_letters(f.instance.as_deref()).await {
        Ok(list) => axum::Json(
            json!({"dead_letters": list.iter().map(dead_letter_json).collect::<Vec<_>>()}),
        )
        .into_response(),
        Err(e) => queue_error(&e),
    }
}

async fn show<Q: Queue>(State(app): State<Arc<App<Q>>>, Path(id): Path<i64>) -> Response {
    match app.queue.dead_letter(id).await {
        Ok(Some(d)) => axum::Json(dead_letter_json(&d)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => queue_error(&e),
    }
}

async fn replay_one<Q: Queue>(State(app): State<Arc<App<Q>>>, Path(id): Path<i64>) -> Response {
    let instance = match app.queue.dead_letter(id).await {
        Ok(Some(d)) => d.instance,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => return queue_error(&e),
    };
    match app.queue.replay(id).await {
        Ok(true) => {
            app.wakers.wake(&instance);
            axum::Json(json!({"replayed": [id]})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => queue_error(&e),
    }
}

async fn replay_all<Q: Queue>(State(app): State<Arc<App<Q>>>, Query(f): Query<Filter>) -> Response {
    let list = match app.queue.dead_letters(f.instance.as_deref()).await {
        Ok(l) => l,
        Err(e) => return queue_error(&e),
    };
    let mut done = Vec::new();
    for d in list {
        match app.queue.replay(d.id).await {
            Ok(true) => {
                app.wakers.wake(&d.instance);
                done.push(d.id);
            }
            Ok(false) => {}
            Err(e) => return queue_error(&e),
        }
    }
    axum::Json(json!({"replayed": done})).into_response()
}

async fn drop_one<Q: Queue>(State(app): State<Arc<App<Q>>>, Path(id): Path<i64>) -> Response {
    match app.queue.drop_dead(id).await {
        Ok(true) => axum::Json(json!({"dropped": [id]})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such dead letter"),
        Err(e) => queue_error(&e),
    }
}
