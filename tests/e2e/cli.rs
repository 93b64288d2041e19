//! Golden tests of the CLI: one per diagnostic code at least, run through the real binary.

use closeflow_e2e::{closeflow, text};

macro_rules! golden {
    ($name:ident, $args:expr) => {
        #[test]
        fn $name() {
            let out = closeflow(&$args);
            insta::assert_snapshot!(stringify!($name), text(&out));
        }
    };
}

golden!(validate_examples_ok, ["validate", "mappings/"]);
golden!(
    yaml_syntax,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/yaml_syntax.yaml"
    ]
);
golden!(
    unknown_key,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/unknown_key.yaml"
    ]
);
golden!(
    too_many_mappings,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/too_many_mappings.yaml"
    ]
);
golden!(
    bad_triggers,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/bad_triggers.yaml"
    ]
);
golden!(
    bad_fields,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/bad_fields.yaml"
    ]
);
golden!(
    unset_env,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/unset_env.yaml"
    ]
);
golden!(
    warnings,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/warnings.yaml"
    ]
);
golden!(
    warnings_denied,
    [
        "validate",
        "--no-color",
        "--deny-warnings",
        "tests/e2e/fixtures/invalid/warnings.yaml"
    ]
);
golden!(
    hints,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/hints.yaml"
    ]
);
golden!(
    secrets,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/invalid/secrets.yaml",
        "tests/e2e/fixtures/invalid/secrets_broken.yaml"
    ]
);
golden!(
    test_file_checked_with_its_instance,
    [
        "validate",
        "--no-color",
        "tests/e2e/fixtures/tests/inst.yml"
    ]
);
golden!(
    test_file_diagnostics_and_diff,
    ["test", "--no-color", "tests/e2e/fixtures/tests/"]
);
golden!(
    json_format,
    [
        "validate",
        "--format",
        "json",
        "tests/e2e/fixtures/invalid/bad_triggers.yaml"
    ]
);

#[test]
fn all_files_reported_at_once() {
    let out = closeflow(&[
        "validate",
        "--format",
        "json",
        "tests/e2e/fixtures/invalid/",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: std::collections::BTreeSet<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    for c in [
        "literal_secret",
        "bad_template",
        "wrong_type",
        "yaml_syntax",
        "unknown_key",
        "too_many_mappings",
        "trigger_mixed_and_or",
        "trigger_unknown_field",
        "trigger_syntax",
        "trigger_ambiguous",
        "unknown_directive",
        "directive_keys",
        "bad_path",
        "unset_env_var",
        "duplicate_name",
        "unknown_action",
        "unknown_field",
    ] {
        assert!(codes.contains(c), "{c} missing from {codes:?}");
    }
    assert_eq!(v["files"], 10);
    for d in v["diagnostics"].as_array().unwrap() {
        assert!(
            d["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "every diagnostic comes with a hint: {d}"
        );
    }
}

#[test]
fn denied_warnings_are_counted_as_errors() {
    let out = closeflow(&[
        "validate",
        "--format",
        "json",
        "--deny-warnings",
        "tests/e2e/fixtures/invalid/warnings.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    assert!(
        v["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["severity"] == "error")
    );
}

#[test]
fn secrets_never_echoed() {
    for format in ["json", "human"] {
        let out = closeflow(&[
            "validate",
            "--no-color",
            "--format",
            format,
            "tests/e2e/fixtures/invalid/",
        ]);
        let all = text(&out);
        // Source excerpts show the lines around a problem: a literal key must not be among them.
        for secret in ["literal-key-in-file", "S3CRET", "api_live_fallback_key"] {
            assert!(!all.contains(secret), "{secret} shown ({format}):\n{all}");
        }
        assert!(all.contains("literal_secret"), "{all}");
    }
    // Commands that need a valid instance print its diagnostics too.
    let out = closeflow(&[
        "explain",
        "--instance",
        "tests/e2e/fixtures/invalid/secrets.yaml",
        r#"{"type": "identify"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out).contains("S3CRET"), "{}", text(&out));
}

#[test]
fn eval_json_lines() {
    use std::io::Write;
    let mut child = std::process::Command::new(closeflow_e2e::closeflow_bin())
        .arg("eval")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = concat!(
        r#"{"trigger": "type = \"identify\"", "event": {"type": "identify"}}"#,
        "\n",
        "not json\n",
        r#"{"trigger": "type = \"a\" and event = \"b\" or event = \"c\"", "event": {}}"#,
        "\n",
        r#"{"mapping": {"e": {"@path": "$.traits.email"}, "n": "{{traits.name}}!"}, "event": {"traits": {"email": "a@b", "name": "Ada"}}}"#,
        "\n",
        r#"{"mapping": {"bad": {"@nope": 1}}, "event": {}}"#,
        "\n",
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], serde_json::json!({"match": true}));
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
    assert_eq!(lines[2]["error"]["code"], "trigger_mixed_and_or");
    assert_eq!(
        lines[3],
        serde_json::json!({"output": {"e": "a@b", "n": "Ada!"}})
    );
    assert!(lines[4]["error"].as_str().unwrap().contains("@nope"));
}

#[test]
fn explain_shows_each_condition() {
    let out = closeflow(&[
        "explain",
        "--instance",
        "mappings/default.yaml",
        r#"{"type": "identify", "userId": "u_1", "traits": {"email": "ada@acme.com", "first_name": "Ada", "last_name": "Lovelace", "company": {"id": "c_1", "name": "Acme"}}}"#,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("mapping \"Identify → contact and lead\": fires"),
        "{t}"
    );
    assert!(
        t.contains("✓ type = \"identify\"   (value: \"identify\")"),
        "{t}"
    );
    assert!(t.contains("\"contact_name\": \"Ada Lovelace\""), "{t}");
    assert!(t.contains("mapping \"Signed-up users\": disabled"), "{t}");
}

#[test]
fn committed_schema_is_fresh() {
    let generated = serde_json::to_string_pretty(&closeflow_mapping::jsonschema::instance_schema(
        &closeflow_close::schema::destination(),
    ))
    .unwrap()
        + "\n";
    let committed = std::fs::read_to_string(
        closeflow_e2e::workspace_root().join("schema/instance.schema.json"),
    )
    .unwrap();
    assert!(
        committed == generated,
        "schema/instance.schema.json is stale: run `cargo xtask schema`"
    );
}
