//! The web console in a real browser: Debian's Chromium, headless, driven over chromedriver
//! by fantoccini, against the real server and simulator processes.
//!
//! One story, as an ops person lives it: a wrong token is refused; log in; find an event by
//! email and read its journey; an event holding markup shows it as text and runs nothing; a
//! form without its CSRF token is refused; fix a dead letter's cause, replay it from the page
//! and see it applied; edit a mapping in the playground and see the plan change. On failure the
//! page's screenshot and HTML are kept (the panic names where). With `CLOSEFLOW_SCREENSHOTS=DIR`
//! each page is also saved there (the README's pictures).

use crate::clients::browser::Chromedriver;
use crate::clients::on_path;
use crate::serve::{acme, acme_with};
use anyhow::{Context, Result, bail, ensure};
use closeflow_e2e::procs::{ServerProc, SimProc, contacts, empty_org, metric, post, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "console_tok_e2e";
const LONG: Duration = Duration::from_secs(60);
/// Markup an attacker might put in a trait: it must show as text and run nothing.
const XSS: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";

fn person(user: &str, email: &str, title: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("m-{user}"),
           "traits": {"email": email, "name": format!("Person {user}"), "title": title,
                      "company": {"id": "c-console", "name": "Console Co"}}})
}

async fn browser(driver: &Chromedriver, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": on_path("chromium"),
            // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!("an object literal")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.base)
        .await
        .expect("a Chromium session")
}

struct Story<'a> {
    c: &'a Client,
    base: String,
    shots: Option<PathBuf>,
}

impl Story<'_> {
    async fn go(&self, path: &str) -> Result<()> {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("opening {path}"))
    }

    async fn text(&self, css: &str) -> Result<String> {
        let el = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element `{css}` on the page"))?;
        Ok(el.text().await?)
    }

    /// Clicks a button that submits a form and waits for the next page to have loaded (an
    /// element looked for too early would be the old page's).
    async fn click(&self, css: &str) -> Result<()> {
        self.c
            .execute("document.documentElement.dataset.old = '1';", vec![])
            .await?;
        self.c
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element `{css}` to click"))?
            .click()
            .await?;
        let started = std::time::Instant::now();
        loop {
            let fresh = self
                .c
                .execute(
                    "return document.documentElement.dataset.old === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(fresh, Ok(Value::Bool(true))) {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(15),
                "no new page after clicking `{css}`"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self
            .c
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no field `{css}`"))?;
        el.clear().await?;
        el.send_keys(text).await?;
        Ok(())
    }

    async fn shot(&self, name: &str) -> Result<()> {
        if let Some(dir) = &self.shots {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(format!("{name}.png")), self.c.screenshot().await?)?;
        }
        Ok(())
    }

    async fn log_in(&self, token: &str) -> Result<()> {
        self.go("/console/login").await?;
        self.type_into("#token", token).await?;
        self.click("form.login button").await
    }
}

async fn scenario(st: &Story<'_>, s: &ServerProc, sim: &SimProc, dir: &Path) -> Result<()> {
    // Unauthenticated: the console sends to the login form.
    st.go("/console/events").await?;
    ensure!(
        st.c.current_url().await?.path() == "/console/login",
        "not sent to the login form"
    );
    st.shot("login").await?;
    st.log_in("not-the-token").await?;
    let e = st.text("p.error").await?;
    ensure!(e.contains("Wrong token"), "a wrong token said {e:?}");
    st.go("/console/dead").await?;
    ensure!(
        st.c.current_url().await?.path() == "/console/login",
        "a wrong token opened the console"
    );
    st.log_in(TOKEN).await?;
    ensure!(
        st.text("h1").await? == "Overview",
        "no overview after logging in"
    );
    let cookies = st.c.get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "closeflow_session")
        .context("no session cookie")?;
    ensure!(
        session.http_only() == Some(true) && format!("{:?}", session.same_site()) == "Some(Strict)",
        "the session cookie must be HttpOnly and SameSite=Strict: {session:?}"
    );
    ensure!(
        !st.c.current_url().await?.as_str().contains(TOKEN),
        "the token is in a URL"
    );
    // The overview shows the instance and its dead letters (both events failed: wrong key).
    let overview = st.text("section.card[data-instance=acme]").await?;
    ensure!(overview.contains("Close rate-limit budget"), "{overview}");
    st.shot("overview").await?;

    // Find Ada's event by email (another case) and read its journey.
    st.go("/console/events").await?;
    st.type_into("input[name=q]", "ADA@Example.com").await?;
    st.click("form.row button").await?;
    let j = st.text("section.journey[data-message-id=m-ada]").await?;
    for want in [
        "dead-lettered (unauthorized)",
        "received",
        "write key #1 of acme (basic)",
        "mapping People: fires",
        "type = \"identify\"",
        "401",
    ] {
        ensure!(j.contains(want), "the journey lacks {want:?}:\n{j}");
    }
    st.shot("events").await?;

    // An event holding markup shows it as text and runs none of it.
    st.go("/console/events?by=email&q=eve%40example.com")
        .await?;
    st.text("section.journey").await?;
    let stored =
        st.c.find(Locator::Css("section.journey pre.event"))
            .await?
            .prop("textContent")
            .await?
            .unwrap_or_default();
    let shown: Value = serde_json::from_str(&stored).context("the stored event")?;
    ensure!(
        shown["traits"]["title"] == XSS,
        "the markup is not shown as text: {stored}"
    );
    let ran =
        st.c.execute("return window.__xss === undefined;", vec![])
            .await?;
    ensure!(ran == json!(true), "the event's markup ran in the page");

    // Dead letters: a drop whose form lost its CSRF token is refused, and nothing is dropped.
    st.go("/console/dead").await?;
    let rows = st.text("table.dead").await?;
    ensure!(
        rows.contains("m-ada") && rows.contains("m-eve"),
        "dead letters: {rows}"
    );
    st.shot("dead-letters").await?;
    st.c.execute(
        "document.querySelectorAll('table.dead form input[name=csrf]').forEach(function (i) { i.remove(); });",
        vec![],
    )
    .await?;
    st.click("table.dead tr:last-child button.drop").await?;
    let refused = st.text("p.error").await?;
    ensure!(
        refused.contains("CSRF"),
        "a form without its CSRF token: {refused}"
    );
    st.go("/console/dead").await?;
    let rows = st.text("table.dead").await?;
    ensure!(
        rows.contains("m-ada") && rows.contains("m-eve"),
        "a refused drop dropped something: {rows}"
    );

    // Fix the cause (the Close key), replay Ada's dead letter from the page: applied.
    acme(dir, &sim.api());
    crate::serve::wait_loaded(s, 2.0, "the fixed key loaded").await;
    let ada_row = st
        .c
        .execute(
            "var r = Array.from(document.querySelectorAll('table.dead tr[data-id]')).find(function (r) { return r.textContent.indexOf('m-ada') >= 0; }); return r ? r.dataset.id : null;",
            vec![],
        )
        .await?;
    let id = ada_row.as_str().context("no row for m-ada")?.to_string();
    st.click(&format!("tr[data-id='{id}'] button.replay"))
        .await?;
    let done = st.text("p.done").await?;
    ensure!(done.contains("queued again"), "after replay: {done}");
    crate::serve::wait_applied(s, "acme", 1.0, "the replayed event applied").await;
    st.go("/console/events?by=message_id&q=m-ada").await?;
    let j = st.text("section.journey[data-message-id=m-ada] h2").await?;
    ensure!(
        j.ends_with("applied"),
        "after the replay the journey says {j:?}"
    );
    let j = st.text("section.journey[data-message-id=m-ada]").await?;
    ensure!(
        j.contains("replayed by console"),
        "the replay is not in the journey:\n{j}"
    );
    st.shot("journey").await?;
    let state = sim.state().await;
    ensure!(
        contacts(&state).len() == 1 && contacts(&state)[0]["title"] == "CTO",
        "Close after the replay: {state}"
    );

    // The playground: Ada's event against the running file plans nothing new; an edited copy
    // of the mapping changes her title, in the plan and in the review of captured events.
    st.go("/console/playground?instance=acme&message_id=m-ada")
        .await?;
    let event =
        st.c.find(Locator::Css("#event"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
    ensure!(
        event.contains("ada@example.com"),
        "the event was not filled in: {event}"
    );
    let yaml =
        st.c.find(Locator::Css("#yaml"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
    ensure!(
        !yaml.contains("test_key"),
        "the API key is shown in the playground"
    );
    st.click("#run").await?;
    let plan = st.text("#plan").await?;
    ensure!(
        plan.contains("unchanged") && !plan.contains("~ title"),
        "the running file's plan: {plan}"
    );
    let edited = yaml.replace(
        "contact_title: $.traits.title",
        "contact_title: Head of Everything",
    );
    ensure!(
        edited != yaml,
        "the mapping line is not in the file: {yaml}"
    );
    st.c.execute(
        "document.getElementById('yaml').value = arguments[0];",
        vec![json!(edited)],
    )
    .await?;
    st.click("#run").await?;
    let plan = st.text("#plan").await?;
    ensure!(
        plan.contains("~ title: \"CTO\" → \"Head of Everything\""),
        "the edited copy's plan: {plan}"
    );
    let review = st.text("p.review-summary").await?;
    ensure!(
        review.starts_with("1 of the last 2 captured event(s)")
            || review.starts_with("2 of the last 2 captured event(s)"),
        "the review: {review}"
    );
    st.c.execute(
        "document.getElementById('results').scrollIntoView();",
        vec![],
    )
    .await?;
    st.shot("playground").await?;
    // Nothing ran for real: Close and the running file are as they were.
    ensure!(sim.state().await == state, "the playground wrote to Close");
    let running = std::fs::read_to_string(dir.join("config/acme.yaml"))?;
    if running.contains("Head of Everything") {
        bail!("the playground changed the running file");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium_finds_explains_replays_and_previews_safely() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(dir.path(), &[], &[("CLOSEFLOW_ADMIN_TOKEN", TOKEN)]).await;
    for ev in [
        person("ada", "ada@example.com", "CTO"),
        person("eve", "eve@example.com", XSS),
    ] {
        assert_eq!(
            post(&s.base(), "/v1/identify", Some("wk"), &ev).await.0,
            200
        );
    }
    wait_for("both events dead-lettered", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_dead_letters",
            "instance=\"acme\"",
        ) == 2.0
    })
    .await;

    let out = closeflow_e2e::scratch("console");
    let driver = Chromedriver::start(&out.join("chromedriver.log")).await;
    let c = browser(&driver, &out.join("profile")).await;
    let st = Story {
        c: &c,
        base: s.base(),
        shots: std::env::var_os("CLOSEFLOW_SCREENSHOTS").map(PathBuf::from),
    };
    let result = scenario(&st, &s, &sim, dir.path()).await;
    if let Err(e) = &result {
        let _ = c
            .screenshot()
            .await
            .map(|png| std::fs::write(out.join("failure.png"), png));
        let _ = c
            .source()
            .await
            .map(|html| std::fs::write(out.join("failure.html"), html));
        let _ = std::fs::write(out.join("server.log"), s.log());
        let _ = c.close().await;
        panic!(
            "{e:#}\n(the page at the failure: {0}/failure.png and {0}/failure.html; the server's log: {0}/server.log)",
            out.display()
        );
    }
    c.close().await.unwrap();
}

/// A logged-in console session over plain HTTP (cookies kept by hand): for the checks that
/// need no browser.
struct Http {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

impl Http {
    async fn log_in(base: &str) -> Http {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http
            .get(format!("{base}/console/login"))
            .send()
            .await
            .unwrap();
        let nonce_cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let nonce = hidden(&r.text().await.unwrap(), "csrf");
        let r = http
            .post(format!("{base}/console/login"))
            .header("cookie", &nonce_cookie)
            .form(&[("csrf", nonce.as_str()), ("token", TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("closeflow_session="))
            .unwrap();
        let page = http
            .get(format!("{base}/console/playground"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = hidden(&page, "csrf");
        Http {
            http,
            base: base.to_string(),
            cookie,
            csrf,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_copy_in_the_playground_cannot_print_a_secret_from_the_environment() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    // The running file reads its Close key from the environment.
    let text = closeflow_e2e::soak::workload::instance(
        "acme",
        &sim.api(),
        &["wk"],
        "${ACME_CLOSE_KEY}",
        "$.traits.title",
    );
    crate::serve::write_config(dir.path(), "acme.yaml", &text);
    let s = ServerProc::start(
        dir.path(),
        &[],
        &[
            ("CLOSEFLOW_ADMIN_TOKEN", TOKEN),
            ("ACME_CLOSE_KEY", "test_key"),
        ],
    )
    .await;
    let c = Http::log_in(&s.base()).await;
    // The copy names the key's variable in a plain setting, which a plan prints.
    let edited = text.replace(
        "contact_custom_field_id_for_user_id: cf_user",
        "contact_custom_field_id_for_user_id: ${ACME_CLOSE_KEY}",
    );
    assert_ne!(edited, text);
    let page = c
        .http
        .post(format!("{}/console/playground", c.base))
        .header("cookie", &c.cookie)
        .form(&[
            ("csrf", c.csrf.as_str()),
            ("instance", "acme"),
            ("against", "empty"),
            ("yaml", edited.as_str()),
            (
                "event",
                r#"{"type":"identify","userId":"u1","traits":{"email":"a@x.io","title":"CTO"}}"#,
            ),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"plan\""), "no plan: {page}");
    assert!(
        page.contains("custom.(secret)"),
        "the setting should read (secret): {page}"
    );
    assert!(!page.contains("test_key"), "the Close key is on the page");
    // The same form without its CSRF token does nothing.
    let r = c
        .http
        .post(format!("{}/console/playground", c.base))
        .header("cookie", &c.cookie)
        .form(&[("instance", "acme"), ("yaml", edited.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}
