//! analytics.js in Chromium: a page on another origin, driven over chromedriver's W3C WebDriver
//! JSON, sending to `closeflow serve` unchanged.

use super::*;

/// chromedriver on a loopback port, stopped when dropped (also the console's test's).
pub(crate) struct Chromedriver {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    pub(crate) async fn start(log: &Path) -> Chromedriver {
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
    acme_with(dir.path(), &sim.api(), &["wk_web"], "test_key");
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
