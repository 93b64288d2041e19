//! Segment-compatible intake: `POST /v1/identify|track|group|page|screen|alias|batch`, the
//! browser library's `/v1/b` and `/v1/i|t|p|s|g|a`, JSON or `text/plain`, gzip, and the three
//! ways of authenticating. An event is answered 200 only once it is durable in the queue.
//!
//! Status codes follow Segment's (clients drop a batch on any 4xx but 408/410/429/460, so 400
//! means "this can never succeed"; anything transient is 503 with `Retry-After`), with a JSON
//! body that names the problem and, for a batch, each rejected item's index.

pub mod body;
pub mod compat;
pub mod cors;
pub mod event;
pub mod pressure;

use crate::app::App;
use crate::error::Refusal;
use crate::telemetry::{self, InternalEvent};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use body::BodyError;
use closeflow_queue::{Enqueued, NewEvent, Queue, QueueError};
use event::{BATCH_ITEMS, BATCH_LIMIT, EVENT_LIMIT, Rejected, RouteType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The intake routes and the event type each one implies (`None`: a batch).
pub const ROUTES: &[(&str, RouteType)] = &[
    ("/v1/identify", Some("identify")),
    ("/v1/track", Some("track")),
    ("/v1/page", Some("page")),
    ("/v1/screen", Some("screen")),
    ("/v1/group", Some("group")),
    ("/v1/alias", Some("alias")),
    ("/v1/batch", None),
    ("/v1/import", None),
    ("/v1/b", None),
    ("/v1/i", Some("identify")),
    ("/v1/t", Some("track")),
    ("/v1/p", Some("page")),
    ("/v1/s", Some("screen")),
    ("/v1/g", Some("group")),
    ("/v1/a", Some("alias")),
];

/// The user name of `Authorization: Basic base64(KEY:)`.
fn basic_key(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_string())
}

/// The most a batch's shared context and integrations may add up to once merged into every
/// item (a 1 KB context on 2,500 events is 2.5 MB).
pub const MERGE_BUDGET: usize = 16 * 1024 * 1024;

/// The events of a request body that parsed as JSON.
#[derive(Debug)]
pub struct Parsed {
    /// The events, or why the body as a whole holds none; checked only once the request is
    /// authenticated, so an unknown client learns nothing about the body's shape.
    pub events: Result<Events, Refusal>,
}

/// What intake keeps of a body: the accepted events (enriched, the write key stripped) and
/// each rejected item by index.
#[derive(Debug)]
pub struct Events {
    pub count: usize,
    pub accepted: Vec<NewEvent>,
    /// What each accepted event's journey is found by, read while the event was a tree (one
    /// per accepted event, in order): the received stage then needs no parse.
    pub hints: Vec<crate::journey::stages::Hints>,
    pub rejected: Vec<Rejected>,
}

/// The request body → events step, without I/O: decompression within the limits, JSON,
/// the body's write key, batch structure and each item's checks. The fuzz target
/// `intake_body` runs exactly this.
pub fn parse_request(
    raw: &[u8],
    encoding: Option<&str>,
    route: RouteType,
    received: jiff::Timestamp,
) -> Result<Parsed, Refusal> {
    let (what, limit) = match route {
        Some(_) => ("the event limit of 32 KB", EVENT_LIMIT),
        None => ("the batch limit of 500 KB", BATCH_LIMIT),
    };
    let bytes = body::decode(raw, encoding, what, limit).map_err(|e| body_refusal(&e, route))?;
    parse_decoded(&bytes, route, received)
}

/// The 400 for a body that is not JSON: it can never succeed, whoever sent it (as Segment
/// answers), so it is said before authentication.
fn invalid_json(bytes: &[u8], e: &serde_json::Error) -> Refusal {
    let why = if std::str::from_utf8(bytes).is_err() {
        "the body is not UTF-8 text".to_string()
    } else {
        format!("the body is not valid JSON: {e}")
    };
    Refusal::bad("invalid_json", why)
}

/// [`parse_request`] after decompression: `bytes` is the body's content.
pub fn parse_decoded(
    bytes: &[u8],
    route: RouteType,
    received: jiff::Timestamp,
) -> Result<Parsed, Refusal> {
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| invalid_json(bytes, &e))?;
    Ok(Parsed {
        events: events_of(parsed, route, received),
    })
}

fn body_refusal(e: &BodyError, route: RouteType) -> Refusal {
    let (status, code) = match e {
        BodyError::TooLarge { .. } if route.is_some() => {
            (StatusCode::BAD_REQUEST, "event_too_large")
        }
        BodyError::TooLarge { .. } => (StatusCode::BAD_REQUEST, "batch_too_large"),
        BodyError::BadGzip(_) => (StatusCode::BAD_REQUEST, "invalid_gzip"),
        BodyError::Encoding(_) => (StatusCode::BAD_REQUEST, "unsupported_encoding"),
        BodyError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
        BodyError::Read(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
    };
    Refusal::new(status, code, e.to_string())
}

fn events_of(
    parsed: Value,
    route: RouteType,
    received: jiff::Timestamp,
) -> Result<Events, Refusal> {
    let (items, sent_at) = match route {
        Some(_) => (vec![parsed], None),
        None => {
            let Value::Object(m) = &parsed else {
                return Err(Refusal::bad(
                    "not_a_batch",
                    "a batch body is a JSON object: {\"batch\": [event, …]}",
                ));
            };
            let n = m.get("batch").and_then(Value::as_array).map_or(0, Vec::len);
            if n > BATCH_ITEMS {
                return Err(Refusal::bad(
                    "too_many_events",
                    format!("the batch holds {n} events; the limit is {BATCH_ITEMS}"),
                ));
            }
            // The top-level context and integrations are copied into every item: bound what
            // that copying can make of a small body before doing it.
            let shared: usize = ["context", "integrations"]
                .iter()
                .filter_map(|k| m.get(*k)?.as_object())
                .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
                .sum();
            if shared > EVENT_LIMIT || shared.saturating_mul(n) > MERGE_BUDGET {
                return Err(Refusal::bad(
                    "batch_too_large",
                    format!(
                        "the batch's top-level context and integrations ({shared} bytes) are merged into each of its {n} events; that exceeds the event limit of 32 KB or {} MB in all",
                        MERGE_BUDGET >> 20
                    ),
                ));
            }
            let Some(items) = closeflow_mapping::events::batch_items(m) else {
                return Err(Refusal::bad(
                    "not_a_batch",
                    "a batch body needs a `batch` list of events",
                ));
            };
            // `sentAt` is copied into items that lack one: only a timestamp is worth copying.
            let sent_at = m
                .get("sentAt")
                .filter(|v| v.as_str().is_some_and(|t| t.len() <= 64))
                .cloned();
            (items, sent_at)
        }
    };
    let count = items.len();
    let mut accepted = Vec::with_capacity(count);
    let mut hints = Vec::with_capacity(count);
    let mut rejected: Vec<Rejected> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut h = crate::journey::stages::Hints::of(&item);
        if let Some(t) = route {
            // A per-type route's event may leave `type` out: the route says it.
            h.kind.get_or_insert_with(|| t.to_string());
        }
        match event::accept(item, i, route, sent_at.as_ref(), received) {
            Ok(e) => {
                accepted.push(e);
                hints.push(h);
            }
            Err(r) => rejected.push(r),
        }
    }
    Ok(Events {
        count,
        accepted,
        hints,
        rejected,
    })
}

/// The top-level `writeKey` of a JSON body, found without building anything else: every other
/// value is skipped as it is read (no allocation, no batch). `Err` when the body is no JSON
/// object; `Ok(None)` when it has no text `writeKey`. `given` says a `writeKey` field was there.
pub fn scan_body_key(bytes: &[u8]) -> Result<(Option<String>, bool), serde_json::Error> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Scan;
    impl<'de> Visitor<'de> for Scan {
        type Value = (Option<String>, bool);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut key, mut given) = (None, false);
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if k == "writeKey" && !given {
                    given = true;
                    key = map.next_value::<Value>()?.as_str().map(str::to_string);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok((key, given))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = (&mut de).deserialize_map(Scan)?;
    de.end()?;
    Ok(found)
}

/// A 401 for a request whose write key opens no instance.
fn unauthorized(given: bool) -> Refusal {
    if given {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unknown_write_key",
            "the write key is not one this server knows",
        )
    } else {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "missing_write_key",
            "no write key: send it as the HTTP Basic user name, or as `writeKey` in the body",
        )
    }
}

pub async fn ingest<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    (path, route): (&'static str, RouteType),
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    if app.shutting_down.load(Ordering::Relaxed) {
        return Err(Refusal::shutting_down());
    }
    pressure::disk_pressure(&app)?;
    // Authentication comes before any work on the body. A Basic key is the request's key: when
    // it opens nothing the request is refused before its body is read. Without one, the body's
    // `writeKey` is looked for by a scan that builds nothing, run for one request at a time off
    // the async workers, so unauthenticated traffic cannot starve the rest.
    let basic = basic_key(&headers);
    let mut instances = match &basic {
        Some(k) => {
            let found = app.registry.instances_for_key(k);
            if found.is_empty() {
                return Err(unauthorized(true));
            }
            found
        }
        None => Vec::new(),
    };
    if !instances.is_empty() {
        pressure::back_pressure(&app, &instances)?;
    }
    let (what, limit) = match route {
        Some(_) => ("the event limit of 32 KB", EVENT_LIMIT),
        None => ("the batch limit of 500 KB", BATCH_LIMIT),
    };
    let raw = body::collect(body, what, limit, app.body_timeout)
        .await
        .map_err(|e| body_refusal(&e, route))?;
    let encoding = body::encoding(&headers);
    // The key that let the request in (to name it in journeys by its place, never by itself).
    let mut body_key = None;
    let decoded = if instances.is_empty() {
        let Ok(_permit) = app.unauthenticated.acquire().await else {
            return Err(Refusal::shutting_down());
        };
        let enc = encoding.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let bytes = body::decode(&raw, enc.as_deref(), what, limit)
                .map_err(|e| body_refusal(&e, route))?;
            match scan_body_key(&bytes) {
                Ok(key) => Ok((bytes, key)),
                // Not JSON: the 400 the full parse gives. JSON but not an object: no key, and
                // an unknown client learns nothing more about the body's shape.
                Err(e) if e.is_syntax() || e.is_eof() => Err(invalid_json(&bytes, &e)),
                Err(_) => Ok((bytes, (None, false))),
            }
        })
        .await;
        let (bytes, (key, given)) = scanned.map_err(|_| {
            Refusal::unavailable(
                "internal_error",
                "the request could not be read; retry later",
            )
        })??;
        if let Some(k) = &key {
            instances = app.registry.instances_for_key(k);
        }
        body_key = key;
        if instances.is_empty() {
            return Err(unauthorized(given));
        }
        pressure::back_pressure(&app, &instances)?;
        bytes
    } else {
        body::decode(&raw, encoding.as_deref(), what, limit).map_err(|e| body_refusal(&e, route))?
    };
    let Events {
        count,
        accepted: events,
        hints,
        rejected,
    } = parse_decoded(&decoded, route, jiff::Timestamp::now())?.events?;
    for inst in &instances {
        telemetry::EventsReceived {
            instance: inst,
            count,
        }
        .emit();
        for r in &rejected {
            telemetry::EventRejected {
                instance: inst,
                code: r.code,
                index: r.index,
                message: &r.error,
            }
            .emit();
        }
    }
    if events.is_empty() && !rejected.is_empty() {
        let (code, error) = if route.is_some() {
            (rejected[0].code, rejected[0].error.clone())
        } else {
            (
                "invalid_events",
                "no event of the batch could be accepted".to_string(),
            )
        };
        return Err(Refusal::bad(code, error).with("rejected", json!(rejected)));
    }
    let mut fresh = vec![false; events.len()];
    for inst in &instances {
        // How each event arrived, stored with it for its journey (see `journey::stages::meta`).
        let door = crate::journey::stages::Door {
            route: path,
            key_place: basic
                .as_deref()
                .or(body_key.as_deref())
                .and_then(|k| app.registry.key_place(inst, k)),
            how: if basic.is_some() { "basic" } else { "body" },
        };
        let metas: Vec<Option<String>> = events
            .iter()
            .zip(&hints)
            .map(|(e, h)| {
                app.recorder
                    .on()
                    .then(|| crate::journey::stages::meta(inst, e.body.len(), &door, h))
            })
            .collect();
        let mut these = events.clone();
        for (e, m) in these.iter_mut().zip(&metas) {
            e.meta.clone_from(m);
        }
        match app.queue.enqueue(inst, these).await {
            Ok(res) => {
                for ((e, m), r) in events.iter().zip(&metas).zip(&res) {
                    if *r == Enqueued::Duplicate
                        && let Some(m) = m
                    {
                        app.recorder.record(crate::journey::stages::duplicate(
                            inst,
                            &e.message_id,
                            m,
                        ));
                    }
                }
                for (f, r) in fresh.iter_mut().zip(res) {
                    *f |= r == Enqueued::Accepted;
                }
                app.wakers.wake(inst);
            }
            Err(QueueError::Full(why)) => {
                app.disk_full.store(true, Ordering::Relaxed);
                return Err(Refusal::unavailable(
                    "disk_full",
                    format!(
                        "the queue is full ({why}); this request was not accepted, retry later"
                    ),
                ));
            }
            Err(e) => {
                telemetry::QueueFailed {
                    what: "enqueue",
                    error: &e,
                }
                .emit();
                return Err(Refusal::unavailable(
                    "queue_unavailable",
                    "the queue cannot store events right now; retry later",
                ));
            }
        }
    }
    let accepted = fresh.iter().filter(|f| **f).count();
    let mut reply =
        json!({"success": true, "accepted": accepted, "duplicates": events.len() - accepted});
    if !rejected.is_empty() {
        reply["rejected"] = json!(rejected);
    }
    Ok((StatusCode::OK, axum::Json(reply)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_merges_its_top_level_context_and_integrations_into_items_item_wins() {
        let body = json!({
            "context": {"library": {"name": "analytics-python"}, "ip": "10.0.0.1"},
            "integrations": {"All": false, "Close": true},
            "batch": [
                {"type": "identify", "userId": "u1", "messageId": "m1"},
                {"type": "track", "event": "E", "userId": "u2", "messageId": "m2",
                 "context": {"ip": "10.0.0.2"}, "integrations": {"All": true}}
            ]
        });
        let raw = serde_json::to_vec(&body).unwrap();
        let parsed = parse_request(&raw, None, None, jiff::Timestamp::now()).unwrap();
        let events = parsed.events.unwrap();
        assert!(events.rejected.is_empty());
        let stored: Vec<Value> = events
            .accepted
            .iter()
            .map(|e| serde_json::from_str(&e.body).unwrap())
            .collect();
        assert_eq!(stored[0]["context"]["ip"], "10.0.0.1");
        assert_eq!(stored[0]["context"]["library"]["name"], "analytics-python");
        assert_eq!(stored[0]["integrations"]["Close"], true);
        assert_eq!(
            stored[1]["context"]["ip"], "10.0.0.2",
            "the item's own value wins"
        );
        assert_eq!(stored[1]["context"]["library"]["name"], "analytics-python");
        assert_eq!(stored[1]["integrations"]["All"], true);
        assert_eq!(stored[1]["integrations"]["Close"], true);
    }
}
