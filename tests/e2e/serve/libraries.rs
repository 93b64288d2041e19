//! Delivery from the outside: Segment's own libraries unchanged, `--capture` feeding a diff of a
//! mapping change, and the README's first command against the embedded simulator.

use super::*;

/// Segment's own client libraries, installed by `cargo xtask test` (npm and PyPI): missing
/// ones fail the test with the command that installs them, never a silent pass.
fn segment_client(kind: &str) -> std::path::PathBuf {
    let root = closeflow_e2e::workspace_root().join("tests/clients");
    let (probe, run) = match kind {
        "node" => (
            root.join("node/node_modules/@segment/analytics-node/package.json"),
            std::path::PathBuf::from("node"),
        ),
        _ => (
            root.join("python/.venv/bin/python"),
            root.join("python/.venv/bin/python"),
        ),
    };
    assert!(
        probe.exists(),
        "Segment's {kind} library is not installed ({} is missing): run `cargo xtask test`, which installs it, \
         or by hand `npm ci --prefix tests/clients/node` / `python3 -m venv tests/clients/python/.venv && \
         tests/clients/python/.venv/bin/pip install -r tests/clients/python/requirements.txt`",
        probe.display()
    );
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn segment_libraries_unchanged_deliver_to_close() {
    let node = segment_client("node");
    let python = segment_client("python");
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    acme_with(
        dir.path(),
        &sim.api(),
        &["wk_node", "wk_python"],
        "test_key",
    );
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    let clients = closeflow_e2e::workspace_root().join("tests/clients");
    let runs: [(std::path::PathBuf, Vec<String>); 3] = [
        (
            node,
            vec![
                clients.join("node/send.mjs").display().to_string(),
                s.base(),
                "wk_node".into(),
            ],
        ),
        (
            python.clone(),
            vec![
                clients.join("python/send.py").display().to_string(),
                s.base(),
                "wk_python".into(),
                "plain".into(),
            ],
        ),
        (
            python,
            vec![
                clients.join("python/send.py").display().to_string(),
                s.base(),
                "wk_python".into(),
                "gzip".into(),
            ],
        ),
    ];
    for (bin, args) in runs {
        let o = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .expect("the client runs");
        assert!(
            o.status.success(),
            "{} {:?}:\n{}",
            bin.display(),
            args,
            text(&o)
        );
    }
    wait_for("the libraries' events delivered", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_accepted_total",
            "instance=\"acme\"",
        ) == 9.0
            && queue_drained(&s, "acme").await
    })
    .await;
    let st = sim.state().await;
    for (company, email, plan_lead) in [
        ("c_globex", "grace@globex.com", "Globex"),
        ("c_py", "ada.py@acme.com", "Acme py"),
        ("c_gz", "ada.gz@acme.com", "Acme gz"),
    ] {
        let lead = leads(&st)
            .into_iter()
            .find(|l| l["custom.cf_company"] == company)
            .unwrap_or_else(|| panic!("no lead for {company}: {st}"));
        assert_eq!(lead["name"], plan_lead);
        assert_eq!(
            lead["custom.cf_plan"], "pro",
            "the group call set the plan: {lead}"
        );
        let cs = lead["contacts"].as_array().unwrap();
        assert_eq!(cs.len(), 1, "{lead}");
        assert_eq!(cs[0]["emails"][0]["email"], email);
        assert_eq!(
            cs[0]["title"], "Signed up",
            "identify, then the track call, in order: {lead}"
        );
    }
    assert_eq!(leads(&st).len(), 3);
    assert_balanced(&s.metrics().await, "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_writes_accepted_events_for_a_diff_of_a_mapping_change() {
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let old = instance("acme", &sim.api(), &["wk"], "test_key", "$.traits.title");
    write_config(dir.path(), "acme.yaml", &old);
    let s = ServerProc::start(dir.path(), &[], &[]).await;
    for i in 0..6 {
        post(
            &s.base(),
            "/v1/identify",
            Some("wk"),
            &identify(&format!("u{i}"), &format!("u{i}@x.io"), "c1", "Engineer"),
        )
        .await;
    }
    post(
        &s.base(),
        "/v1/track",
        Some("wk"),
        &json!({"userId": "u0", "event": "Viewed", "messageId": "m-viewed"}),
    )
    .await;
    wait_for("delivered", LONG, || queue_drained(&s, "acme")).await;
    let data = dir.path().join("data");
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
        "--since",
        "1h",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(
        lines[0]["messageId"], "m-u0-Engineer",
        "captured events keep their messageId"
    );
    assert_eq!(lines[6]["messageId"], "m-viewed");
    assert!(lines.iter().all(|l| l["receivedAt"].is_string()));
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
        "--sample",
        "3",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);

    // The captured traffic through a change of the mapping: six payloads change.
    let events = dir.path().join("captured.jsonl");
    let o = closeflow(&[
        "capture",
        "--data-dir",
        data.to_str().unwrap(),
        "--instance",
        "acme",
    ]);
    std::fs::write(&events, &o.stdout).unwrap();
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    std::fs::write(
        new_dir.join("acme.yaml"),
        instance("acme", &sim.api(), &["wk"], "test_key", "Staff"),
    )
    .unwrap();
    let o = closeflow(&[
        "diff",
        "--old",
        dir.path().join("config/acme.yaml").to_str().unwrap(),
        "--new",
        new_dir.join("acme.yaml").to_str().unwrap(),
        "--format",
        "json",
        events.to_str().unwrap(),
    ]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["summary"]["events"], 7, "{v}");
    assert_eq!(v["summary"]["payload_changed"], 6, "{}", v["summary"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_first_command_delivers_to_the_embedded_simulator() {
    let root = closeflow_e2e::workspace_root();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "default.yaml",
        &std::fs::read_to_string(root.join("mappings/default.yaml")).unwrap(),
    );
    let sim_port = closeflow_e2e::procs::free_port();
    let state = root.join("mappings/default.state.json");
    let s = ServerProc::start(
        dir.path(),
        &[
            "--sim",
            state.to_str().unwrap(),
            "--sim-port",
            &sim_port.to_string(),
        ],
        &[("CLOSEFLOW_CLOSE_URL", "http://127.0.0.1:1/unused/")],
    )
    .await;
    // The README's curl body, sent with the example's default write key.
    let ev = json!({"userId": "u_99", "traits": {"first_name": "Margaret", "last_name": "Hamilton",
                    "email": "margaret@initech.com", "company": {"id": "c_initech", "name": "Initech"}}});
    let (st, reply) = post(&s.base(), "/v1/identify", Some("wk_default"), &ev).await;
    assert_eq!(
        (st, reply),
        (
            200,
            json!({"success": true, "accepted": 1, "duplicates": 0})
        )
    );
    let state_url = format!("http://127.0.0.1:{sim_port}/_sim/state");
    wait_for("Initech in the embedded simulator", LONG, || async {
        let st: Value = reqwest::get(&state_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        leads(&st)
            .iter()
            .any(|l| l["name"] == "Initech" && l["contacts"][0]["name"] == "Margaret Hamilton")
    })
    .await;
    wait_for("the event counted as applied", LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_events_applied_total",
            "instance=\"default-close\"",
        ) == 1.0
    })
    .await;
}
