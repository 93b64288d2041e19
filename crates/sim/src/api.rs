//! The HTTP surface: auth, rate limits and faults in front of every call, the simulator's own
//! `/_sim/` routes, and replies as HTTP. What a call does to the records is `records`'.

use crate::records::{self, Reply};
use crate::store::{Faults, Sim};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::time::Instant;

pub fn router(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/faults", post(faults))
        .route("/_sim/stats", get(stats))
        .fallback(api)
        .with_state(sim)
}

pub async fn serve(listener: tokio::net::TcpListener, sim: Sim) -> std::io::Result<()> {
    axum::serve(listener, router(sim)).await
}

async fn state(State(sim): State<Sim>) -> Response {
    axum::Json(sim.snapshot()).into_response()
}

/// Requests and 429s per endpoint group since start (what the delivery benchmark counts).
async fn stats(State(sim): State<Sim>) -> Response {
    axum::Json(json!(sim.lock().stats)).into_response()
}

async fn faults(State(sim): State<Sim>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            sim.set_faults(f);
            axum::Json(json!({})).into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, &format!("bad faults: {e}")),
    }
}

/// A reply whose body fails at once: the client sees the connection cut.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    });
    Response::new(axum::body::Body::from_stream(stream))
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({"error": msg}))).into_response()
}

fn group(method: &Method, path: &str) -> (String, fn(&crate::store::Limits) -> u32) {
    if path.starts_with("data/search") {
        return ("search".into(), |l| l.search);
    }
    if method == Method::DELETE && path.starts_with("lead/") {
        return ("delete_lead".into(), |l| l.delete_lead);
    }
    ("other".into(), |l| l.other)
}

fn key_of(headers: &HeaderMap) -> Option<String> {
    let h = headers.get("authorization")?.to_str().ok()?;
    let b64 = h.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.clone(), |(u, _)| u.to_string()),
    )
}

async fn api(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = sim.lock().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if sim.roll(sim.lock().faults.drop_rate) {
        return dropped();
    }
    let Some(path) = uri.path().strip_prefix("/api/v1/") else {
        return err(StatusCode::NOT_FOUND, "Not found");
    };
    let path = path.to_string();
    let Some(key) = key_of(&headers).filter(|k| sim.lock().api_keys.contains(k)) else {
        return err(
            StatusCode::UNAUTHORIZED,
            "The API key you provided is invalid.",
        );
    };
    // Rate limit per key and endpoint group, fixed window.
    let (g, limit_of) = group(&method, &path);
    let group_name = g.clone();
    let window = sim.window();
    let (limit, remaining, reset, over) = {
        let mut st = sim.lock();
        let limit = limit_of(&st.limits);
        let w = st
            .windows
            .entry((key.clone(), g))
            .or_insert(crate::store::Window {
                started: Instant::now(),
                count: 0,
            });
        if w.started.elapsed() >= window {
            w.started = Instant::now();
            w.count = 0;
        }
        let reset = (window.saturating_sub(w.started.elapsed())).as_secs_f64();
        let over = w.count >= limit;
        if !over {
            w.count += 1;
        }
        (limit, limit.saturating_sub(w.count), reset, over)
    };
    let storm = {
        let mut st = sim.lock();
        if st.faults.storm > 0 {
            st.faults.storm -= 1;
            true
        } else {
            false
        }
    };
    {
        let mut st = sim.lock();
        let counts = st.stats.entry(group_name).or_default();
        counts.requests += 1;
        if over || storm {
            counts.throttled += 1;
        }
    }
    let mut resp = if over || storm {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": {"rate_reset": reset, "message": "API call count exceeded for this window",
                                        "rate_limit": limit, "rate_window": window.as_secs_f64()}})),
        )
            .into_response();
        let secs = reset.ceil().max(1.0) as u64;
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        r
    } else if sim.roll(sim.lock().faults.error_rate) || {
        let mut st = sim.lock();
        let owed = st.faults.unavailable_left > 0;
        if owed {
            st.faults.unavailable_left -= 1;
        }
        owed
    } {
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable",
        )
    } else {
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return err(StatusCode::BAD_REQUEST, &format!("Invalid JSON: {e}")),
            }
        };
        let query: Map<String, Value> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), json!(v))))
            .collect();
        let r = respond(records::call(
            &mut sim.lock(),
            method.as_str(),
            &path,
            &body,
            &query,
        ));
        if sim.roll(sim.lock().faults.lost_reply_rate) {
            return dropped();
        }
        {
            let mut st = sim.lock();
            let hit = st.faults.lose_reply_to.iter().position(|spec| {
                spec.split_once(' ')
                    .is_some_and(|(m, prefix)| m == method.as_str() && path.starts_with(prefix))
            });
            if let Some(i) = hit {
                st.faults.lose_reply_to.remove(i);
                st.faults.unavailable_left = st.faults.unavailable_after_lost_reply;
                return dropped();
            }
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "limit={limit}, remaining={remaining}, reset={reset:.3}"
    )) {
        h.insert("ratelimit", v);
    }
    h.insert("x-rate-limit-limit", HeaderValue::from(limit));
    h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    if let Ok(v) = HeaderValue::from_str(&format!("{reset:.6}")) {
        h.insert("x-rate-limit-reset", v);
    }
    resp
}

/// A call's answer as HTTP: the body as JSON, or the refusal with its status.
fn respond(reply: Reply) -> Response {
    match reply {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => (r.status, axum::Json(r.body)).into_response(),
    }
}
