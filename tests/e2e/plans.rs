//! `dry-run`, `send` and `test` through the real binary: golden output for a spread of plans,
//! and runs against the real simulator over loopback.

use closeflow_e2e::{closeflow, closeflow_stdin, text};
use serde_json::Value;

const INSTANCE: &str = "tests/e2e/fixtures/plans/plans.yaml";
const STATE: &str = "sim:tests/e2e/fixtures/plans/state.json";
const EVENTS: &str = "tests/e2e/fixtures/plans/events.jsonl";

/// `closeflow dry-run` of the fixture instance against its snapshot, with `tail` appended.
fn dry_run_on_fixture(tail: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec!["dry-run", "--instance", INSTANCE, "--against", STATE];
    a.extend_from_slice(tail);
    a
}

#[test]
fn golden_human_plan() {
    let out = closeflow(&dry_run_on_fixture(&["--no-color", EVENTS]));
    insta::assert_snapshot!("dry_run_human", text(&out));
}

#[test]
fn golden_json_plan() {
    let out = closeflow(&dry_run_on_fixture(&["--format", "json", EVENTS]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid events make the run exit 1"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    insta::assert_json_snapshot!("dry_run_json", v);
}

#[test]
fn jsonl_is_one_line_per_event_then_the_summary() {
    let out = closeflow(&dry_run_on_fixture(&["--format", "jsonl", EVENTS]));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 13);
    for (i, l) in lines[..12].iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["format_version"], 1);
    }
    assert_eq!(lines[10]["message_id"], "e11");
    assert!(lines[10]["error"].as_str().unwrap().contains("no `type`"));
    assert_eq!(lines[12]["summary"]["errors"], 2);
}

#[test]
fn detailed_exit_codes() {
    let unchanged = r#"{"type": "identify", "userId": "u_ada", "traits": {"email": "ada@old.io", "name": "Ada Lovelace", "title": "Engineer", "company": {"id": "c_acme", "name": "Acme"}}}"#;
    let changed = r#"{"type": "identify", "userId": "u_ada", "traits": {"title": "CTO", "company": {"id": "c_acme"}}}"#;
    let args = dry_run_on_fixture(&["--detailed-exitcode", "-"]);
    assert_eq!(closeflow_stdin(&args, unchanged).status.code(), Some(0));
    assert_eq!(closeflow_stdin(&args, changed).status.code(), Some(2));
    let plain = dry_run_on_fixture(&["-"]);
    assert_eq!(
        closeflow_stdin(&plain, changed).status.code(),
        Some(0),
        "without the flag, changes exit 0"
    );
}

#[test]
fn batch_bodies_and_arrays_are_events_too() {
    let batch = r#"{"batch": [{"type": "identify", "userId": "u_ada", "traits": {"title": "CTO", "company": {"id": "c_acme"}}}, {"type": "page"}]}"#;
    let out = closeflow_stdin(&dry_run_on_fixture(&["--format", "json", "-"]), batch);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["summary"]["update_contact"], 1);
    assert_eq!(v["summary"]["not_matched"], 1);
}

#[test]
fn mapping_tests_pass_and_a_failure_shows_a_diff() {
    let out = closeflow(&["test", "mappings/"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("14 passed, 0 failed"), "{t}");
    let dir = std::env::temp_dir().join(format!("closeflow-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["default.yaml", "default.state.json"] {
        std::fs::copy(
            closeflow_e2e::workspace_root().join("mappings").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("default.test.yaml"),
        "state: default.state.json\ntests:\n  - name: wrong on purpose\n    event: {type: identify, userId: u_42, traits: {title: CTO, company: {id: c_acme}}}\n    expect:\n      plan: [create_lead]\n",
    )
    .unwrap();
    let out = closeflow(&["test", dir.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("✗ wrong on purpose"), "{t}");
    assert!(t.contains("      - - \"create_lead\""), "{t}");
    assert!(t.contains("      + - \"unchanged lead_19aKq2\""), "{t}");
    assert!(t.contains("0 passed, 1 failed"), "{t}");
}

mod live {
    use super::*;
    use closeflow_sim::Sim;

    async fn sim() -> (Sim, String) {
        let snap: Value = serde_json::from_str(
            &std::fs::read_to_string(
                closeflow_e2e::workspace_root().join("tests/e2e/fixtures/plans/state.json"),
            )
            .unwrap(),
        )
        .unwrap();
        closeflow_e2e::procs::sim_in_process(&snap).await
    }

    async fn run(args: Vec<String>) -> std::process::Output {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            closeflow(&a)
        })
        .await
        .unwrap()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dry_run_against_live_close_cannot_write() {
        let (sim, url) = sim().await;
        let before = sim.snapshot();
        let out = run(args(&[
            "dry-run",
            "--format",
            "json",
            "--instance",
            INSTANCE,
            "--close-url",
            &url,
            EVENTS,
        ]))
        .await;
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        assert_eq!(v["summary"]["create_lead"], 1, "{}", text(&out));
        assert_eq!(v["summary"]["update_contact"], 11);
        assert_eq!(
            sim.snapshot(),
            before,
            "a dry-run changed the simulator's state"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn send_applies_then_resume_skips_what_was_applied() {
        let (sim, url) = sim().await;
        let dir = std::env::temp_dir().join(format!("closeflow-send-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resume = dir.join("done").display().to_string();
        let _ = std::fs::remove_file(&resume);
        let send = |extra: &[&str]| {
            let mut a = args(&[
                "send",
                "--instance",
                INSTANCE,
                "--close-url",
                &url,
                "--resume-file",
                &resume,
            ]);
            a.extend(extra.iter().map(|s| s.to_string()));
            a.push(EVENTS.to_string());
            a
        };
        let out = run(send(&[])).await;
        let t = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "two invalid events fail the run: {t}"
        );
        assert!(t.contains("2 event(s) failed:"), "{t}");
        assert!(
            t.contains("event 11 (messageId e11): the event has no `type`"),
            "{t}"
        );
        let leads = sim.snapshot()["leads"].as_array().unwrap().clone();
        assert!(
            leads.iter().any(|l| l["name"] == "Globex"),
            "the new lead was created"
        );
        let ada = leads.iter().find(|l| l["id"] == "lead_acme").unwrap()["contacts"][0].clone();
        assert_eq!(ada["title"], "CTO");
        let applied = std::fs::read_to_string(&resume).unwrap();
        assert_eq!(
            applied.lines().next(),
            Some(format!("# closeflow send: instance plans, endpoint {url}").as_str())
        );
        assert_eq!(applied.lines().skip(1).count(), 10, "{applied}");

        let after_first = sim.snapshot();
        let out = run(send(&["--resume"])).await;
        let t = text(&out);
        assert!(
            t.contains(&format!("--resume: 10 event(s) skipped because {resume} records them as already applied by instance plans at {url}")),
            "{t}"
        );
        assert!(
            t.contains("event 1  = skipped by --resume: messageId e1 was already applied"),
            "{t}"
        );
        assert_eq!(sim.snapshot(), after_first, "nothing applied twice");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_default_resume_file_belongs_to_one_instance_and_one_close() {
        let dir = closeflow_e2e::scratch("resume");
        let instance = closeflow_e2e::workspace_root().join(INSTANCE);
        let events = closeflow_e2e::workspace_root().join(EVENTS);
        let send = |url: String, extra: &'static [&'static str]| {
            let (dir, instance, events) = (dir.clone(), instance.clone(), events.clone());
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(closeflow_e2e::closeflow_bin())
                    .arg("send")
                    .args(extra)
                    .arg("--instance")
                    .arg(&instance)
                    .args(["--close-url", &url])
                    .arg(&events)
                    .current_dir(&dir)
                    .env("NO_COLOR", "1")
                    .output()
                    .unwrap()
            })
        };
        let (first, url1) = sim().await;
        let out = send(url1.clone(), &[]).await.unwrap();
        let t = text(&out);
        let port1 = url1.split(':').nth(2).unwrap().split('/').next().unwrap();
        let file = format!(".closeflow-send-plans-127.0.0.1_{port1}_api_v1.done");
        assert!(dir.join(&file).is_file(), "{t}");
        assert!(
            t.contains(&format!(
                "applied messageIds are recorded in {file} (instance plans at {url1})"
            )),
            "{t}"
        );
        // Another Close (a fresh simulator) has none of it: --resume skips nothing there.
        let (second, url2) = sim().await;
        let out = send(url2.clone(), &["--resume"]).await.unwrap();
        let t = text(&out);
        assert!(t.contains("--resume: nothing skipped"), "{t}");
        assert_eq!(
            second.snapshot()["leads"].as_array().unwrap().len(),
            first.snapshot()["leads"].as_array().unwrap().len(),
            "the second Close got every event"
        );
        // A resume file recorded for one Close is refused for another.
        let recorded = dir.join(&file).display().to_string();
        let out = run(args(&[
            "send",
            "--resume",
            "--resume-file",
            &recorded,
            "--instance",
            INSTANCE,
            "--close-url",
            &url2,
            EVENTS,
        ]))
        .await;
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("records events applied elsewhere"), "{t}");
    }
}
