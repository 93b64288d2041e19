//! Each cargo-fuzz target's corpus (`fuzz/corpus/TARGET/seed-*`: the tests' fixtures, hand-made
//! edge cases, and every input a fuzz run found crashing) run through the very checks the
//! targets run, on stable, so CI exercises them without nightly.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

fn corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = closeflow_e2e::workspace_root()
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    files.sort();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "{} fails the {target} checks", f.display());
        n += 1;
    }
    n
}

#[test]
fn trigger_corpus_passes_the_checks() {
    assert!(corpus("trigger", checks::trigger) >= 20);
}

#[test]
fn instance_corpus_passes_the_checks() {
    assert!(corpus("instance", checks::instance) >= 15);
}

#[test]
fn events_corpus_passes_the_checks() {
    assert!(corpus("events", checks::events) >= 5);
}

#[test]
fn intake_body_corpus_passes_the_checks() {
    assert!(corpus("intake_body", checks::intake_body) >= 8);
}

/// Two intake bugs the first fuzz runs found stay fixed: a batch's shared context merged into
/// every item before any size check, and a batch `sentAt` copied into the items whatever it
/// held.
#[test]
fn regressions_found_by_fuzzing_stay_fixed() {
    // A batch whose shared context would be copied into each of its items beyond the budget
    // is refused as a whole (before the fix it was merged into every item first).
    let mut body = vec![6u8]; // /v1/batch
    let items = vec![serde_json::json!({"type": "track", "event": "x"}); 2_000];
    body.extend(
        serde_json::to_vec(
            &serde_json::json!({"batch": items, "context": {"pad": "y".repeat(30_000)}}),
        )
        .unwrap(),
    );
    let r = closeflow_server::intake::parse_request(&body[1..], None, None, jiff::Timestamp::now())
        .unwrap()
        .events
        .unwrap_err();
    assert_eq!(r.code, "batch_too_large");
    checks::intake_body(&body);
    // A batch `sentAt` that is not a timestamp is not copied into the items.
    let body = serde_json::to_vec(&serde_json::json!({"batch": [{"type": "track", "event": "x"}], "sentAt": "z".repeat(20_000)})).unwrap();
    let ev = closeflow_server::intake::parse_request(&body, None, None, jiff::Timestamp::now())
        .unwrap()
        .events
        .unwrap();
    assert!(
        ev.accepted[0].body.len() < 1_000,
        "{}",
        ev.accepted[0].body.len()
    );
}
