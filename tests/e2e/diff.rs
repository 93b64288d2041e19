//! `closeflow diff` through the real binary: golden human and JSON output for each kind of
//! change, identical versions, `--base` against a temporary git repository, and the event
//! inputs `dry-run` reads.

use closeflow_e2e::{closeflow, closeflow_stdin, scratch, text};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const DIR: &str = "tests/e2e/fixtures/diff";
const STATE: &str = "sim:tests/e2e/fixtures/diff/state.json";
const EVENTS: &str = "tests/e2e/fixtures/diff/events.jsonl";

fn fixture(name: &str) -> String {
    format!("{DIR}/{name}.yaml")
}

/// `closeflow diff --old old.yaml --new NEW.yaml [tail…] events.jsonl`.
fn diff(new: &str, tail: &[&str]) -> std::process::Output {
    let (old, new) = (fixture("old"), fixture(new));
    let mut a = vec!["diff", "--old", &old, "--new", &new];
    a.extend_from_slice(tail);
    a.push(EVENTS);
    closeflow(&a)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

macro_rules! golden_pair {
    ($human:ident, $json:ident, $new:expr, $tail:expr) => {
        #[test]
        fn $human() {
            let out = diff($new, &$tail);
            insta::assert_snapshot!(stringify!($human), text(&out));
        }
        #[test]
        fn $json() {
            let mut tail = $tail.to_vec();
            tail.extend(["--format", "json"]);
            let out = diff($new, &tail);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            let v = json(&out);
            assert_eq!(v["format_version"], 1);
            insta::assert_json_snapshot!(stringify!($json), v);
        }
    };
}

golden_pair!(
    diff_trigger_human,
    diff_trigger_json,
    "trigger",
    [] as [&str; 0]
);
golden_pair!(
    diff_payload_human,
    diff_payload_json,
    "payload",
    [] as [&str; 0]
);
golden_pair!(
    diff_plan_human,
    diff_plan_json,
    "plan",
    ["--against", STATE]
);
golden_pair!(
    diff_renamed_human,
    diff_renamed_json,
    "renamed",
    ["--against", STATE]
);

#[test]
fn trigger_changes_are_counted_by_kind() {
    let v = json(&diff("trigger", &["--format", "json"]));
    let s = &v["summary"];
    assert_eq!(s["events"], 8);
    assert_eq!(
        s["no_longer_matched"], 2,
        "event 2 (no plan) and event 5 (accounts off)"
    );
    assert_eq!(s["newly_matched"], 1, "Trial Started");
    assert_eq!(s["plan_changed"], 0, "no plans without --against");
    assert_eq!(v["plans"], false);
    let e7 = &v["events"][6];
    assert_eq!(e7["message_id"], "e7");
    assert_eq!(e7["mappings"][0]["old"]["matched"], false);
    assert_eq!(e7["mappings"][0]["new"]["matched"], true);
}

#[test]
fn a_flag_turns_an_update_into_a_skip_in_the_plan() {
    let v = json(&diff("plan", &["--against", STATE, "--format", "json"]));
    let m = &v["events"][0]["mappings"][0];
    let change = &m["plan_changes"][0];
    assert_eq!(change["op"], "~");
    assert_eq!(change["old"]["kind"], "update_contact");
    assert_eq!(change["new"]["kind"], "skipped");
    assert_eq!(change["new"]["reason"], "allow_updating_existing_contacts");
    assert_eq!(v["summary"]["plan_changed"], 4);
}

#[test]
fn a_pure_rename_changes_no_event_and_a_removal_no_longer_matches() {
    let v = json(&diff("renamed", &["--format", "json"]));
    let changes = v["mapping_changes"].as_array().unwrap();
    assert_eq!(changes[0]["status"], "renamed");
    assert_eq!(changes[0]["old_name"], "Signed-up users");
    assert_eq!(changes[0]["name"], "Trial sign-ups");
    assert_eq!(changes[1]["status"], "removed");
    assert_eq!(changes[1]["name"], "Accounts");
    assert_eq!(
        v["summary"]["changed"], 1,
        "only the group event, which only Accounts matched"
    );
    assert_eq!(v["events"][4]["mappings"][0]["status"], "removed");
}

#[test]
fn identical_versions_report_nothing_and_exit_0() {
    let old = fixture("old");
    let out = closeflow(&[
        "diff",
        "--old",
        &old,
        "--new",
        &old,
        "--against",
        STATE,
        "--detailed-exitcode",
        EVENTS,
    ]);
    insta::assert_snapshot!("diff_identical", text(&out));
    assert_eq!(out.status.code(), Some(0));
    let out = closeflow(&[
        "diff", "--old", &old, "--new", &old, "--format", "json", EVENTS,
    ]);
    let v = json(&out);
    assert_eq!(v["summary"]["changed"], 0);
    assert_eq!(v["summary"]["unchanged"], 8);
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["changed"] == false)
    );
}

#[test]
fn detailed_exitcode_is_2_when_anything_changes() {
    assert_eq!(
        diff("payload", &["--detailed-exitcode"]).status.code(),
        Some(2)
    );
    assert_eq!(
        diff("payload", &[]).status.code(),
        Some(0),
        "without the flag, changes exit 0"
    );
}

#[test]
fn limit_bounds_the_examples_and_values_shown() {
    let v = json(&diff("payload", &["--limit", "1", "--format", "json"]));
    let g = v["summary"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["what"] == "contact_name")
        .cloned()
        .unwrap();
    assert_eq!(g["events"], 4);
    assert_eq!(g["examples"], serde_json::json!([0]));
    assert_eq!(g["values"][0]["events"], 2, "the most frequent pair first");
    assert_eq!(g["other_values"], 2);
    let out = diff("payload", &["--limit", "1", "--format", "summary"]);
    insta::assert_snapshot!("diff_summary_limit_1", text(&out));
}

#[test]
fn events_come_from_any_input_dry_run_reads() {
    let (old, new) = (fixture("old"), fixture("trigger"));
    // A Segment batch body on standard input, then an array file: indexes run on.
    let batch = r#"{"batch": [{"type": "identify", "messageId": "b1", "userId": "u_x", "traits": {"email": "x@y.com"}}, {"type": "page"}]}"#;
    let dir = scratch("diff-inputs");
    let array = dir.join("events.json");
    std::fs::write(
        &array,
        r#"[{"type": "track", "messageId": "a1", "event": "Trial Started", "context": {"traits": {"email": "z@y.com"}}}]"#,
    )
    .unwrap();
    let out = closeflow_stdin(
        &[
            "diff",
            "--old",
            &old,
            "--new",
            &new,
            "--format",
            "json",
            "-",
            array.to_str().unwrap(),
        ],
        batch,
    );
    let v = json(&out);
    let ids: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["message_id"])
        .collect();
    assert_eq!(ids, [&Value::from("b1"), &Value::Null, &Value::from("a1")]);
    assert_eq!(
        v["events"][0]["mappings"][0]["name"],
        "Identify → contact and lead"
    );
    assert_eq!(v["events"][2]["index"], 2);
    assert_eq!(v["summary"]["newly_matched"], 1);
    assert_eq!(v["summary"]["no_longer_matched"], 1);
}

#[test]
fn invalid_events_are_shown_not_compared_and_exit_1() {
    let (old, new) = (fixture("old"), fixture("payload"));
    let input = "{\"type\": \"identify\", \"userId\": \"u\", \"traits\": {\"first_name\": \"A\", \"last_name\": \"B\"}}\nnot json\n{\"messageId\": \"m3\"}\n";
    let out = closeflow_stdin(&["diff", "--old", &old, "--new", &new, "-"], input);
    insta::assert_snapshot!("diff_invalid_events", text(&out));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let old = fixture("old");
    let out = closeflow(&["diff", "--new", &old, EVENTS]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--old"));
    let out = closeflow(&[
        "diff", "--old", &old, "--base", "HEAD", "--new", &old, EVENTS,
    ]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "--old and --base exclude each other"
    );
    let out = closeflow(&[
        "diff",
        "--old",
        &old,
        "--new",
        &old,
        "--against",
        "nope",
        EVENTS,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--against takes sim:STATE.json or close")
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=closeflow tests",
            "-c",
            "user.email=tests@closeflow.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn base_takes_the_old_version_from_a_git_revision() {
    let repo = scratch("diff-base");
    let mappings = repo.join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    let root = closeflow_e2e::workspace_root();
    let copy = |from: &str, to: &str| {
        std::fs::copy(root.join(fixture(from)), mappings.join(to)).unwrap();
    };
    copy("old", "shop.yaml");
    std::fs::write(mappings.join("shop.test.yaml"), "tests: []\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    // The pull request: the payload edit, and a new instance that did not exist at the base.
    copy("payload", "shop.yaml");
    let other = std::fs::read_to_string(root.join(fixture("old")))
        .unwrap()
        .replace("name: shop", "name: shop-eu");
    std::fs::write(mappings.join("shop-eu.yaml"), other).unwrap();

    let dir = mappings.to_str().unwrap();
    let events = root.join(EVENTS);
    let out = closeflow(&[
        "diff",
        "--base",
        "HEAD",
        "--new",
        dir,
        "--format",
        "summary",
        events.to_str().unwrap(),
    ]);
    insta::assert_snapshot!("diff_base_git", text(&out));
    assert_eq!(out.status.code(), Some(0));

    // A single file works the same way; the committed version against itself is no change.
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "pr"]);
    let file = mappings.join("shop.yaml");
    let out = closeflow(&[
        "diff",
        "--base",
        "HEAD",
        "--new",
        file.to_str().unwrap(),
        "--detailed-exitcode",
        "--format",
        "json",
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["summary"]["changed"], 0);
    let out = closeflow(&[
        "diff",
        "--base",
        "HEAD~1",
        "--new",
        file.to_str().unwrap(),
        "--detailed-exitcode",
        "--format",
        "json",
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json(&out)["summary"]["payload_changed"], 4);

    let out = closeflow(&[
        "diff",
        "--base",
        "no-such-branch",
        "--new",
        dir,
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`no-such-branch` is not a commit"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&repo);
}

#[test]
fn a_mapping_that_starts_failing_is_a_change_and_is_shown() {
    let dir = scratch("diff-error");
    let root = closeflow_e2e::workspace_root();
    let old = std::fs::read_to_string(root.join(fixture("old"))).unwrap();
    // `seats` is a number on event 1 only; the flag must be a boolean.
    let failing = old.replace(
        "      contact_name: \"{{traits.first_name}} {{traits.last_name}}\"\n",
        "      contact_name: \"{{traits.first_name}} {{traits.last_name}}\"\n      allow_creating_new_leads: $.traits.seats\n",
    );
    assert_ne!(failing, old);
    let new = dir.join("failing.yaml");
    std::fs::write(&new, failing).unwrap();
    let (old, new) = (fixture("old"), new.to_str().unwrap().to_string());
    let out = closeflow(&[
        "diff", "--old", &old, "--new", &new, "--format", "json", EVENTS,
    ]);
    let v = json(&out);
    assert_eq!(v["summary"]["error_changed"], 1, "{}", text(&out));
    let m = &v["events"][0]["mappings"][0];
    assert_eq!(m["old"].get("error"), None);
    assert!(
        m["new"]["error"]
            .as_str()
            .unwrap()
            .contains("must be a boolean"),
        "{m}"
    );
    let out = closeflow(&[
        "diff", "--old", &old, "--new", &new, "--format", "summary", EVENTS,
    ]);
    let t = text(&out);
    assert!(
        t.contains("! \"Identify → contact and lead\" on 1 event: now fails: "),
        "{t}"
    );
    // Swapped, the same event no longer fails.
    let out = closeflow(&[
        "diff", "--old", &new, "--new", &old, "--format", "summary", EVENTS,
    ]);
    assert!(
        text(&out).contains("on 1 event: no longer fails: "),
        "{}",
        text(&out)
    );
}

mod live {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn against_live_close_reads_only_and_equals_the_snapshot_diff() {
        let snap: Value = serde_json::from_str(
            &std::fs::read_to_string(closeflow_e2e::workspace_root().join(&STATE[4..])).unwrap(),
        )
        .unwrap();
        let (sim, url) = closeflow_e2e::procs::sim_in_process(&snap).await;
        let before = sim.snapshot();
        let (live, snapshot) = tokio::task::spawn_blocking(move || {
            (
                diff(
                    "plan",
                    &[
                        "--against",
                        "close",
                        "--close-url",
                        &url,
                        "--format",
                        "json",
                    ],
                ),
                diff("plan", &["--against", STATE, "--format", "json"]),
            )
        })
        .await
        .unwrap();
        let (live, snapshot) = (json(&live), json(&snapshot));
        assert_eq!(live["summary"]["plan_changed"], 4);
        assert_eq!(
            live, snapshot,
            "live Close and its snapshot give the same diff"
        );
        assert_eq!(
            sim.snapshot(),
            before,
            "a diff changed the simulator's state"
        );
    }
}
