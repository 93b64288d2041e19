//! Real client libraries pointed at `closeflow serve` unchanged: Segment's analytics.js in a page
//! on another origin (Chromium over chromedriver), and RudderStack's node and python SDKs beside
//! Segment's, each giving the same Close records with the default mappings. The README's
//! "Pointing your clients at it" snippets are these very files.
//!
//! The shared setup is here with the CORS test and the README check; the browser and the SDKs
//! have modules of their own.

pub(crate) mod browser;
mod sdks;

use crate::serve::{acme, acme_with, assert_balanced, write_config};
use closeflow_e2e::procs::{ServerProc, SimProc, empty_org, free_port, leads, metric, wait_for};
use closeflow_e2e::{text, workspace_root};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn clients() -> PathBuf {
    workspace_root().join("tests/clients")
}

/// A file the setup installs, or the test fails saying how to install it.
fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): run `cargo xtask setup` (or `cargo xtask test`), which installs it",
        path.display()
    );
    path
}

pub(crate) fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: run `cargo xtask setup`, which installs Debian's chromium and chromium-driver"
            )
        })
}

// ---------------------------------------------------------------------------------------------
// CORS on the real server.

async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap) {
    let r = req.send().await.expect("the server answers");
    (r.status().as_u16(), r.headers().clone())
}

fn allow_origin(h: &reqwest::header::HeaderMap) -> Option<&str> {
    h.get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn intake_answers_preflights_and_names_the_origin_on_every_reply() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme(dir.path(), &sim.api());
    let mut s = ServerProc::start(dir.path(), &[], &[]).await;
    let http = reqwest::Client::new();
    let page = "http://127.0.0.1:1";
    for (path, _) in closeflow_server::intake::ROUTES {
        let (status, h) = send(
            http.request(reqwest::Method::OPTIONS, format!("{}{path}", s.base()))
                .header("origin", page)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,x-retry-count",
                ),
        )
        .await;
        assert_eq!(status, 204, "preflight of {path}");
        assert_eq!(allow_origin(&h), Some("*"), "{path}: {h:?}");
        assert_eq!(h["access-control-allow-methods"], "POST");
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for name in ["authorization", "content-type", "x-retry-count"] {
            assert!(allowed.contains(name), "{path}: {allowed}");
        }
        assert!(h.contains_key("access-control-max-age"), "{path}: {h:?}");
    }
    let base = s.base();
    let post = |path: &str, key: Option<&str>, body: &str| {
        let mut r = http
            .post(format!("{base}{path}"))
            .header("origin", page)
            .header("content-type", "text/plain")
            .body(body.to_string());
        if let Some(k) = key {
            r = r.basic_auth(k, Some(""));
        }
        r
    };
    let good = r#"{"userId": "u1", "traits": {"email": "u1@a.io"}}"#;
    for (what, req, want) in [
        ("accepted", post("/v1/i", Some("wk"), good), 200),
        ("not JSON", post("/v1/i", Some("wk"), "{"), 400),
        ("unknown key", post("/v1/i", Some("nope"), good), 401),
        ("no key", post("/v1/b", None, r#"{"batch": []}"#), 401),
    ] {
        let (status, h) = send(req).await;
        assert_eq!(status, want, "{what}");
        assert_eq!(allow_origin(&h), Some("*"), "{what}: {h:?}");
    }
    // The admin and ops routes get no CORS at all.
    for path in ["/metrics", "/readyz", "/admin/dlq"] {
        let (_, h) = send(
            http.get(format!("{}{path}", s.base()))
                .header("origin", page),
        )
        .await;
        assert_eq!(allow_origin(&h), None, "{path}: {h:?}");
        let (status, h) = send(
            http.request(reqwest::Method::OPTIONS, format!("{}{path}", s.base()))
                .header("origin", page)
                .header("access-control-request-method", "GET"),
        )
        .await;
        assert_ne!(status, 204, "{path}");
        assert_eq!(allow_origin(&h), None, "{path}: {h:?}");
    }

    // A refusal that may succeed later (503, with the Retry-After the library reads) too, and
    // a listed origin is named while another is not.
    s.restart_with(&[
        "--max-queue",
        "0",
        "--cors-origins",
        "http://shop.test, http://127.0.0.1:1",
    ])
    .await;
    let (status, h) = send(post(
        "/v1/t",
        Some("wk"),
        r#"{"userId": "u1", "event": "E"}"#,
    ))
    .await;
    assert_eq!(status, 503);
    assert_eq!(allow_origin(&h), Some(page), "{h:?}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(h["access-control-expose-headers"], "retry-after");
    let (status, h) = send(
        http.request(reqwest::Method::OPTIONS, format!("{}/v1/t", s.base()))
            .header("origin", "http://elsewhere.test")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(allow_origin(&h), None, "an origin not listed: {h:?}");
    let o = closeflow_e2e::closeflow(&[
        "serve",
        "--config",
        dir.path().join("no-such-dir").to_str().unwrap(),
        "--cors-origins",
        "shop.test",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not an origin"), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------------
// The README's snippets are the files these tests run.

/// Each fenced block's body, in order.
fn fenced(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for line in md.lines() {
        match (&mut open, line.starts_with("```")) {
            (None, true) => open = Some(String::new()),
            (Some(_), true) => out.extend(open.take()),
            (Some(body), false) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, false) => {}
        }
    }
    out
}

#[test]
fn the_readme_shows_the_client_snippets_the_tests_run() {
    let md = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = md
        .split_once("## Pointing your clients at it")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("the README has a \"Pointing your clients at it\" section");
    let blocks = fenced(section);
    let page = std::fs::read_to_string(clients().join("web/index.html")).unwrap();
    let web = page
        .split_once("<!-- README: begin -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- README: end -->"))
        .map(|(snippet, _)| snippet.to_string())
        .expect("the page marks its README snippet");
    let mut wanted = vec![("web/index.html".to_string(), web)];
    for f in [
        "node/segment_client.mjs",
        "python/segment_client.py",
        "node/rudderstack_client.mjs",
        "python/rudderstack_client.py",
    ] {
        wanted.push((
            f.to_string(),
            std::fs::read_to_string(clients().join(f)).unwrap(),
        ));
    }
    for (file, snippet) in wanted {
        assert!(
            blocks.contains(&snippet),
            "the README's \"Pointing your clients at it\" does not show tests/clients/{file} as it is:\n{snippet}"
        );
    }
}
