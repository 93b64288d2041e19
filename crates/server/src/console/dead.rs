//! Dead letters: what failed and why, with replay (after fixing the cause) and drop.

use super::{Access, access, check_csrf, page, qs};
use crate::app::App;
use crate::journey::stages;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use closeflow_queue::Queue;
use maud::html;
use std::sync::Arc;

#[derive(serde::Deserialize, Default)]
pub struct Done {
    /// `replayed` or `dropped` (the note is written here: a link cannot put words on the page).
    done: Option<String>,
    id: Option<i64>,
}

pub async fn page<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let s = match access(&app, &headers) {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    let list = match app.queue.dead_letters(None).await {
        Ok(l) => l,
        Err(e) => {
            return page::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The queue cannot be read",
                &e.to_string(),
            );
        }
    };
    let body = html! {
        @if let (Some(what @ ("replayed" | "dropped")), Some(id)) = (done.done.as_deref(), done.id) {
            p.ok.done role="status" { "Dead letter " (id) " " @if what == "replayed" { "queued again." } @else { "dropped." } }
        }
        @if list.is_empty() {
            p.muted.none { "No dead letters." }
        } @else {
            p.muted { (list.len()) " dead letter(s). Fix the cause (the instance file, Close's settings), then replay: the event is queued again at the back." }
            table.dead {
                tr { th { "id" } th { "instance" } th { "messageId" } th { "reason" } th { "attempts" } th { "error" } th { "dead since" } th { "" } }
                @for d in &list {
                    tr data-id=(d.id) {
                        td { (d.id) }
                        td { code { (d.instance) } }
                        td { a href={"/console/events?by=message_id&q=" (qs(&d.message_id))} { code { (d.message_id) } } }
                        td.bad { (d.reason) }
                        td { (d.attempts) }
                        td { (d.error) @if let Some(r) = &d.last_reply { br; span.muted { "last reply: " (r) } } }
                        td { (page::time(d.dead_at)) }
                        td {
                            form.inline method="post" action={"/console/dead/" (d.id) "/replay"} {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.replay type="submit" { "Replay" }
                            }
                            " "
                            form.inline method="post" action={"/console/dead/" (d.id) "/drop"} {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.drop type="submit" { "Drop for good" }
                            }
                        }
                    }
                }
            }
        }
    };
    page::full("Dead letters", "dead", &s, body).into_response()
}

#[derive(serde::Deserialize)]
pub struct Action {
    csrf: Option<String>,
}

async fn act<Q: Queue>(
    app: Arc<App<Q>>,
    headers: HeaderMap,
    id: i64,
    form: Action,
    replay: bool,
) -> Response {
    let s = match access(&app, &headers) {
        Access::In(s) => s,
        Access::Out(_) => {
            return page::message(
                StatusCode::FORBIDDEN,
                "Refused",
                "Log in to the console first: nothing was done.",
            );
        }
    };
    if let Err(r) = check_csrf(&s, form.csrf.as_deref()) {
        return r;
    }
    let dead = match app.queue.dead_letter(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return page::message(
                StatusCode::NOT_FOUND,
                "No such dead letter",
                "It was replayed or dropped meanwhile.",
            );
        }
        Err(e) => {
            return page::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The queue cannot be changed",
                &e.to_string(),
            );
        }
    };
    let done = if replay {
        app.queue.replay(id).await
    } else {
        app.queue.drop_dead(id).await
    };
    match done {
        Ok(true) => {
            let (stage, word) = if replay {
                app.wakers.wake(&dead.instance);
                (stages::replayed(&dead, "console"), "replayed")
            } else {
                (stages::dropped(&dead, "console"), "dropped")
            };
            app.recorder.record(stage);
            Redirect::to(&format!("/console/dead?done={word}&id={id}")).into_response()
        }
        Ok(false) => page::message(
            StatusCode::NOT_FOUND,
            "No such dead letter",
            "It was replayed or dropped meanwhile.",
        ),
        Err(e) => page::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "The queue cannot be changed",
            &e.to_string(),
        ),
    }
}

pub async fn replay<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    axum::Form(f): axum::Form<Action>,
) -> Response {
    act(app, headers, id, f, true).await
}

pub async fn drop_one<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    axum::Form(f): axum::Form<Action>,
) -> Response {
    act(app, headers, id, f, false).await
}
