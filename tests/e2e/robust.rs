//! Inputs that used to crash the CLI or mislead its user, through the real binary.

use closeflow_e2e::{closeflow, closeflow_stdin, scratch, text};
use serde_json::{Value, json};

fn instance_with_trigger(trigger: &str) -> String {
    format!(
        "name: x\nsettings:\n  api_key: ${{K:-k}}\nmappings:\n  - name: a\n    action: create_or_update_contact_and_lead\n    trigger: {trigger}\n"
    )
}

#[test]
fn deeply_nested_triggers_are_refused_not_a_stack_overflow() {
    let dir = scratch("deep");
    for (name, open) in [("parens", "("), ("negations", "!(")] {
        let trigger = format!("{}type = \"a\"{}", open.repeat(7000), ")".repeat(7000));
        let f = dir.join(format!("{name}.yaml"));
        // Single-quoted: a plain YAML scalar cannot start with `!` (a tag).
        std::fs::write(&f, instance_with_trigger(&format!("'{trigger}'"))).unwrap();
        let out = closeflow(&["validate", "--format", "json", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &v["diagnostics"][0];
        assert_eq!(d["code"], "trigger_too_deep", "{v}");
        assert_eq!(d["span"]["line"], 7);
        assert_eq!(
            d["span"]["column"],
            15 + 64 * open.len(),
            "at the first group too many"
        );
        // The human renderer copes with the 14,000-character line too.
        let out = closeflow(&["validate", "--no-color", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        // And so do commands that load the instance.
        let out = closeflow(&[
            "dry-run",
            "--instance",
            f.to_str().unwrap(),
            "--against",
            "sim:mappings/default.state.json",
            "mappings/default.events.jsonl",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("trigger_too_deep"), "{}", text(&out));
        let line = json!({"trigger": trigger, "event": {"type": "a"}}).to_string();
        let out = closeflow_stdin(&["eval"], &line);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["code"], "trigger_too_deep", "{v}");
    }
}

#[test]
fn a_label_past_column_65535_renders() {
    let dir = scratch("long-line");
    let trigger = format!("type = \"{}\" and tratis.x = 1", "a".repeat(70_000));
    let f = dir.join("long.yaml");
    std::fs::write(&f, instance_with_trigger(&trigger)).unwrap();
    let out = closeflow(&["validate", "--no-color", f.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{}", &t[..t.len().min(3000)]);
    assert!(
        t.contains("line 7, column 70028"),
        "{}",
        &t[..t.len().min(3000)]
    );
    assert!(t.contains("did you mean `traits`?"));
    assert!(t.len() < 5_000, "a window of the line, not all of it");
}

#[test]
fn yaml_limits_are_explained_in_sentences() {
    let dir = scratch("budget");
    let f = dir.join("deep.yaml");
    std::fs::write(
        &f,
        format!("name: {}1{}\n", "[".repeat(100), "]".repeat(100)),
    )
    .unwrap();
    let out = closeflow(&["validate", "--format", "json", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = v["diagnostics"][0]["message"].as_str().unwrap();
    assert!(m.contains("levels deep"), "{m}");
    assert!(!m.contains("budget") && !m.contains('{'), "{m}");
}

#[test]
fn a_directory_without_instances_is_an_error() {
    let dir = scratch("empty");
    std::fs::write(dir.join("notes.txt"), "nothing here").unwrap();
    let out = closeflow(&["validate", "--no-color", dir.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no instance file (*.yaml, *.yml) in this directory"),
        "{t}"
    );
}

#[test]
fn a_jsonpath_query_without_matches_is_missing() {
    let line = json!({"mapping": {"contact_email": "$..email", "contact_name": "$.traits.name"},
                      "event": {"type": "identify", "traits": {"name": "Ada"}}})
    .to_string();
    let out = closeflow_stdin(&["eval"], &line);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({"output": {"contact_name": "Ada"}}),
        "the key is dropped, not []"
    );
    // Through an instance, the event plans instead of failing on `[]`.
    let dir = scratch("jsonpath");
    let f = dir.join("inst.yaml");
    std::fs::write(
        &f,
        "name: q\nsettings:\n  api_key: ${K:-k}\n  contact_custom_field_id_for_user_id: cf_user\nmappings:\n  - name: any email\n    action: create_or_update_contact_and_lead\n    fields:\n      contact_email: $..email\n",
    )
    .unwrap();
    let out = closeflow_stdin(
        &[
            "dry-run",
            "--format",
            "json",
            "--instance",
            f.to_str().unwrap(),
            "--against",
            "sim:mappings/default.state.json",
            "-",
        ],
        r#"{"type": "identify", "userId": "u_9", "traits": {"name": "Nobody"}}"#,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["summary"]["errors"], 0, "{v}");
    assert!(
        v["events"][0]["mappings"][0]["payload"]
            .get("contact_email")
            .is_none()
    );
}

#[test]
fn explain_shows_the_normalised_payload_and_what_changed() {
    let event = r#"{"type": "identify", "userId": "u_1", "traits": {"email": "ada@acme.com", "phone": 5551234, "first_name": "Ada", "last_name": "Lovelace", "company": {"id": "c_1", "name": ""}}}"#;
    let out = closeflow(&["explain", "--instance", "mappings/default.yaml", event]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("payload (normalised, as planned):"), "{t}");
    assert!(t.contains("\"contact_phone\": \"5551234\""), "{t}");
    assert!(t.contains("normalisation changed:"), "{t}");
    assert!(t.contains("contact_phone: 5551234 → \"5551234\""), "{t}");
    assert!(t.contains("lead_name: \"\" → not provided"), "{t}");
    let out = closeflow(&[
        "explain",
        "--format",
        "json",
        "--instance",
        "mappings/default.yaml",
        event,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v[0]["result"];
    assert_eq!(r["payload"]["contact_phone"], "5551234", "{r}");
    assert!(r["payload"].get("lead_name").is_none(), "{r}");
    assert_eq!(r["mapped"]["contact_phone"], 5551234, "{r}");
}

#[test]
fn yaml_1_1_words_reach_close_as_the_text_written() {
    let out = closeflow(&[
        "explain",
        "--format",
        "json",
        "--instance",
        "tests/e2e/fixtures/yaml12.yaml",
        r#"{"type": "identify"}"#,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let p = &v[0]["result"]["payload"];
    assert_eq!(p["lead_name"], "Yes", "{p}");
    assert_eq!(p["contact_title"], "Off", "{p}");
    assert_eq!(p["lead_custom_fields"]["cf_country"], "NO", "{p}");
}

/// The README's list of trigger forms refused on purpose, kept complete: each form here is
/// refused by the parser, and named in the README.
#[test]
fn readme_lists_every_deliberately_refused_trigger_form() {
    let readme =
        std::fs::read_to_string(closeflow_e2e::workspace_root().join("README.md")).unwrap();
    for (trigger, code, readme_says) in [
        (
            "type = \"a\" and event = \"b\" or event = \"c\"",
            "trigger_mixed_and_or",
            "`and`/`or` mixed without parentheses",
        ),
        (
            "event = 'Order Completed'",
            "trigger_ambiguous",
            "single-quoted text",
        ),
        ("traits.vip != true", "trigger_ambiguous", "`!= true`"),
        (
            "userId = 5",
            "trigger_ambiguous",
            "a bare number compared with `type`/`event`/`name`/`userId`",
        ),
        (
            "type = null",
            "trigger_ambiguous",
            "`type`/`event` compared with `null`",
        ),
        (
            "name = true",
            "trigger_ambiguous",
            "`type`/`event`/`name` compared with `true`/`false`",
        ),
        (
            "match(event, \"a*b\")",
            "trigger_ambiguous",
            "`match()` patterns other than `\"x*\"`/`\"*x\"`",
        ),
        (
            "traits.n > \"abc\"",
            "trigger_ambiguous",
            "`<`, `<=`, `>`, `>=` against text that is not a number",
        ),
        (
            "traits.n >= null",
            "trigger_ambiguous",
            "`<`, `<=`, `>`, `>=` against `null`, `true` or `false`",
        ),
        (
            "!traits.n = 1",
            "trigger_ambiguous",
            "`!` before anything but a function or a group",
        ),
        (
            "traits = \"x\"",
            "trigger_unknown_field",
            "`traits`/`properties`/`context` without a path below",
        ),
        (
            "type.x = \"a\"",
            "trigger_unknown_field",
            "a path below `type`/`event`/`name`/`userId`",
        ),
    ] {
        let line = json!({"trigger": trigger, "event": {}}).to_string();
        let out = closeflow_stdin(&["eval"], &line);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["code"], code, "{trigger}: {v}");
        assert!(
            readme.contains(readme_says),
            "README does not list {readme_says}"
        );
    }
}
