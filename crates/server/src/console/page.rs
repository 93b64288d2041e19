//! The page around every console view: navigation, the logout form, the stylesheet and script
//! from `/console/assets` (nothing from outside).

use super::Session;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · closeflow" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// A page without navigation (login, refusals).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" { (head(title)) body.bare { main { (body) } } }
        }
        .into_string(),
    )
}

/// A page with the navigation; `here` is the current section.
pub fn full(title: &str, here: &str, s: &Session, body: Markup) -> Html<String> {
    let nav = [
        ("overview", "/console", "Overview"),
        ("events", "/console/events", "Events"),
        ("dead", "/console/dead", "Dead letters"),
        ("playground", "/console/playground", "Playground"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    header {
                        span.brand { "closeflow" }
                        nav {
                            @for (id, href, label) in nav {
                                a href=(href) class=@if id == here { "here" } { (label) }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A short page saying why something was refused or failed.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    (
        status,
        bare(
            title,
            html! { h1 { (title) } p.error role="alert" { (text) } p { a href="/console" { "Back to the console" } } },
        ),
    )
        .into_response()
}

/// A time in milliseconds as people read it.
pub fn time(ms: i64) -> String {
    crate::journey::render::time(ms)
}

/// An age in milliseconds as `3 s`, `4 min`, `2 h`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}
