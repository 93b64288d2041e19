//! Issue 10 through the real binary: convergence of the shipped examples, refused custom-field
//! keys, URLs and unreachable Close, events files with bad bytes, `eval` pairing.

use closeflow_e2e::{closeflow, closeflow_stdin, scratch, text, workspace_root};
use closeflow_sim::Sim;
use serde_json::Value;

async fn sim_from(path: &str) -> (Sim, String) {
    let snap: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap())
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

fn summary(out: &std::process::Output) -> Value {
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let v: Value = serde_json::from_str(&last).unwrap_or_else(|_| panic!("{}", text(out)));
    v["summary"].clone()
}

/// The shipped examples, sent twice to a simulator started from their own snapshot: the second
/// send writes nothing (`b2b` used to rewrite its datetime field on every send). (`lifecycle`
/// moves a status back and forth by design, so a replay rewrites it.)
#[tokio::test(flavor = "multi_thread")]
async fn the_examples_converge_a_second_send_writes_nothing() {
    for ex in ["default", "b2b"] {
        let (_sim, url) = sim_from(&format!("mappings/{ex}.state.json")).await;
        let resume = scratch(&format!("hardening-converge-{ex}"))
            .join("done")
            .display()
            .to_string();
        let send = || {
            [
                "send",
                "--format",
                "jsonl",
                "--instance",
                &format!("mappings/{ex}.yaml"),
                "--close-url",
                &url,
                "--resume-file",
                &resume,
                &format!("mappings/{ex}.events.jsonl"),
            ]
            .map(str::to_string)
            .to_vec()
        };
        let first = run(send()).await;
        assert_eq!(first.status.code(), Some(0), "{ex}: {}", text(&first));
        let again = run(send()).await;
        let s = summary(&again);
        for k in [
            "create_lead",
            "create_contact",
            "update_lead",
            "update_contact",
        ] {
            assert_eq!(
                s[k],
                0,
                "{ex}: the second send still writes: {}",
                text(&again)
            );
        }
    }
}

#[test]
fn lookup_key_fields_and_field_names_are_refused_as_custom_field_keys() {
    let file = scratch("hardening-keys").join("keys.yaml");
    std::fs::write(
        &file,
        r#"name: keys
settings:
  api_key: ${CLOSE_API_KEY:-test_key}
  lead_custom_field_id_for_company_id: cf_company
  contact_custom_field_id_for_user_id: cf_user
mappings:
  - name: m
    action: create_or_update_contact_and_lead
    fields:
      lead_custom_fields:
        cf_company: $.traits.company.id
        cf_tags.add: x
        cf_tags.set: y
        Plan Name: z
      contact_custom_fields:
        cf_user.add: $.userId
"#,
    )
    .unwrap();
    let out = closeflow(&["validate", "--format", "json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<String> = v["diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|d| format!("{} {}", d["code"].as_str().unwrap(), d["span"]["line"]))
        .collect();
    assert_eq!(
        codes,
        vec![
            "reserved_field_key 11",
            "bad_field_key 13",
            "bad_field_key 14",
            "reserved_field_key 16"
        ],
        "{v}"
    );
}

#[test]
fn a_dynamic_custom_field_key_that_is_a_lookup_key_is_a_payload_error() {
    let file = scratch("hardening-dynamic").join("dynamic.yaml");
    std::fs::write(
        &file,
        r#"name: dynamic
settings:
  api_key: test_key
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: m
    action: create_or_update_contact_and_lead
    fields:
      lead_custom_fields: $.traits.custom
"#,
    )
    .unwrap();
    let events = r#"{"type": "identify", "userId": "u1", "traits": {"email": "a@b.com", "custom": {"cf_company": "c_9"}}}
{"type": "identify", "userId": "u2", "traits": {"email": "b@b.com", "custom": {"Plan Name": "pro"}}}
{"type": "identify", "userId": "u3", "traits": {"email": "-", "custom": {}}}
"#;
    let out = closeflow_stdin(
        &[
            "dry-run",
            "--format",
            "jsonl",
            "--instance",
            file.to_str().unwrap(),
            "--against",
            "sim:mappings/default.state.json",
            "-",
        ],
        events,
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let err = |i: usize| {
        lines[i]["mappings"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(err(0).contains("may not set cf_company"), "{}", text(&out));
    assert!(err(1).contains("\"Plan Name\""), "{}", text(&out));
    assert!(
        err(2).starts_with("Contact Email must be an email address"),
        "{}",
        text(&out)
    );
    assert_eq!(lines[3]["summary"]["errors"], 3);
    assert!(
        lines[..3]
            .iter()
            .all(|l| l["mappings"][0]["steps"] == serde_json::json!([]))
    );
}

#[test]
fn urls_are_checked_and_an_unreachable_close_stops_the_run_at_once() {
    let out = closeflow(&[
        "send",
        "--instance",
        "mappings/default.yaml",
        "--close-url",
        "127.0.0.1:9/api",
        "mappings/default.events.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a usable URL"), "{}", text(&out));

    let file = scratch("hardening-endpoint").join("endpoint.yaml");
    std::fs::write(
        &file,
        "name: e\nendpoint: ftp://close\nsettings: {api_key: k}\nmappings: []\n",
    )
    .unwrap();
    let out = closeflow(&["validate", file.to_str().unwrap()]);
    assert!(text(&out).contains("bad_url"), "{}", text(&out));

    // Port 9 (discard) has no listener here: one clear error naming the URL, at once.
    for cmd in ["send", "dry-run"] {
        let started = std::time::Instant::now();
        let out = closeflow(&[
            cmd,
            "--instance",
            "mappings/default.yaml",
            "--close-url",
            "http://someone:s3cr3t@127.0.0.1:9/api/v1/",
            "mappings/default.events.jsonl",
        ]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains("cannot connect to Close at http://127.0.0.1:9/api/v1/"),
            "{t}"
        );
        assert_eq!(t.matches("cannot connect").count(), 1, "{t}");
        assert!(!t.contains("s3cr3t") && !t.contains("test_key"), "{t}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{cmd} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_line_with_invalid_utf8_is_reported_and_the_stream_goes_on() {
    let file = scratch("hardening-bad-utf8").join("bad-utf8.jsonl");
    let mut bytes = br#"{"type": "identify", "userId": "u_42", "traits": {"title": "CTO", "company": {"id": "c_acme"}}}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"type\": \"identify\", \"userId\": \"\xff\xfe\"}\n");
    bytes.extend_from_slice(br#"{"type": "track", "event": "x"}"#);
    bytes.push(b'\n');
    std::fs::write(&file, bytes).unwrap();
    let out = closeflow(&[
        "dry-run",
        "--format",
        "jsonl",
        "--instance",
        "mappings/default.yaml",
        "--against",
        "sim:mappings/default.state.json",
        file.to_str().unwrap(),
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{}", text(&out));
    assert_eq!(lines[0]["mappings"][0]["matched"], true);
    assert_eq!(
        lines[1]["error"],
        "line 2: not valid UTF-8 (at byte 33 of the line)"
    );
    assert_eq!(lines[2]["mappings"][0]["matched"], false);
    assert_eq!(lines[3]["summary"]["errors"], 1);
}

#[test]
fn eval_answers_every_line_so_input_and_output_stay_paired() {
    let input = "{\"trigger\": \"type = \\\"identify\\\"\", \"event\": {\"type\": \"identify\"}}\n\n   \n{\"trigger\": \"type = \\\"identify\\\"\"}\n{\"mapping\": {\"a\": \"$.x\"}, \"event\": {\"x\": 1}}\n{\"mapping\": {\"a\": \"$.x\"}}\n";
    let out = closeflow_stdin(&["eval"], input);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{}", text(&out));
    assert_eq!(lines[0], serde_json::json!({"match": true}));
    assert_eq!(lines[1], serde_json::json!({"error": "empty line"}));
    assert_eq!(lines[2], serde_json::json!({"error": "empty line"}));
    assert_eq!(
        lines[3],
        serde_json::json!({"error": "each line needs an `event`"})
    );
    assert_eq!(lines[4], serde_json::json!({"output": {"a": 1}}));
    assert_eq!(
        lines[5],
        serde_json::json!({"error": "each line needs an `event`"})
    );
}
