//! The HTTP surface: auth, rate limits and faults in front of every call, then the routes.

use crate::search::{self, Obj};
use crate::store::{Faults, Inner, Sim, new_id};
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
        let r = dispatch(&mut sim.lock(), &method, &path, &body, &query);
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

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn dispatch(
    st: &mut Inner,
    method: &Method,
    path: &str,
    body: &Value,
    query: &Map<String, Value>,
) -> Response {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["me"]) => {
            ok(json!({"id": "user_sim", "email": "sim@closeflow.invalid", "first_name": "Sim"}))
        }
        ("POST", ["data", "search"]) => search(st, body),
        ("GET", ["lead"]) => {
            let skip = query
                .get("_skip")
                .and_then(|v| v.as_str()?.parse().ok())
                .unwrap_or(0usize);
            let limit = query
                .get("_limit")
                .and_then(|v| v.as_str()?.parse().ok())
                .unwrap_or(100usize);
            let all: Vec<Value> = st.leads.iter().map(|l| lead_view(st, l)).collect();
            let page: Vec<Value> = all.iter().skip(skip).take(limit).cloned().collect();
            ok(
                json!({"data": page, "has_more": skip + limit < all.len(), "total_results": all.len()}),
            )
        }
        ("POST", ["lead"]) => create_lead(st, body),
        ("GET", ["lead", id]) => match st
            .leads
            .iter()
            .find(|l| l.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(l) => ok(pick(
                &lead_view(st, l),
                query.get("_fields").and_then(Value::as_str),
            )),
            None => err(
                StatusCode::NOT_FOUND,
                "Empty query: Lead matching query does not exist.",
            ),
        },
        ("PUT", ["lead", id]) => update(st, "lead", id, body),
        ("DELETE", ["lead", id]) => {
            let before = st.leads.len();
            st.leads
                .retain(|l| l.get("id").and_then(Value::as_str) != Some(id));
            st.contacts
                .retain(|c| c.get("lead_id").and_then(Value::as_str) != Some(id));
            if st.leads.len() == before {
                err(StatusCode::NOT_FOUND, "Not found")
            } else {
                ok(json!({}))
            }
        }
        ("POST", ["contact"]) => create_contact(st, body),
        ("GET", ["contact", id]) => match st
            .contacts
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(c) => ok(Value::Object(c.clone())),
            None => err(
                StatusCode::NOT_FOUND,
                "Empty query: Contact matching query does not exist.",
            ),
        },
        ("PUT", ["contact", id]) => update(st, "contact", id, body),
        ("DELETE", ["contact", id]) => {
            let before = st.contacts.len();
            st.contacts
                .retain(|c| c.get("id").and_then(Value::as_str) != Some(id));
            if st.contacts.len() == before {
                err(StatusCode::NOT_FOUND, "Not found")
            } else {
                ok(json!({}))
            }
        }
        ("GET", ["custom_field", kind]) => {
            // Close lists custom fields by name (recorded).
            let mut data: Vec<Value> = st
                .custom_fields
                .get(*kind)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            data.sort_by_key(|f| {
                f.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            });
            ok(json!({"data": data, "has_more": false}))
        }
        ("POST", ["custom_field", kind]) => {
            let Some(name) = body.get("name").and_then(Value::as_str) else {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"errors": [], "field-errors": {"name": "This field is required."}}),
                    ),
                )
                    .into_response();
            };
            let now = st.now();
            let cf = json!({"id": new_id("cf"), "name": name, "type": body.get("type").cloned().unwrap_or(json!("text")),
                            "choices": body.get("choices").cloned().unwrap_or(Value::Null), "accepts_multiple_values": false,
                            "description": null, "date_created": now, "date_updated": now, "editable_with_roles": [],
                            "is_shared": false, "organization_id": "orga_sim", "created_by": "user_sim", "updated_by": "user_sim"});
            let list = st
                .custom_fields
                .entry(kind.to_string())
                .or_insert(json!([]));
            if let Value::Array(a) = list {
                a.push(cf.clone());
            }
            ok(cf)
        }
        ("DELETE", ["custom_field", kind, id]) => {
            if let Some(Value::Array(a)) = st.custom_fields.get_mut(*kind) {
                a.retain(|c| c.get("id").and_then(Value::as_str) != Some(id));
            }
            ok(json!({}))
        }
        ("GET", ["status", "lead"]) => ok(json!({"data": st.lead_statuses, "has_more": false})),
        _ => err(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// Server defaults on a contact: list entry types, `phone_formatted`, `""` for null text.
pub(crate) fn normalise_contact(c: &mut Obj) {
    for k in ["name", "title"] {
        if !matches!(c.get(k), Some(Value::String(_))) {
            c.insert(k.into(), json!(""));
        }
    }
    let fix = |c: &mut Obj, key: &str, default_type: &str, f: &dyn Fn(&mut Obj)| {
        let list = match c.get(key) {
            Some(Value::Array(a)) => a.clone(),
            _ => vec![],
        };
        let fixed: Vec<Value> = list
            .into_iter()
            .filter_map(|e| match e {
                Value::Object(mut m) => {
                    m.entry("type").or_insert(json!(default_type));
                    f(&mut m);
                    Some(Value::Object(m))
                }
                _ => None,
            })
            .collect();
        c.insert(key.into(), Value::Array(fixed));
    };
    fix(c, "emails", "office", &|_| {});
    fix(c, "phones", "office", &|m| {
        let p = m.get("phone").cloned().unwrap_or(Value::Null);
        m.entry("phone_formatted").or_insert(p);
        m.entry("country").or_insert(Value::Null);
    });
    fix(c, "urls", "url", &|_| {});
    let display = match c.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => c
            .get("emails")
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    c.insert("display_name".into(), json!(display));
    c.entry("organization_id").or_insert(json!("orga_sim"));
    for k in ["created_by", "updated_by"] {
        c.entry(k).or_insert(json!("user_sim"));
    }
    c.entry("integration_links").or_insert(json!([]));
}

fn lead_view(st: &Inner, l: &Obj) -> Value {
    let mut v = l.clone();
    let id = l.get("id").cloned().unwrap_or(Value::Null);
    let contacts: Vec<Value> = st
        .contacts
        .iter()
        .filter(|c| c.get("lead_id") == Some(&id))
        .map(|c| Value::Object(c.clone()))
        .collect();
    v.insert("contacts".into(), Value::Array(contacts));
    let status = l
        .get("status_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    v.insert("status_label".into(), st.status_label(status));
    let name = l
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    v.insert("display_name".into(), json!(name));
    v.insert(
        "html_url".into(),
        json!(format!(
            "https://app.close.com/lead/{}/",
            id.as_str().unwrap_or_default()
        )),
    );
    v.entry("url").or_insert(Value::Null);
    v.entry("organization_id").or_insert(json!("orga_sim"));
    // Replies also carry the values keyed by the custom field's *name* (a legacy form).
    let custom: Map<String, Value> = l
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("custom.")?;
            Some((custom_name(&st.custom_fields, "lead", id), v.clone()))
        })
        .collect();
    v.insert("custom".into(), Value::Object(custom));
    for k in ["addresses", "opportunities", "tasks", "integration_links"] {
        v.entry(k).or_insert(json!([]));
    }
    for k in ["created_by", "updated_by"] {
        v.entry(k).or_insert(json!("user_sim"));
    }
    for k in ["created_by_name", "updated_by_name"] {
        v.entry(k).or_insert(json!("Sim"));
    }
    Value::Object(v)
}

fn pick(v: &Value, fields: Option<&str>) -> Value {
    let Some(fields) = fields else {
        return v.clone();
    };
    let Value::Object(m) = v else {
        return v.clone();
    };
    let wanted: Vec<&str> = fields.split(',').collect();
    Value::Object(
        m.iter()
            .filter(|(k, _)| wanted.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// A custom field's name by id (its id when the org does not define it).
fn custom_name(fields: &Obj, kind: &str, id: &str) -> String {
    [kind, "shared"]
        .iter()
        .filter_map(|k| fields.get(*k).and_then(Value::as_array))
        .flatten()
        .find(|f| f.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|f| f.get("name").and_then(Value::as_str))
        .unwrap_or(id)
        .to_string()
}

/// The type of a custom field by id, from any of the org's custom field lists.
fn custom_type<'a>(fields: &'a Obj, id: &str) -> Option<&'a str> {
    fields
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .find(|f| f.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|f| f.get("type").and_then(Value::as_str))
}

/// Close stores a `date` as `YYYY-MM-DD` and a `datetime` as the same instant in UTC, written
/// `YYYY-MM-DDTHH:MM:SS[.fraction]+00:00` (recorded).
fn stored_form(kind: Option<&str>, v: &Value) -> Value {
    if let Value::Array(items) = v {
        return Value::Array(items.iter().map(|x| stored_form(kind, x)).collect());
    }
    let Some(s) = v.as_str() else {
        return v.clone();
    };
    match kind {
        Some("date") if s.len() >= 10 && s.as_bytes()[4] == b'-' => json!(s[..10]),
        Some("datetime") => utc(s).map_or_else(|| v.clone(), Value::String),
        _ => v.clone(),
    }
}

/// An RFC 3339 time rewritten in UTC; `None` when it is not one.
fn utc(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if s.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    // The fraction is kept as written (none when it is all zeros).
    let mut frac = String::new();
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        rest = &r[digits.len()..];
        if !digits.trim_end_matches('0').is_empty() {
            frac = format!(".{digits}");
        }
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs = crate::store::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let text = crate::store::format_rfc3339(secs, 0);
    Some(format!("{}{frac}+00:00", &text[..19]))
}

fn apply_fields(target: &mut Obj, body: &Obj, allowed: &[&str], fields: &Obj) {
    for (k, v) in body {
        if let Some(id) = k.strip_prefix("custom.") {
            if k.ends_with(".add") || k.ends_with(".remove") {
                continue;
            }
            if v.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), stored_form(custom_type(fields, id), v));
            }
        } else if allowed.contains(&k.as_str()) {
            target.insert(k.clone(), v.clone());
        }
    }
}

const LEAD_FIELDS: &[&str] = &["name", "description", "url", "status_id"];
const CONTACT_FIELDS: &[&str] = &["name", "title", "emails", "phones", "urls", "lead_id"];

fn bad_field(field: &str, msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"errors": [], "field-errors": {field: msg}})),
    )
        .into_response()
}

fn check_contact_body(b: &Obj) -> Result<(), Response> {
    for (list, key) in [("emails", "email"), ("phones", "phone"), ("urls", "url")] {
        if let Some(v) = b.get(list) {
            let Some(items) = v.as_array() else {
                return Err(bad_field(list, "Expected a list of items."));
            };
            if items
                .iter()
                .any(|i| !i.get(key).is_some_and(Value::is_string))
            {
                return Err(bad_field(list, &format!("Each item needs a `{key}`.")));
            }
        }
    }
    Ok(())
}

/// A new lead from a create body: the API's defaults, the body's fields, creation dates.
fn new_lead(st: &mut Inner, b: &Obj) -> Obj {
    let now = st.now();
    let mut lead = Obj::new();
    lead.insert("id".into(), json!(new_id("lead")));
    lead.insert("name".into(), json!(""));
    lead.insert("description".into(), json!(""));
    lead.insert("status_id".into(), st.default_status());
    let cfs = st.custom_fields.clone();
    apply_fields(&mut lead, b, LEAD_FIELDS, &cfs);
    lead.insert("date_created".into(), json!(now));
    lead.insert("date_updated".into(), json!(now));
    lead
}

/// A new contact under `lead_id` from a create body, with the server's defaults.
fn new_contact(st: &mut Inner, lead_id: &str, b: &Obj) -> Obj {
    let now = st.now();
    let mut c = Obj::new();
    let cfs = st.custom_fields.clone();
    apply_fields(&mut c, b, CONTACT_FIELDS, &cfs);
    c.insert("id".into(), json!(new_id("cont")));
    c.insert("lead_id".into(), json!(lead_id));
    c.insert("date_created".into(), json!(now));
    c.insert("date_updated".into(), json!(now));
    normalise_contact(&mut c);
    c
}

fn create_lead(st: &mut Inner, body: &Value) -> Response {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    let contacts: Vec<&Obj> = match b.get("contacts") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(cs)) => {
            let Some(cs) = cs.iter().map(Value::as_object).collect::<Option<Vec<_>>>() else {
                return bad_field("contacts", "Expected a list of objects.");
            };
            cs
        }
        Some(_) => return bad_field("contacts", "Expected a list of objects."),
    };
    for cb in &contacts {
        if let Err(r) = check_contact_body(cb) {
            return r;
        }
    }
    let lead = new_lead(st, b);
    if let Some(s) = lead.get("status_id").and_then(Value::as_str)
        && st.status_label(s).is_null()
    {
        return bad_field("status_id", "Invalid lead status.");
    }
    let id = lead
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for cb in contacts {
        let c = new_contact(st, &id, cb);
        st.contacts.push(c);
    }
    st.leads.push(lead.clone());
    ok(lead_view(st, &lead))
}

fn create_contact(st: &mut Inner, body: &Value) -> Response {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    if let Err(r) = check_contact_body(b) {
        return r;
    }
    let lead_id = match b.get("lead_id").and_then(Value::as_str) {
        Some(l)
            if st
                .leads
                .iter()
                .any(|x| x.get("id").and_then(Value::as_str) == Some(l)) =>
        {
            l.to_string()
        }
        Some(_) => return bad_field("lead_id", "Lead matching query does not exist."),
        None => {
            // Without a lead, Close creates one named after the contact.
            let mut named = Obj::new();
            named.insert("name".into(), b.get("name").cloned().unwrap_or(json!("")));
            let lead = new_lead(st, &named);
            let id = lead
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            st.leads.push(lead);
            id
        }
    };
    let c = new_contact(st, &lead_id, b);
    st.contacts.push(c.clone());
    ok(Value::Object(c))
}

fn update(st: &mut Inner, kind: &str, id: &str, body: &Value) -> Response {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    if kind == "contact"
        && let Err(r) = check_contact_body(b)
    {
        return r;
    }
    let now = st.now();
    let cfs = st.custom_fields.clone();
    if kind == "lead" {
        let Some(i) = st
            .leads
            .iter()
            .position(|l| l.get("id").and_then(Value::as_str) == Some(id))
        else {
            return err(
                StatusCode::NOT_FOUND,
                "Empty query: Lead matching query does not exist.",
            );
        };
        let mut l = st.leads[i].clone();
        apply_fields(&mut l, b, LEAD_FIELDS, &cfs);
        l.insert("date_updated".into(), json!(now));
        st.leads[i] = l.clone();
        ok(lead_view(st, &l))
    } else {
        let Some(c) = st
            .contacts
            .iter_mut()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        else {
            return err(
                StatusCode::NOT_FOUND,
                "Empty query: Contact matching query does not exist.",
            );
        };
        // Lists in the body replace the stored lists whole, as Close's PUT does.
        apply_fields(c, b, CONTACT_FIELDS, &cfs);
        c.insert("date_updated".into(), json!(now));
        normalise_contact(c);
        ok(Value::Object(c.clone()))
    }
}

/// Leaf conditions of a query (what a bound on query size counts).
fn conditions(node: &Value) -> u32 {
    match node.get("queries").and_then(Value::as_array) {
        Some(qs) => qs.iter().map(conditions).sum(),
        None => match node.get("type").and_then(Value::as_str) {
            Some("object_type") => 0,
            Some("has_related") => node.get("related_query").map_or(1, conditions).max(1),
            _ => 1,
        },
    }
}

fn search(st: &mut Inner, body: &Value) -> Response {
    let Some(query) = body.get("query") else {
        return bad_field("query", "This field is required.");
    };
    let most = st.limits.search_conditions;
    if most > 0 {
        let n = conditions(query);
        if n > most {
            return err(
                StatusCode::BAD_REQUEST,
                &format!("The query is too complex ({n} conditions; at most {most})."),
            );
        }
    }
    // A cursor continues an earlier result set.
    let page_size = body
        .get("_limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 200) as usize;
    let (rows, offset) = if let Some(cur) = body.get("cursor").and_then(Value::as_str) {
        let (key, off) = cur.rsplit_once(':').unwrap_or((cur, "0"));
        match st.cursors.get(key) {
            Some((rows, made)) if made.elapsed().as_secs() < 30 => {
                (rows.clone(), off.parse().unwrap_or(0))
            }
            _ => return err(StatusCode::BAD_REQUEST, "Cursor expired or invalid."),
        }
    } else {
        let contacts = st.contacts.clone();
        let contacts_of = move |lead: &Obj| -> Vec<Obj> {
            contacts
                .iter()
                .filter(|c| c.get("lead_id") == lead.get("id"))
                .cloned()
                .collect()
        };
        let mut rows: Vec<(String, Obj)> = Vec::new();
        for (kind, objs) in [("lead", &st.leads), ("contact", &st.contacts)] {
            for o in objs.iter() {
                match search::matches(query, kind, o, &contacts_of) {
                    Ok(true) => rows.push((kind.to_string(), o.clone())),
                    Ok(false) => {}
                    Err(e) => return err(StatusCode::BAD_REQUEST, &e),
                }
            }
        }
        if let Some(Value::Array(sort)) = body.get("sort")
            && let Some(s) = sort.first()
        {
            let field = s
                .pointer("/field/field_name")
                .and_then(Value::as_str)
                .unwrap_or("date_created")
                .to_string();
            let desc = s.get("direction").and_then(Value::as_str) == Some("desc");
            rows.sort_by(|a, b| {
                let ka = a.1.get(&field).map(Value::to_string).unwrap_or_default();
                let kb = b.1.get(&field).map(Value::to_string).unwrap_or_default();
                if desc { kb.cmp(&ka) } else { ka.cmp(&kb) }
            });
        }
        let fields = body.get("_fields");
        let shaped: Vec<Value> = rows
            .into_iter()
            .map(|(kind, o)| {
                let wanted: Option<Vec<String>> = fields
                    .and_then(|f| f.get(&kind))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    });
                let mut out = Obj::new();
                out.insert("__object_type".into(), json!(kind));
                out.insert("id".into(), o.get("id").cloned().unwrap_or(Value::Null));
                if kind == "contact" {
                    out.insert(
                        "lead_id".into(),
                        o.get("lead_id").cloned().unwrap_or(Value::Null),
                    );
                }
                if let Some(w) = wanted {
                    for k in w {
                        if let Some(v) = o.get(&k) {
                            out.insert(k, v.clone());
                        }
                    }
                }
                Value::Object(out)
            })
            .collect();
        (shaped, 0usize)
    };
    let page: Vec<Value> = rows.iter().skip(offset).take(page_size).cloned().collect();
    let cursor = if offset + page_size < rows.len() {
        let key = new_id("cur");
        st.cursors
            .insert(key.clone(), (rows.clone(), Instant::now()));
        Value::String(format!("{key}:{}", offset + page_size))
    } else {
        Value::Null
    };
    ok(json!({"data": page, "cursor": cursor}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_stored_as_the_same_instant_in_utc() {
        let dt = |s: &str| stored_form(Some("datetime"), &json!(s));
        assert_eq!(dt("2026-01-01T10:00:00Z"), "2026-01-01T10:00:00+00:00");
        assert_eq!(
            dt("2026-01-01T10:00:00.000+00:00"),
            "2026-01-01T10:00:00+00:00"
        );
        assert_eq!(
            dt("2026-01-01T02:30:00.25+05:30"),
            "2025-12-31T21:00:00.25+00:00"
        );
        assert_eq!(dt("2026-03-01T01:00:00-02:00"), "2026-03-01T03:00:00+00:00");
        assert_eq!(dt("not a time"), "not a time");
        assert_eq!(
            stored_form(Some("date"), &json!(["2026-01-05T10:00:00Z"])),
            json!(["2026-01-05"])
        );
    }

    #[test]
    fn lead_replies_key_custom_by_field_name() {
        let sim = Sim::from_snapshot(Some(&json!({
            "custom_fields": {"lead": [{"id": "cf_plan", "name": "Plan", "type": "text"}]},
            "leads": [{"id": "lead_1", "custom.cf_plan": "pro", "custom.cf_other": 1}]
        })))
        .unwrap();
        let st = sim.lock();
        let v = lead_view(&st, &st.leads[0]);
        assert_eq!(v["custom"], json!({"Plan": "pro", "cf_other": 1}));
        assert_eq!(v["custom.cf_plan"], "pro");
    }
}
