//! The dead-letter store over HTTP, behind `CLOSEFLOW_ADMIN_TOKEN` (`Authorization: Bearer …`).
//! Without a token configured the routes do not exist (404), so nothing is open by default.

use crate::app::App;
use crate::error::{AdminRefusal, Refusal};
use crate::journey::stages;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
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
        .route("/admin/events", get(events::<Q>))
        .route("/admin/events/{message_id}", get(event::<Q>))
}

/// What `/admin/events` looks for: one of the keys, within `since` (default 24 h).
#[derive(serde::Deserialize, Default)]
pub struct EventSearch {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub company_id: Option<String>,
    pub instance: Option<String>,
    /// `24h`, `7d`, `30m`…
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// `30m`, `24h`, `7d`, `90s` as milliseconds.
pub fn parse_since(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

impl EventSearch {
    /// The query this asks for, or why it cannot be asked.
    pub fn query(&self) -> Result<closeflow_queue::journey::Query, Refusal> {
        use closeflow_queue::journey::{Find, Key, Query};
        let given: Vec<(&str, &String)> = [
            ("user_id", &self.user_id),
            ("email", &self.email),
            ("company_id", &self.company_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect();
        let [(kind, value)] = given[..] else {
            return Err(Refusal::bad(
                "bad_search",
                "give exactly one of user_id, email or company_id",
            ));
        };
        let since = match &self.since {
            None => 24 * 3_600_000,
            Some(s) => parse_since(s).ok_or_else(|| {
                Refusal::bad(
                    "bad_since",
                    format!("since={s}: expected a span such as 30m, 24h or 7d"),
                )
            })?,
        };
        Ok(Query {
            find: Find::Key(Key::new(kind, value)),
            instance: self.instance.clone(),
            since: closeflow_queue::now_ms() - since,
            limit: self.limit.unwrap_or(50).clamp(1, 500),
        })
    }
}

/// The journeys of one person's events, most recently active first.
async fn events<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Query(s): Query<EventSearch>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    let q = s.query()?;
    app.recorder.flush().await;
    let found = app.journals.find(&q).await?;
    Ok(axum::Json(json!({"events": found})))
}

/// One event's journey (per instance that accepted it).
async fn event<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Path(message_id): Path<String>,
    Query(f): Query<Filter>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    app.recorder.flush().await;
    let found = app
        .journals
        .find(&closeflow_queue::journey::Query {
            find: closeflow_queue::journey::Find::MessageId(message_id),
            instance: f.instance,
            since: 0,
            limit: 100,
        })
        .await?;
    if found.is_empty() {
        return Err(Refusal::not_found(
            "no journey for this messageId (never accepted, or older than --journey-retention)",
        )
        .into());
    }
    Ok(axum::Json(json!({"events": found})))
}

/// Proof that a request carries the admin token, taken by every admin handler so that its
/// signature says it runs authorized. [`guard`] checks the token before routing (an unknown
/// `/admin` path is 401 too, not 404) and leaves this mark; the extractor only reads it, and
/// refuses if a route was somehow reached without it.
#[derive(Debug, Clone, Copy)]
pub struct Admin(());

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AdminRefusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Admin, AdminRefusal> {
        parts
            .extensions
            .get::<Admin>()
            .copied()
            .ok_or_else(|| AdminRefusal(unauthorized()))
    }
}

fn unauthorized() -> Refusal {
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin token is required (Authorization: Bearer …)",
    )
}

/// This node's part in a cluster: its name, the live nodes, the partitions it owns.
async fn cluster<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
) -> Result<Response, AdminRefusal> {
    match app.queue.cluster().await {
        Some(v) => Ok(axum::Json(v).into_response()),
        None => Err(
            Refusal::not_found("this server's queue is not shared (no --queue nats://…)").into(),
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
        Ok(mark) => {
            let mut req = req;
            req.extensions_mut().insert(mark);
            next.run(req).await
        }
        Err(r) => r,
    }
}

fn authorize<Q: Queue>(app: &App<Q>, headers: &HeaderMap) -> Result<Admin, Response> {
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
        Ok(Admin(()))
    } else {
        Err(AdminRefusal(unauthorized()).into_response())
    }
}

fn no_such_dead_letter() -> Refusal {
    Refusal::not_found("no such dead letter")
}

async fn list<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Query(f): Query<Filter>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    let list = app.queue.dead_letters(f.instance.as_deref()).await?;
    Ok(axum::Json(
        json!({"dead_letters": list.iter().map(dead_letter_json).collect::<Vec<_>>()}),
    ))
}

async fn show<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    match app.queue.dead_letter(id).await? {
        Some(d) => Ok(axum::Json(dead_letter_json(&d))),
        None => Err(no_such_dead_letter().into()),
    }
}

async fn replay_one<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    let dead = match app.queue.dead_letter(id).await? {
        Some(d) => d,
        None => return Err(no_such_dead_letter().into()),
    };
    if !app.queue.replay(id).await? {
        return Err(no_such_dead_letter().into());
    }
    app.recorder.record(stages::replayed(&dead, "admin"));
    app.wakers.wake(&dead.instance);
    Ok(axum::Json(json!({"replayed": [id]})))
}

async fn replay_all<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Query(f): Query<Filter>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    let list = app.queue.dead_letters(f.instance.as_deref()).await?;
    let mut done = Vec::new();
    for d in list {
        if app.queue.replay(d.id).await? {
            app.recorder.record(stages::replayed(&d, "admin"));
            app.wakers.wake(&d.instance);
            done.push(d.id);
        }
    }
    Ok(axum::Json(json!({"replayed": done})))
}

async fn drop_one<Q: Queue>(
    _: Admin,
    State(app): State<Arc<App<Q>>>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Value>, AdminRefusal> {
    let dead = app.queue.dead_letter(id).await?;
    if app.queue.drop_dead(id).await? {
        if let Some(d) = &dead {
            app.recorder.record(stages::dropped(d, "admin"));
        }
        Ok(axum::Json(json!({"dropped": [id]})))
    } else {
        Err(no_such_dead_letter().into())
    }
}
