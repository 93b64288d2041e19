//! `validate --against`: status ids, custom field ids and literal values checked against a
//! snapshot, and against a running Close (here the simulator) read-only.

use closeflow_e2e::{closeflow, text};
use serde_json::Value;

const INSTANCE: &str = "tests/e2e/fixtures/against/org.yaml";
const STATE: &str = "tests/e2e/fixtures/against/org.state.json";

#[test]
fn golden_against_a_snapshot() {
    let out = closeflow(&[
        "validate",
        "--no-color",
        "--against",
        &format!("sim:{STATE}"),
        INSTANCE,
    ]);
    insta::assert_snapshot!("validate_against_sim", text(&out));
}

fn places(out: &std::process::Output) -> Vec<(String, u64, u64)> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(out)));
    v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["span"]["line"].as_u64().unwrap(),
                d["span"]["column"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_close_gives_the_same_findings_and_is_not_written() {
    let snap: Value = serde_json::from_str(
        &std::fs::read_to_string(closeflow_e2e::workspace_root().join(STATE)).unwrap(),
    )
    .unwrap();
    let (sim, url) = closeflow_e2e::procs::sim_in_process(&snap).await;
    let before = sim.snapshot();
    let (live, offline) = tokio::task::spawn_blocking(move || {
        let live = closeflow(&[
            "validate",
            "--format",
            "json",
            "--against",
            "close",
            "--close-url",
            &url,
            INSTANCE,
        ]);
        let offline = closeflow(&[
            "validate",
            "--format",
            "json",
            "--against",
            &format!("sim:{STATE}"),
            INSTANCE,
        ]);
        (live, offline)
    })
    .await
    .unwrap();
    assert_eq!(live.status.code(), Some(1), "{}", text(&live));
    let found = places(&live);
    assert_eq!(found, places(&offline));
    assert_eq!(found.len(), 8, "{found:?}");
    for code in [
        "unknown_status",
        "unknown_custom_field",
        "custom_field_value",
    ] {
        assert!(
            found.iter().any(|(c, ..)| c == code),
            "{code} missing: {found:?}"
        );
    }
    assert_eq!(sim.snapshot(), before, "validation wrote to Close");
}

#[test]
fn without_against_the_file_alone_is_valid() {
    let out = closeflow(&["validate", "--no-color", INSTANCE]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
