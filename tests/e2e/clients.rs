//! Real client libraries pointed at `closeflow serve` unchanged: Segment's analytics.js in a page
//! on another origin (Chromium over chromedriver), and RudderStack's node and python SDKs beside
//! Segment's, each giving the same Close records with the default mappings. The README's
//! "Pointing your clients at it" snippets are these very files.

use crate::serve::{acme, assert_balanced, instance, write_config};
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

fn on_path(program: &str) -> PathBuf {
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
// analytics.js in Chromium.

/// chromedriver on a loopback port, stopped when dropped.
struct Chromedriver {
    child: Child,
    base: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    async fn start(log: &Path) -> Chromedriver {
        let port = free_port();
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(on_path("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .stdin(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Chromedriver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", d.base);
        wait_for("chromedriver to listen", LONG, || {
            let status = status.clone();
            async move {
                match reqwest::get(&status).await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        d
    }
}

/// One browser session, spoken to in W3C WebDriver's JSON (a handful of commands: no client
/// library needed), closed when dropped.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn open(driver: &Chromedriver, profile: &Path) -> Browser {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": on_path("chromium"),
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1000,700",
                         format!("--user-data-dir={}", profile.display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.base))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start: {r}"));
        Browser {
            http,
            session: format!("{}/session/{id}", driver.base),
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        let v = self
            .command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(v.is_null(), "navigating to {url}: {v}");
    }

    async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The browser's own log since the last call (network and CORS errors are logged here).
    async fn browser_log(&self) -> Vec<Value> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    /// Closes the session (and so Chromium) with a plain blocking request: a test that failed
    /// leaves no browser behind.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(rest) = self.session.strip_prefix("http://") else {
            return;
        };
        let Some((host, path)) = rest.split_once('/') else {
            return;
        };
        if let Ok(mut c) = std::net::TcpStream::connect(host) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                c,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = c.read_to_end(&mut Vec::new());
        }
    }
}

/// The page's origin: a loopback port of its own serving the page (closeflow's address and
/// write key put in) and analytics.js's browser bundle from npm. It records every path asked.
async fn page_server(
    intake: &str,
    write_key: &str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::response::IntoResponse;
    let page = std::fs::read_to_string(clients().join("web/index.html"))
        .unwrap()
        .replace("127.0.0.1:8080", intake)
        .replace("wk_default", write_key);
    let bundle = std::fs::read(installed(
        clients().join("node/node_modules/@segment/analytics-next/dist/umd/index.js"),
        "@segment/analytics-next",
    ))
    .unwrap();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (page, bundle, log) = (page.clone(), bundle.clone(), log.clone());
        async move {
            log.lock().unwrap().push(uri.path().to_string());
            match uri.path() {
                "/" => ([("content-type", "text/html")], page).into_response(),
                "/analytics-next.js" => {
                    ([("content-type", "text/javascript")], bundle).into_response()
                }
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), asked)
}

/// Where a failed browser test leaves the browser's log and a screenshot (emptied first, so
/// what is there is from the last run).
fn test_output(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target/test-output/browser")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_js_in_chromium_delivers_from_another_origin() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "acme.yaml",
        &instance(
            "acme",
            &sim.api(),
            &["wk_web"],
            "test_key",
            "$.traits.title",
        ),
    );
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let intake = format!("127.0.0.1:{}", s.port);
    let (origin, asked) = page_server(&intake, "wk_web").await;
    assert_ne!(origin, s.base(), "the page is on another origin");
    let out = test_output("analytics_js");
    let driver = Chromedriver::start(&out.join("chromedriver.log")).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, profile.path()).await;

    let mut log: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    // One page per delivery strategy: one request per event, then the batching one (/v1/b).
    let runs = [
        ("u_web_1", "c_web_1", ""),
        ("u_web_2", "c_web_2", "&batching"),
    ];
    for (n, (user, company, extra)) in runs.iter().enumerate() {
        browser
            .go(&format!("{origin}/?user={user}&company={company}{extra}"))
            .await;
        let expected = 5.0 * (n + 1) as f64;
        let mut delivered = false;
        for _ in 0..200 {
            let m = s.metrics().await;
            let label = "instance=\"acme\"";
            if metric(&m, "closeflow_events_accepted_total", label) >= expected
                && metric(&m, "closeflow_queue_depth", label) == 0.0
                && browser.eval("return window.sent").await == "sent"
            {
                delivered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !delivered {
            problems.push(format!(
                "{user}{extra}: not every event was delivered within 20 s"
            ));
        }
        for entry in browser.browser_log().await {
            let line = format!(
                "[{}] {}",
                entry["level"].as_str().unwrap_or("?"),
                entry["message"].as_str().unwrap_or("")
            );
            if entry["level"] == "SEVERE" || line.contains("CORS") {
                problems.push(format!("{user}{extra}: the browser logged {line}"));
            }
            log.push(line);
        }
        // One post per event, each once (a re-send is a post more); or batches to /v1/b (one
        // as a rule; a slow machine may cut the five events in two), whose re-sends the
        // intake's duplicate count shows.
        let posted = browser.eval("return window.posted").await;
        let ok = if extra.is_empty() {
            posted == json!(["/v1/i", "/v1/g", "/v1/t", "/v1/p", "/v1/a"])
        } else {
            posted
                .as_array()
                .is_some_and(|p| !p.is_empty() && p.iter().all(|u| u == "/v1/b"))
        };
        if !ok {
            problems.push(format!("{user}{extra}: the page posted to {posted}"));
        }
        let page_log = browser.eval("return window.pageLog").await;
        for line in page_log.as_array().into_iter().flatten() {
            let line = line.as_str().unwrap_or_default().to_string();
            if line.starts_with("error")
                || line.starts_with("uncaught")
                || line.starts_with("unhandled")
            {
                problems.push(format!("{user}{extra}: the page logged {line}"));
            }
            log.push(format!("[page] {line}"));
        }
    }
    // A reply the browser could not read is re-sent: give re-sends time to arrive, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = s.metrics().await;
    let label = "instance=\"acme\"";
    let accepted = metric(&m, "closeflow_events_accepted_total", label);
    let duplicates = metric(&m, "closeflow_events_duplicate_total", label);
    if accepted != 10.0 || duplicates != 0.0 {
        problems.push(format!(
            "the intake accepted {accepted} events and {duplicates} duplicates; 10 and 0 expected"
        ));
    }
    let strays: Vec<String> = asked
        .lock()
        .unwrap()
        .iter()
        .filter(|p| !matches!(p.as_str(), "/" | "/analytics-next.js"))
        .cloned()
        .collect();
    if !strays.is_empty() {
        problems.push(format!("the page asked its origin for more: {strays:?}"));
    }
    if !problems.is_empty() {
        let shot = out.join("screenshot.png");
        std::fs::write(&shot, browser.screenshot().await).unwrap();
        let console = out.join("console.log");
        std::fs::write(&console, log.join("\n")).unwrap();
        let server_log = out.join("server.log");
        std::fs::write(&server_log, s.log()).unwrap();
        panic!(
            "analytics.js did not deliver cleanly:\n  {}\nthe browser's console: {}\na screenshot: {}\nchromedriver's log: {}\nthe server's log: {}",
            problems.join("\n  "),
            console.display(),
            shot.display(),
            out.join("chromedriver.log").display(),
            server_log.display()
        );
    }

    // Each event once, by route and in order, and the Close records they make.
    let o = closeflow_e2e::closeflow(&[
        "capture",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--instance",
        "acme",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let events: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (user, _, _) in runs {
        let types: Vec<&str> = events
            .iter()
            .filter(|e| e["userId"] == user)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["identify", "group", "track", "page", "alias"],
            "{user}: {events:?}"
        );
    }
    let st = sim.state().await;
    for (user, company, _) in runs {
        let lead = leads(&st)
            .into_iter()
            .find(|l| l["custom.cf_company"] == company)
            .unwrap_or_else(|| panic!("no lead for {company}: {st}"));
        assert_eq!(lead["name"], format!("Company {company}"));
        assert_eq!(lead["custom.cf_plan"], "pro", "{lead}");
        let cs = lead["contacts"].as_array().unwrap();
        assert_eq!(cs.len(), 1, "{lead}");
        assert_eq!(cs[0]["emails"][0]["email"], format!("{user}@web.test"));
        assert_eq!(cs[0]["title"], "Signed up", "{lead}");
    }
    assert_balanced(&s.metrics().await, "acme");
}

// ---------------------------------------------------------------------------------------------
// RudderStack's SDKs beside Segment's, with the default mappings.

/// A Close record as the default mapping leaves it, without ids and dates.
fn record(st: &Value) -> Value {
    let leads: Vec<Value> = leads(st)
        .iter()
        .map(|l| {
            let contacts: Vec<Value> = l["contacts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!({"name": c["name"], "title": c["title"], "emails": c["emails"],
                           "user": c["custom.cf_user"]})
                })
                .collect();
            json!({"name": l["name"], "company": l["custom.cf_company"],
                   "plan": l["custom.cf_plan"], "contacts": contacts})
        })
        .collect();
    json!(leads)
}

#[tokio::test(flavor = "multi_thread")]
async fn rudderstack_and_segment_libraries_give_the_same_close_records() {
    let node = PathBuf::from("node");
    let python = installed(
        clients().join("python/.venv/bin/python"),
        "the Python clients",
    );
    installed(
        clients().join("node/node_modules/@rudderstack/rudder-sdk-node/package.json"),
        "@rudderstack/rudder-sdk-node",
    );
    // Each client into an instance of its own (the default mappings, its own write key) over a
    // simulator of its own, so that their records can be compared whole.
    let default = std::fs::read_to_string(workspace_root().join("mappings/default.yaml")).unwrap();
    let runs: [(&str, &PathBuf, &str, &str); 7] = [
        ("segment-node", &node, "node/segment_client.mjs", ""),
        ("segment-python", &python, "python/segment_client.py", ""),
        (
            "segment-python-gzip",
            &python,
            "python/segment_client.py",
            "gzip",
        ),
        ("rudder-node", &node, "node/rudderstack_client.mjs", ""),
        (
            "rudder-node-plain",
            &node,
            "node/rudderstack_client.mjs",
            "nogzip",
        ),
        ("rudder-python", &python, "python/rudderstack_client.py", ""),
        (
            "rudder-python-plain",
            &python,
            "python/rudderstack_client.py",
            "nogzip",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut sims = Vec::new();
    for (name, ..) in &runs {
        let sim = SimProc::start(&empty_org()).await;
        let text = default
            .replace("name: default-close", &format!("name: {name}"))
            .replace(
                "endpoint: http://127.0.0.1:9000/api/v1/",
                &format!("endpoint: {}", sim.api()),
            )
            .replace("${DEFAULT_WRITE_KEY:-wk_default}", &format!("wk_{name}"));
        assert!(text.contains(&sim.api()) && text.contains(&format!("wk_{name}")));
        write_config(dir.path(), &format!("{name}.yaml"), &text);
        sims.push(sim);
    }
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    for (name, bin, script, mode) in &runs {
        let key = format!("wk_{name}");
        let mut args = vec![clients().join(script).display().to_string(), s.base(), key];
        if !mode.is_empty() {
            args.push(mode.to_string());
        }
        let o = Command::new(bin)
            .args(&args)
            .output()
            .expect("the client runs");
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    for (name, ..) in &runs {
        let label = format!("instance=\"{name}\"");
        wait_for(
            &format!("{name}'s identify and track delivered"),
            LONG,
            || async {
                let m = s.metrics().await;
                metric(&m, "closeflow_events_accepted_total", &label) == 2.0
                    && metric(&m, "closeflow_queue_depth", &label) == 0.0
            },
        )
        .await;
        assert_balanced(&s.metrics().await, name);
    }
    let want = json!([{"name": "Acme", "company": "c_acme", "plan": "pro", "contacts": [
        {"name": "Ada Lovelace", "title": "CTO", "emails": [{"email": "ada@acme.com", "type": "office"}],
         "user": "u_ada"}]}]);
    for ((name, ..), sim) in runs.iter().zip(&sims) {
        assert_eq!(
            record(&sim.state().await),
            want,
            "{name} gives other Close records than expected"
        );
    }

    // What each library sent, as the queue holds it: the time comes from RudderStack's
    // `originalTimestamp`, corrected by `sentAt` as RudderStack does.
    for (name, ..) in &runs {
        let o = closeflow_e2e::closeflow(&[
            "capture",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--instance",
            name,
        ]);
        let events: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2, "{name}: {}", text(&o));
        for e in &events {
            let at = |k: &str| -> jiff::Timestamp {
                e[k].as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no {k} in {e}"))
            };
            // timestamp = receivedAt − (sentAt − originalTimestamp), to the millisecond that
            // `receivedAt` is stored at; `originalTimestamp` is the client's own `timestamp`
            // for Segment's libraries and RudderStack's python, and what RudderStack's node
            // SDK sends instead of one. On loopback a client's clock is the server's and sentAt
            // comes milliseconds after the event, so this checks that each library's fields
            // reach the formula, not the skew correction itself: `intake::event`'s unit tests
            // pin that with a skewed clock.
            let want = at("receivedAt")
                .checked_sub(at("sentAt").duration_since(at("originalTimestamp")))
                .unwrap();
            let off = at("timestamp").duration_since(want).abs();
            assert!(
                off <= jiff::SignedDuration::from_millis(2),
                "{name}: the time is not the client's, corrected for its clock: {e}"
            );
        }
        let identify = &events[0];
        assert_eq!(identify["type"], "identify", "{name}");
        assert_eq!(
            identify["traits"]["email"], "ada@acme.com",
            "{name}: {identify}"
        );
    }
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
