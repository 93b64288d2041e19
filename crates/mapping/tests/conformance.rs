//! The reference product's own answers (`tests/data/*.jsonl`, recorded with its npm packages)
//! replayed against our engine.

use closeflow_mapping::trigger::Trigger;
use closeflow_mapping::value::Program;
use serde_json::Value;

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Expressions the reference refuses and we accept on purpose (our trigger extensions).
const EXTENSIONS: &[&str] = &[
    "type = \"identify\" and (traits.plan = \"pro\" or (traits.vip = true))",
    "anonymousId = \"a1\"",
];

/// Expressions the reference accepts and we refuse on purpose, because the reference silently
/// does something surprising with them.
const REFUSALS: &[(&str, &str)] = &[
    ("type = ", "trigger_syntax"),
    ("event = 'Order Completed'", "trigger_ambiguous"),
    (
        "type = \"track\" and event = \"A\" or event = \"Order Completed\"",
        "trigger_mixed_and_or",
    ),
];

#[test]
fn fql_vectors() {
    let all = cases("segment-fql.jsonl");
    assert!(
        all.len() > 250,
        "expected the full vector set, got {}",
        all.len()
    );
    let mut compared = 0;
    for c in &all {
        let src = c["fql"].as_str().unwrap();
        let event = &c["event"];
        let ref_parse_error = c["segment_parse_error"].as_bool().unwrap();
        let ref_match = c["segment_match"].as_bool().unwrap();
        match Trigger::parse(src) {
            Ok(t) => {
                if ref_parse_error {
                    assert!(
                        EXTENSIONS.contains(&src),
                        "we accept `{src}`, which the reference refuses"
                    );
                } else {
                    assert_eq!(t.matches(event), ref_match, "`{src}` on {event}");
                    compared += 1;
                }
            }
            Err(e) => {
                assert!(
                    e.start + e.len <= src.len(),
                    "error range inside the trigger: {e:?}"
                );
                assert!(!e.message.is_empty());
                if !ref_parse_error {
                    let expected = REFUSALS.iter().find(|(s, _)| *s == src);
                    let Some((_, code)) = expected else {
                        panic!(
                            "we refuse `{src}` ({}: {}), which the reference accepts",
                            e.code, e.message
                        )
                    };
                    assert_eq!(e.code, *code, "`{src}`");
                }
            }
        }
    }
    assert!(compared > 230, "compared {compared}");
}

#[test]
fn mapping_vectors() {
    let all = cases("segment-mapping.jsonl");
    assert!(all.len() >= 48);
    for c in &all {
        let mapping = &c["mapping"];
        let event = &c["event"];
        let ours = Program::compile_strict(mapping)
            .and_then(|p| p.evaluate(event).map(Value::Object).map_err(|e| e.message));
        if c["segment_ok"].as_bool().unwrap() {
            let out = ours.unwrap_or_else(|e| panic!("{mapping} failed: {e}"));
            assert_eq!(out, c["segment_output"], "{mapping}");
        } else {
            assert!(
                ours.is_err(),
                "{mapping} should fail like the reference ({})",
                c["segment_error"]
            );
        }
    }
}
