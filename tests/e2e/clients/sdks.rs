//! RudderStack's node and python SDKs beside Segment's, with the default mappings: the same
//! Close records from each.

use super::*;

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
