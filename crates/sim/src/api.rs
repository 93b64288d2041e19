//! The HTTP surface: auth, rate limits and faults in front of every call, the simulator's own
//! `/_sim/` routes, and replies as HTTP. What a call does to the records is `records`'.

use crate::records::{self, Reply};
use crate::store::{Faults, Sim, Window};
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
    // Rate limits per endpoint group, fixed windows: the key's, and the organisation's (every
    // key together, ORG_KEYS keys' worth). A request is served only within both; the headers
    // tell the tighter of the two.
    let (g, limit_of) = group(&method, &path);
    let group_name = g.clone();
    let window = sim.window();
    let (limit, remaining, reset, over) = {
        let mut guard = sim.lock();
        let st = &mut *guard;
        let key_limit = limit_of(&st.limits);
        let org_limit = key_limit.saturating_mul(crate::store::ORG_KEYS);
        let now = Instant::now();
        let kw = st
            .windows
            .entry((key.clone(), g.clone()))
            .or_insert(Window::new(now));
        let ow = st.org_windows.entry(g).or_insert(Window::new(now));
        let (key_used, org_used) = (kw.roll(window, now), ow.roll(window, now));
        let over = key_used >= key_limit || org_used >= org_limit;
        if !over {
            kw.count += 1;
            ow.count += 1;
        }
        let key = (
            key_limit,
            key_limit.saturating_sub(kw.count),
            kw.reset(window, now),
        );
        let org = (
            org_limit,
            org_limit.saturating_sub(ow.count),
            ow.reset(window, now),
        );
        // The tighter: less remaining, or as little and a later reset; the key's on a tie.
        let org_tighter = org.1 < key.1 || (org.1 == key.1 && org.2 > key.2);
        let (limit, remaining, reset) = if org_tighter { org } else { key };
        (limit, remaining, reset, over)
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn sim(keys: &[&str]) -> Sim {
        Sim::from_snapshot(Some(&json!({
            "api_keys": keys,
            // A long window: nothing resets during the test.
            "limits": {"search": 4, "window_secs": 600.0},
        })))
        .unwrap()
    }

    /// One search with `key`: its status and its `RateLimit` header.
    async fn search(sim: &Sim, key: &str) -> (u16, String) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        let req = Request::post("/api/v1/data/search/")
            .header("authorization", format!("Basic {auth}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"query": {"type": "and", "queries": [{"type": "object_type", "object_type": "lead"}]}}"#))
            .unwrap();
        let resp = router(sim.clone()).oneshot(req).await.unwrap();
        let rl = resp.headers()["ratelimit"].to_str().unwrap().to_string();
        (resp.status().as_u16(), rl)
    }

    #[tokio::test]
    async fn a_fourth_key_adds_nothing_to_the_organisations_budget() {
        let keys = ["k1", "k2", "k3", "k4"];
        let sim = sim(&keys);
        // Round after round, every key once: 4 keys × 4 = 16 fit the keys, 12 fit the org.
        let mut served = 0;
        let mut refused = Vec::new();
        for round in 0..4 {
            for k in keys {
                let (status, rl) = search(&sim, k).await;
                match status {
                    429 => refused.push((round, k, rl)),
                    _ => served += 1,
                }
            }
        }
        assert_eq!(served, 4 * crate::store::ORG_KEYS, "{refused:?}");
        // Every refusal came while its key still had room (it had sent fewer than 4).
        assert_eq!(refused.len(), 4, "{refused:?}");
        for (round, _, rl) in &refused {
            assert_eq!(*round, 3, "{refused:?}");
            assert!(rl.starts_with("limit=12, remaining=0,"), "{rl}");
        }
        assert_eq!(sim.lock().stats["search"].throttled, 4);
    }

    #[tokio::test]
    async fn headers_tell_the_tighter_of_key_and_organisation() {
        let sim = sim(&["k1", "k2", "k3", "k4"]);
        // The key is the tighter at first: 3 left of its 4, 11 of the org's 12.
        assert!(
            search(&sim, "k1")
                .await
                .1
                .starts_with("limit=4, remaining=3,")
        );
        for k in ["k2", "k2", "k2", "k3", "k3", "k3", "k4", "k4", "k4"] {
            assert_ne!(search(&sim, k).await.0, 429);
        }
        // 11 spent of the org's 12: k1 (2 left of 4) hears the org's 1 remaining.
        let (status, rl) = search(&sim, "k1").await;
        assert_eq!(status, 200, "{rl}");
        assert!(rl.starts_with("limit=12, remaining=1,"), "{rl}");
    }

    #[tokio::test]
    async fn up_to_three_keys_each_get_their_whole_budget() {
        for n in 1..=3 {
            let keys = &["k1", "k2", "k3"][..n];
            let sim = sim(keys);
            for k in keys {
                for i in 0..4 {
                    let (status, rl) = search(&sim, k).await;
                    assert_eq!(status, 200, "{n} keys, {k} #{i}: {rl}");
                }
                // Its own limit still holds.
                assert_eq!(search(&sim, k).await.0, 429, "{n} keys, {k} #5");
            }
        }
    }
}
