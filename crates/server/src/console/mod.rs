//! The web console at `/console`: overview, events (journeys), dead letters, playground.
//! Served only when the admin token is set (404 otherwise, like `/admin`).
//!
//! Security, in one place:
//! - **Login:** a form posts the admin token (never in a URL); a match (constant time) opens a
//!   session named by a random id in an `HttpOnly; SameSite=Strict; Path=/console` cookie,
//!   kept in memory for [`SESSION_TTL`] (a restart logs everyone out).
//! - **CSRF:** every form that changes something carries the session's random token, checked
//!   (constant time) before anything is done; the login form carries a nonce from its own
//!   cookie (double submit). SameSite=Strict alone would already keep other sites' requests
//!   cookie-less; the token does not rely on browsers doing so.
//! - **No CORS** (no `Access-Control-*` header is ever sent here), no framing, a strict CSP
//!   (scripts and styles from `/console/assets` only, nothing from outside), `no-store`.
//! - **Escaping:** pages are maud templates, which escape every interpolated value: an event
//!   holding `<script>` shows as text.
//! - **Secrets:** instance files are shown with secret values starred out; the playground
//!   resolves only the `${VAR}`s the running file itself references.

mod assets;
mod dead;
mod events;
pub mod overview;
mod page;
mod playground;
pub mod state;

pub use state::{Console, SESSION_TTL, Session};
use state::{SESSION_COOKIE, cookie, random_token, same};

use crate::app::App;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use closeflow_queue::Queue;
use maud::html;
use secrecy::ExposeSecret;
use std::sync::Arc;

const LOGIN_COOKIE: &str = "closeflow_login";

/// A session's page, or the way to the login form.
pub(crate) enum Access {
    In(Session),
    Out(Response),
}

pub(crate) fn access<Q: Queue>(app: &App<Q>, headers: &HeaderMap) -> Access {
    match app.console.session(headers) {
        Some(s) => Access::In(s),
        None => Access::Out(Redirect::to("/console/login").into_response()),
    }
}

/// The session of a form that changes something, with its CSRF token checked: the login form
/// for a request without a session, a refusal for a token that is not the session's.
pub(crate) fn form_session<Q: Queue>(
    app: &App<Q>,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<Session, Response> {
    match access(app, headers) {
        Access::In(s) => check_csrf(&s, csrf).map(|()| s),
        Access::Out(r) => Err(r),
    }
}

/// Refuses a form whose CSRF token is missing or not the session's.
pub(crate) fn check_csrf(s: &Session, given: Option<&str>) -> Result<(), Response> {
    match given {
        Some(t) if same(t, &s.csrf) => Ok(()),
        _ => Err(page::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not carry this session's CSRF token (an old page, or a form sent from somewhere else). Nothing was done; reload the page and try again.",
        )),
    }
}

pub fn routes<Q: Queue>() -> Router<Arc<App<Q>>> {
    Router::new()
        .route("/console", get(overview::page::<Q>))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(login_form::<Q>).post(login::<Q>))
        .route("/console/logout", post(logout::<Q>))
        .route("/console/events", get(events::page::<Q>))
        .route("/console/dead", get(dead::page::<Q>))
        .route("/console/dead/{id}/replay", post(dead::replay::<Q>))
        .route("/console/dead/{id}/drop", post(dead::drop_one::<Q>))
        .route(
            "/console/playground",
            get(playground::form::<Q>).post(playground::run::<Q>),
        )
        .route("/console/assets/{file}", get(assets::serve))
}

/// Before every `/console…` path: 404 without an admin token (nothing is there), and the
/// security headers on every answer.
pub async fn guard<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let p = req.uri().path();
    if p != "/console" && !p.starts_with("/console/") {
        return next.run(req).await;
    }
    if app.admin_token.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn login_form<Q: Queue>(State(app): State<Arc<App<Q>>>, headers: HeaderMap) -> Response {
    if app.console.session(&headers).is_some() {
        return Redirect::to("/console").into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let nonce = random_token();
    let body = html! {
        h1 { "closeflow console" }
        form.login method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(nonce);
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password" autofocus;
            button type="submit" { "Log in" }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        p.hint { "The token is the server's CLOSEFLOW_ADMIN_TOKEN. It is sent in this form only, never in a URL." }
    };
    let mut r = (status, page::bare("Log in", body)).into_response();
    set_cookie(
        &mut r,
        format!("{LOGIN_COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/console; Max-Age=600"),
    );
    r
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: Option<String>,
    csrf: Option<String>,
}

async fn login<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let nonce_ok = match (cookie(&headers, LOGIN_COOKIE), f.csrf.as_deref()) {
        (Some(c), Some(g)) => same(c, g),
        _ => false,
    };
    if !nonce_ok {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("This login form expired or was not sent from this console; try again."),
        );
    }
    let Some(token) = &app.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !same(
        f.token.as_deref().unwrap_or("").trim(),
        token.expose_secret(),
    ) {
        tracing::warn!("a console login with a wrong admin token was refused");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong token."));
    }
    let id = app.console.open();
    let mut r = Redirect::to("/console").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    set_cookie(
        &mut r,
        format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}",
            SESSION_TTL.as_secs()
        ),
    );
    set_cookie(
        &mut r,
        format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
    );
    r
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn logout<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<CsrfOnly>,
) -> Response {
    if let Err(r) = form_session(&app, &headers, f.csrf.as_deref()) {
        return r;
    }
    app.console.close(&headers);
    let mut r = Redirect::to("/console/login").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
    );
    r
}

/// Percent-encodes a query value.
pub(crate) fn qs(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}
