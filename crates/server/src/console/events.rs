//! Events: find journeys by messageId, User ID, email or Company ID, and read each one: how it
//! arrived, each mapping's verdict with the conditions that decided it, the payload, the plan
//! as `dry-run` prints it, each Close call, and the outcome.

use super::{Access, access, page, qs};
use crate::app::App;
use crate::journey::render;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use closeflow_queue::Queue;
use closeflow_queue::journey::{Find, Journey, Key, Query as JQuery, Stage};
use maud::{Markup, html};
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, Default)]
pub struct Search {
    by: Option<String>,
    q: Option<String>,
    since: Option<String>,
}

const BY: [(&str, &str); 4] = [
    ("message_id", "messageId"),
    ("email", "email"),
    ("user_id", "User ID"),
    ("company_id", "Company ID"),
];

pub async fn page<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    Query(f): Query<Search>,
) -> Response {
    let s = match access(&app, &headers) {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    let by = f.by.clone().unwrap_or_else(|| "email".into());
    let q = f.q.clone().unwrap_or_default().trim().to_string();
    let since = f.since.clone().unwrap_or_else(|| "7d".into());
    let mut error = None;
    let mut found: Option<Vec<Journey>> = None;
    if !q.is_empty() {
        let window = crate::admin::parse_since(&since);
        let find = match by.as_str() {
            "message_id" => Some(Find::MessageId(q.clone())),
            k @ ("email" | "user_id" | "company_id") => Some(Find::Key(Key::new(k, &q))),
            _ => None,
        };
        match (find, window) {
            (None, _) => {
                error = Some("Search by messageId, email, User ID or Company ID.".to_string())
            }
            (_, None) => {
                error = Some(format!(
                    "since={since}: expected a span such as 30m, 24h or 7d"
                ))
            }
            (Some(find), Some(w)) => {
                app.recorder.flush().await;
                let query = JQuery {
                    since: if matches!(find, Find::MessageId(_)) {
                        0
                    } else {
                        closeflow_queue::now_ms() - w
                    },
                    find,
                    instance: None,
                    limit: 50,
                };
                match app.journals.find(&query).await {
                    Ok(v) => found = Some(v),
                    Err(e) => error = Some(e.to_string()),
                }
            }
        }
    }
    let body = html! {
        form.row method="get" action="/console/events" {
            label { "Find by " select name="by" {
                @for (v, label) in BY { option value=(v) selected[v == by] { (label) } }
            } }
            input type="text" name="q" value=(q) placeholder="ada@example.com" size="40" autofocus;
            label { "active within " input type="text" name="since" value=(since) size="5"; }
            button type="submit" { "Find" }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if let Some(js) = &found {
            @if js.is_empty() {
                p.muted.none { "No journey found: not accepted, older than the window or the server's --journey-retention." }
            } @else {
                p.muted { (js.len()) " event(s), most recently active first." }
            }
            @for j in js { (journey(j)) }
        }
    };
    page::full("Events", "events", &s, body).into_response()
}

fn status_class(status: &str) -> &'static str {
    if status.starts_with("applied") {
        "ok"
    } else if status.starts_with("dead") {
        "bad"
    } else {
        "warn"
    }
}

fn journey(j: &Journey) -> Markup {
    let status = render::status(j);
    html! {
        section.card.journey data-message-id=(j.message_id) {
            h2 {
                "event " code { (j.message_id) } " in " code { (j.instance) } ": "
                span class=(format!("status {}", status_class(&status))) { (status) }
            }
            @for st in &j.stages { (stage(j, st)) }
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn stage(j: &Journey, st: &Stage) -> Markup {
    let d = &st.data;
    let at = page::time(st.at);
    match st.kind.as_str() {
        "received" | "duplicate" => html! {
            div.stage.received {
                h3 { (at) " · " @if st.kind == "duplicate" { "received again (a duplicate, not stored)" } @else { "received" } }
                p { (s(d, "type")) " on " code { (s(d, "route")) } ", " (s(d, "write_key")) ", " (d["bytes"].as_u64().unwrap_or(0)) " bytes"
                    @if let Some(l) = d.get("library").and_then(Value::as_str) { ", from " (l) } }
            }
        },
        "attempt" => html! {
            div.stage.attempt {
                h3 { (at) " · attempt " (d["attempt"].as_u64().unwrap_or(0)) " (" (d["ms"].as_i64().unwrap_or(0)) " ms)" }
                @if let Some(ev) = d.get("event") {
                    details { summary { "the event as delivered" } pre.event { (serde_json::to_string_pretty(ev).unwrap_or_default()) } }
                    p { a href={"/console/playground?instance=" (qs(&j.instance)) "&message_id=" (qs(&j.message_id))} { "Open in the playground" } }
                }
                @if let Some(e) = d.get("error").and_then(Value::as_str) { p.bad { "invalid event: " (e) } }
                @for m in d["mappings"].as_array().into_iter().flatten() {
                    div.mapping {
                        p { "mapping " strong { (s(m, "name")) } ": "
                            span class=(if s(m, "verdict") == "fires" { "ok" } else { "muted" }) { (s(m, "verdict")) }
                            @if let Some(t) = m.get("trigger").and_then(Value::as_str) { " " span.muted { "(trigger " code { (t) } ")" } } }
                        ul.verdicts {
                            @for c in m["decided_by"].as_array().into_iter().flatten() {
                                li { @if c["holds"] == true { span.ok { "✓ " } } @else { span.bad { "✗ " } }
                                     code { (s(c, "condition")) } span.muted { "   (value: " @match c.get("value") { Some(v) => { (v.to_string()) } None => { "missing" } } ")" } }
                            }
                        }
                        @if let Some(p) = m.get("payload") {
                            details { summary { "payload (normalised, as planned)" } pre { (serde_json::to_string_pretty(p).unwrap_or_default()) } }
                        }
                        @if let Some(e) = m.get("error").and_then(Value::as_str) { p.bad { "error: " (e) } }
                    }
                }
                @if let Some(p) = d.get("plan").and_then(Value::as_str) { p { "plan:" } pre.plan { (p) } }
                (calls(d))
                p { "→ " strong.outcome { (render::outcome(d.get("outcome").unwrap_or(&Value::Null))) } }
            }
        },
        "replayed" | "dropped" => html! {
            div.stage { h3 { (at) " · " (st.kind) " by " (s(d, "by")) } p.muted { "it had been dead-lettered: " (s(d, "was")) } }
        },
        other => html! { div.stage { h3 { (at) " · " (other) } } },
    }
}

fn calls(d: &Value) -> Markup {
    let list = d["calls"].as_array().map(Vec::as_slice).unwrap_or_default();
    html! {
        @if list.is_empty() {
            p.muted { "No Close call of its own: its lookups were answered from the cache." }
        } @else {
            table.calls {
                tr { th { "call" } th { "status" } th { "ms" } th { "attempt" } th { "held first" } th { "" } }
                @for c in list {
                    tr {
                        td { code { (s(c, "method")) " /" (s(c, "path")) } }
                        td { @match c["status"].as_u64() { Some(n) => { (n) } None => { "no reply" } } }
                        td { (c["ms"].as_u64().unwrap_or(0)) }
                        td { (c["attempt"].as_u64().unwrap_or(1)) }
                        td { (c["waited_ms"].as_u64().unwrap_or(0)) " ms" }
                        td.muted { @if let Some(n) = c["shared_by"].as_u64() { "made by the read-ahead, for " (n) " event(s)" } }
                    }
                }
            }
        }
    }
}
