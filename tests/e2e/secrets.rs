//! Secrets never leak: a recognisable Close API key, write key and admin token go through the
//! server (good traffic, a wrong write key, wrong and right admin tokens, a wrong Close key,
//! Close down, SIGTERM), `send`, `dry-run`, `validate` and `dlq`, and none of them appears in
//! any output, log line, metric, HTTP reply or file other than where the operator put it
//! (the environment, and the one instance file that holds a key literally on purpose); then
//! once more with every log line on (`CLOSEFLOW_LOG=trace`, text, backtraces) and a delivery
//! that panics.

use closeflow_e2e::procs::{ServerProc, SimProc, empty_org, metric, wait_for};
use closeflow_e2e::{closeflow_bin, text};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const API_KEY: &str = "sk_SECRET_API_7f3a9d";
const WRITE_KEY: &str = "wk_SECRET_WRITE_51c2e0";
const ADMIN_TOKEN: &str = "adm_SECRET_TOKEN_88e1b4";
const WRONG_API_KEY: &str = "sk_SECRET_WRONG_0c1d2e";
const SECRETS: [&str; 4] = [API_KEY, WRITE_KEY, ADMIN_TOKEN, WRONG_API_KEY];

fn instance(name: &str, api: &str, key_var: &str, write_var: &str) -> String {
    format!(
        r#"name: {name}
endpoint: {api}
write_key: ${{{write_var}}}
settings:
  api_key: ${{{key_var}}}
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: People
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
"#
    )
}

/// Everything a run produced, to be searched for secrets.
#[derive(Default)]
struct Seen(Vec<(String, Vec<u8>)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((what.into(), bytes.into()));
    }
    fn output(&mut self, what: &str, o: &Output) {
        self.add(what, text(o));
    }
    fn files_under(&mut self, dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                self.files_under(&p);
            } else {
                self.add(
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                );
            }
        }
    }
    fn assert_clean(&self) {
        assert!(self.0.len() > 20, "the run produced too little to check");
        for (what, bytes) in &self.0 {
            for s in SECRETS {
                let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
                assert!(
                    !found,
                    "{s} leaked into {what}:\n{}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(closeflow_bin());
    c.args(args)
        .current_dir(closeflow_e2e::workspace_root())
        .env("NO_COLOR", "1")
        .env_remove("CLOSEFLOW_CLOSE_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("closeflow runs")
}

/// A CLI run that got as far as doing its work: it exited 0 or 1, not 2 (a clap usage error,
/// e.g. a renamed flag — then its output holds no key for a vacuous reason; none of these runs
/// asks for `--detailed-exitcode`) and was not killed.
fn ran(what: &str, o: &Output) {
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{what}: not a completed run: {}",
        text(o)
    );
}

async fn http(seen: &mut Seen, what: &str, r: reqwest::RequestBuilder) -> u16 {
    let resp = r.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let headers = format!("{:?}", resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    seen.add(format!("{what}: reply headers"), headers);
    seen.add(format!("{what}: reply body"), body.to_vec());
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_output_log_metric_reply_or_file() {
    let mut org = empty_org();
    org["api_keys"] = json!([API_KEY]);
    let mut sim = SimProc::start(&org).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("acme.yaml"),
        instance("acme", &sim.api(), "CLOSE_API_KEY", "ACME_WRITE_KEY"),
    )
    .unwrap();
    // A second instance whose Close key is wrong: its events are refused by Close (401).
    std::fs::write(
        config.join("wrong.yaml"),
        instance("wrong", &sim.api(), "WRONG_CLOSE_KEY", "WRONG_WRITE_KEY"),
    )
    .unwrap();
    let env = [
        ("CLOSE_API_KEY", API_KEY),
        ("ACME_WRITE_KEY", WRITE_KEY),
        ("WRONG_CLOSE_KEY", WRONG_API_KEY),
        ("WRONG_WRITE_KEY", "wk_other_source"),
        ("CLOSEFLOW_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut seen = Seen::default();
    let mut s = ServerProc::start(dir.path(), &["--close-attempts", "1"], &env).await;
    let base = s.base();
    let c = reqwest::Client::new();
    let ev = |n: u32| {
        json!({"type": "identify", "userId": format!("u{n}"), "messageId": format!("s-{n}"),
               "traits": {"email": format!("u{n}@secret.example"), "name": "P"}})
    };
    // Good traffic: the key as Basic user name, and in the body (it must not be stored).
    let st = http(
        &mut seen,
        "basic",
        c.post(format!("{base}/v1/identify"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&ev(1)),
    )
    .await;
    assert_eq!(st, 200);
    let mut body = ev(2);
    body["writeKey"] = json!(WRITE_KEY);
    let st = http(
        &mut seen,
        "body key",
        c.post(format!("{base}/v1/identify")).json(&body),
    )
    .await;
    assert_eq!(st, 200);
    let batch =
        json!({"writeKey": WRITE_KEY, "batch": [ev(3), {"type": "nope", "writeKey": WRITE_KEY}]});
    let st = http(
        &mut seen,
        "batch with a bad item",
        c.post(format!("{base}/v1/batch")).json(&batch),
    )
    .await;
    assert_eq!(st, 200);
    // A near miss of the write key, and a broken body that carries it.
    let near = format!("{WRITE_KEY}x");
    let st = http(
        &mut seen,
        "near miss",
        c.post(format!("{base}/v1/identify"))
            .basic_auth(&near, Some(""))
            .json(&ev(4)),
    )
    .await;
    assert_eq!(st, 401);
    let broken = format!("{{\"writeKey\": \"{WRITE_KEY}\", \"batch\": [");
    let st = http(
        &mut seen,
        "broken body",
        c.post(format!("{base}/v1/batch")).body(broken),
    )
    .await;
    assert_eq!(st, 400);
    // Events for the instance with the wrong Close key.
    let st = http(
        &mut seen,
        "wrong instance",
        c.post(format!("{base}/v1/identify"))
            .basic_auth("wk_other_source", Some(""))
            .json(&ev(5)),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(
        "acme applied and wrong dead-lettered",
        Duration::from_secs(90),
        || async {
            let m = s.metrics().await;
            metric(&m, "closeflow_events_applied_total", "instance=\"acme\"") == 3.0
                && metric(&m, "closeflow_dead_letters", "instance=\"wrong\"") == 1.0
        },
    )
    .await;
    // The admin routes, with a wrong token and the right one.
    let st = http(
        &mut seen,
        "admin wrong",
        c.get(format!("{base}/admin/dlq"))
            .bearer_auth(format!("{ADMIN_TOKEN}0")),
    )
    .await;
    assert_eq!(st, 401);
    let st = http(
        &mut seen,
        "admin list",
        c.get(format!("{base}/admin/dlq")).bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(st, 200);
    // Close goes down: deliveries fail and are retried (and logged).
    sim.kill();
    let st = http(
        &mut seen,
        "while Close is down",
        c.post(format!("{base}/v1/identify"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&ev(6)),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(
        "a failed delivery retried",
        Duration::from_secs(60),
        || async {
            let m = s.metrics().await;
            metric(&m, "closeflow_events_retried_total", "instance=\"acme\"") >= 2.0
        },
    )
    .await;
    let m = s.metrics().await;
    seen.add("metrics", m);
    for path in ["/livez", "/readyz", "/nope"] {
        http(&mut seen, path, c.get(format!("{base}{path}"))).await;
    }
    assert_eq!(s.terminate(), Some(0));
    seen.add("server log", s.log());
    let data = dir.path().join("data");
    for args in [vec!["dlq", "list", "--format", "json"], vec!["dlq", "list"]] {
        let mut a = args.clone();
        a.extend(["--data-dir", data.to_str().unwrap()]);
        let o = cli(&a, &[]);
        assert!(o.status.success(), "{}", text(&o));
        seen.output(&format!("{args:?}"), &o);
    }
    let dead: Value = serde_json::from_slice(
        &cli(
            &[
                "dlq",
                "list",
                "--format",
                "json",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[],
        )
        .stdout,
    )
    .unwrap();
    let id = dead["dead_letters"][0]["id"].to_string();
    let o = cli(
        &["dlq", "show", &id, "--data-dir", data.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    seen.output("dlq show", &o);
    seen.files_under(&data);
    for i in 0..=1 {
        seen.add(
            format!("server-{i}.log"),
            std::fs::read(dir.path().join(format!("server-{i}.log"))).unwrap_or_default(),
        );
    }

    // The CLI against a simulator that is up again, with the right key, a wrong one, and down.
    let sim2 = SimProc::start(&org).await;
    let cli_dir = tempfile::tempdir().unwrap();
    let inst = cli_dir.path().join("acme.yaml");
    std::fs::write(
        &inst,
        instance("acme", &sim2.api(), "CLOSE_API_KEY", "ACME_WRITE_KEY"),
    )
    .unwrap();
    // The same instance over a list of keys, the second one wrong.
    let two = cli_dir.path().join("two_keys.yaml");
    std::fs::write(
        &two,
        instance("acme", &sim2.api(), "CLOSE_API_KEY", "ACME_WRITE_KEY").replace(
            "api_key: ${CLOSE_API_KEY}",
            "api_key: [\"${CLOSE_API_KEY}\", \"${WRONG_CLOSE_KEY}\"]",
        ),
    )
    .unwrap();
    let two = two.to_str().unwrap();
    let events = cli_dir.path().join("events.jsonl");
    std::fs::write(&events, format!("{}\n{}\nnot json\n", ev(7), ev(8))).unwrap();
    let (i, e) = (inst.to_str().unwrap(), events.to_str().unwrap());
    let resume = cli_dir.path().join("resume");
    let r = resume.to_str().unwrap();
    let explained = ev(9).to_string();
    type Env<'a> = &'a [(&'a str, &'a str)];
    let runs: Vec<(&str, Vec<&str>, Env)> = vec![
        (
            "send",
            vec!["send", "--instance", i, e, "--resume-file", r],
            &env,
        ),
        ("dry-run", vec!["dry-run", "--instance", i, e], &env),
        (
            "dry-run json",
            vec!["dry-run", "--instance", i, e, "--format", "json"],
            &env,
        ),
        ("validate", vec!["validate", i], &env),
        (
            "send wrong key",
            vec!["send", "--instance", i, e, "--resume-file", r],
            &[
                ("CLOSE_API_KEY", WRONG_API_KEY),
                ("ACME_WRITE_KEY", WRITE_KEY),
            ],
        ),
        (
            "dry-run wrong key",
            vec!["dry-run", "--instance", i, e],
            &[
                ("CLOSE_API_KEY", WRONG_API_KEY),
                ("ACME_WRITE_KEY", WRITE_KEY),
            ],
        ),
        ("validate a key list", vec!["validate", two], &env),
        (
            "dry-run a key list, one wrong",
            vec!["dry-run", "--instance", two, e],
            &env,
        ),
        (
            "send a key list, one wrong",
            vec!["send", "--instance", two, e],
            &env,
        ),
        (
            "send Close down",
            vec![
                "send",
                "--instance",
                i,
                e,
                "--resume-file",
                r,
                "--close-url",
                "http://127.0.0.1:9/api/v1/",
            ],
            &env,
        ),
        (
            "dry-run Close down",
            vec![
                "dry-run",
                "--instance",
                i,
                e,
                "--close-url",
                "http://127.0.0.1:9/api/v1/",
            ],
            &env,
        ),
        (
            "explain",
            vec!["explain", "--instance", i, &explained],
            &env,
        ),
    ];
    for (what, args, env) in runs {
        let o = cli(&args, env);
        ran(what, &o);
        if what.ends_with("one wrong") {
            // The wrong key of the list was tried, and is named by its place.
            assert!(text(&o).contains("API key 2 of 2"), "{what}: {}", text(&o));
        }
        seen.output(what, &o);
    }
    // An operator who wrote keys into the file itself (where keys go: `write_key`, `api_key`),
    // with errors around them: validate's source excerpts must not show them.
    let literal = cli_dir.path().join("literal.yaml");
    std::fs::write(
        &literal,
        format!(
            "name: literal\nwrite_key:\n  - {WRITE_KEY}\nsettings:\n  api_key: {API_KEY}\n  unknown_setting: 1\n  contact_custom_field_id_for_user_id: [1]\nmappings:\n  - name: m\n    trigger: type = = \"x\"\n    action: create_or_update_contact_and_lead\n"
        ),
    )
    .unwrap();
    // And a list of keys written in the file, flow and block style, next to an error.
    let literal_lists = [
        cli_dir.path().join("literal_flow.yaml"),
        cli_dir.path().join("literal_block.yaml"),
    ];
    for (path, keys) in literal_lists.iter().zip([
        format!("[{API_KEY}, \"${{UNSET_KEY_VAR:-{WRONG_API_KEY}}}\"]"),
        format!("\n    - {API_KEY}\n    - {WRONG_API_KEY}"),
    ]) {
        std::fs::write(
            path,
            format!(
                "name: listed\nsettings:\n  api_key: {keys}\n  unknown_setting: 1\nmappings:\n  - name: m\n    trigger: type = = \"x\"\n    action: create_or_update_contact_and_lead\n"
            ),
        )
        .unwrap();
    }
    for file in [&literal, &literal_lists[0], &literal_lists[1]] {
        for format in ["human", "json"] {
            let o = cli(
                &["validate", file.to_str().unwrap(), "--format", format],
                &[],
            );
            assert!(!o.status.success(), "the file is invalid: {}", text(&o));
            let what = format!("validate {format} of {}", file.display());
            ran(&what, &o);
            assert!(text(&o).contains("literal_secret"), "{what}: {}", text(&o));
            seen.output(&what, &o);
        }
    }
    let o = cli(
        &["dry-run", "--instance", literal.to_str().unwrap(), e],
        &[],
    );
    ran("dry-run of a file holding keys", &o);
    seen.output("dry-run of a file holding keys", &o);
    // The resume file is ours to write (the first send, with the right key, opens it before
    // its first event): no key in it.
    assert!(
        resume.exists(),
        "the first send wrote no resume file at {}",
        resume.display()
    );
    seen.add("resume file", std::fs::read(&resume).unwrap());

    // The server again, logging everything (`CLOSEFLOW_LOG=trace`, as text, backtraces on),
    // with a delivery that panics (a failpoint: no input is known to cause one) beside good
    // traffic, the wrong Close key and a refused write key.
    let dir3 = tempfile::tempdir().unwrap();
    let config3 = dir3.path().join("config");
    std::fs::create_dir_all(&config3).unwrap();
    std::fs::write(
        config3.join("acme.yaml"),
        instance("acme", &sim2.api(), "CLOSE_API_KEY", "ACME_WRITE_KEY"),
    )
    .unwrap();
    std::fs::write(
        config3.join("wrong.yaml"),
        instance("wrong", &sim2.api(), "WRONG_CLOSE_KEY", "WRONG_WRITE_KEY"),
    )
    .unwrap();
    let mut traced_env = env.to_vec();
    traced_env.extend([
        ("CLOSEFLOW_LOG", "trace"),
        ("RUST_BACKTRACE", "1"),
        ("CLOSEFLOW_FAILPOINT_PANIC", "s-10"),
    ]);
    let mut t = ServerProc::start(
        dir3.path(),
        &["--close-attempts", "1", "--log-format", "text"],
        &traced_env,
    )
    .await;
    let tb = t.base();
    for (n, key) in [(10, WRITE_KEY), (11, WRITE_KEY), (12, "wk_other_source")] {
        let st = http(
            &mut seen,
            &format!("traced {n}"),
            c.post(format!("{tb}/v1/identify"))
                .basic_auth(key, Some(""))
                .json(&ev(n)),
        )
        .await;
        assert_eq!(st, 200);
    }
    let st = http(
        &mut seen,
        "traced near miss",
        c.post(format!("{tb}/v1/identify"))
            .basic_auth(&near, Some(""))
            .json(&ev(13)),
    )
    .await;
    assert_eq!(st, 401);
    wait_for(
        "the panic dead-lettered, the good event applied, the wrong key refused",
        Duration::from_secs(90),
        || async {
            let m = t.metrics().await;
            metric(
                &m,
                "closeflow_events_dead_lettered_total",
                "reason=\"internal_error\"",
            ) == 1.0
                && metric(&m, "closeflow_events_applied_total", "instance=\"acme\"") == 1.0
                && metric(&m, "closeflow_dead_letters", "instance=\"wrong\"") == 1.0
        },
    )
    .await;
    seen.add("traced metrics", t.metrics().await);
    assert_eq!(t.terminate(), Some(0));
    let traced_log = t.log();
    assert!(
        traced_log.contains("panicked"),
        "the panic was provoked: {traced_log}"
    );
    assert!(
        traced_log.contains("TRACE"),
        "trace logging was on: {}",
        &traced_log[..traced_log.len().min(2000)]
    );
    assert!(!traced_log.starts_with('{'), "text log lines");
    seen.add("traced server log", traced_log);
    let data3 = dir3.path().join("data");
    let o = cli(
        &[
            "dlq",
            "list",
            "--format",
            "json",
            "--data-dir",
            data3.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("internal_error"), "{}", text(&o));
    seen.output("traced dlq", &o);
    seen.files_under(&data3);
    seen.assert_clean();
}
