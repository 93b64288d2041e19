//! The overview: per instance, its file's validity, intake and delivery rates, the queue's depth
//! and oldest event, dead letters, and what is left of Close's rate-limit budget per endpoint
//! group.

use super::state::Samples;
use super::{Access, access, page};
use crate::app::App;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use closeflow_queue::{InstanceStats, Queue, now_ms};
use maud::html;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

fn finished(s: &InstanceStats) -> u64 {
    s.applied + s.skipped_total() + s.dead_lettered_total()
}

/// Takes a sample of every instance's counts.
pub async fn sample<Q: Queue>(app: &App<Q>) {
    let Ok(stats) = app.queue.stats().await else {
        return;
    };
    let now = Instant::now();
    let counts = stats
        .iter()
        .map(|s| (s.instance.clone(), (s.accepted, finished(s))))
        .collect();
    let mut g = app
        .console
        .samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    g.taken.push_back((now, counts));
    while g
        .taken
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW + Duration::from_secs(15))
    {
        g.taken.pop_front();
    }
}

/// Events per minute accepted and finished, over the samples kept (`None`: too few yet).
fn rates(samples: &Samples, s: &InstanceStats) -> Option<(f64, f64)> {
    let (t0, first) = samples.taken.front()?;
    let elapsed = t0.elapsed().as_secs_f64();
    if elapsed < 5.0 {
        return None;
    }
    let (a0, f0) = first.get(&s.instance).copied().unwrap_or((0, 0));
    let per_min = |now: u64, then: u64| now.saturating_sub(then) as f64 * 60.0 / elapsed;
    Some((per_min(s.accepted, a0), per_min(finished(s), f0)))
}

pub async fn page<Q: Queue>(State(app): State<Arc<App<Q>>>, headers: HeaderMap) -> Response {
    let s = match access(&app, &headers) {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    let stats = match app.queue.stats().await {
        Ok(v) => v,
        Err(e) => {
            return page::message(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "The queue cannot be read",
                &e.to_string(),
            );
        }
    };
    sample(&app).await;
    let files = app.registry.file_validity();
    let mut names = app.registry.all_names();
    for st in &stats {
        if !names.contains(&st.instance) {
            names.push(st.instance.clone());
        }
    }
    names.sort();
    let samples = app
        .console
        .samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = now_ms();
    let body = html! {
        @if files.iter().any(|(_, ok)| !ok) {
            p.bad role="alert" { "Some instance files are invalid: the last valid version of each keeps running." }
        }
        h2 { "Instance files" }
        table {
            tr { th { "file" } th { "state" } }
            @for (f, ok) in &files {
                tr { td { code { (f.display()) } } td { @if *ok { span.ok { "valid" } } @else { span.bad { "invalid (the last valid version runs)" } } } }
            }
        }
        @for name in &names {
            @let st = stats.iter().find(|x| &x.instance == name).cloned().unwrap_or_else(|| InstanceStats { instance: name.clone(), ..Default::default() });
            @let active = app.registry.get(name);
            section.card data-instance=(name) {
                h2 { "Instance " code { (name) } @if active.is_none() { " " span.warn { "(not configured: its events wait)" } } }
                table {
                    tr { th { "intake /min" } th { "delivered /min" } th { "queued" } th { "oldest queued" } th { "dead letters" } th { "accepted" } th { "applied" } th { "skipped" } th { "dead-lettered" } }
                    tr {
                        @match rates(&samples, &st) {
                            Some((i, d)) => { td { (format!("{i:.1}")) } td { (format!("{d:.1}")) } }
                            None => { td.muted { "measuring…" } td.muted { "measuring…" } }
                        }
                        td.queued { (st.queued) }
                        td { @match st.oldest_queued_at { Some(t) => { (page::age(now - t)) } None => { "—" } } }
                        td { @if st.dead_now > 0 { a.bad href="/console/dead" { (st.dead_now) } } @else { "0" } }
                        td { (st.accepted) } td.applied { (st.applied) } td { (st.skipped_total()) } td { (st.dead_lettered_total()) }
                    }
                }
                @if let Some(a) = &active {
                    @let budgets = a.writer.reader().budgets();
                    h3 { "Close rate-limit budget" }
                    @if budgets.is_empty() {
                        p.muted { "No call to Close yet: the budget is known from Close's replies." }
                    } @else {
                        table {
                            tr { th { "endpoint group" } th { "left now" } th { "limit per key" } th { "window resets in" } }
                            @for b in &budgets {
                                tr {
                                    td { code { (b.group) } }
                                    td { @match b.left { Some(l) => { (format!("{l:.0}")) } None => { "unknown (window over)" } } }
                                    td { @match b.per_key_limit { Some(l) => { (format!("{l:.0}")) } None => { "—" } } }
                                    td { @match b.resets_in { Some(d) => { (format!("{:.1} s", d.as_secs_f64())) } None => { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::full("Overview", "overview", &s, body).into_response()
}
