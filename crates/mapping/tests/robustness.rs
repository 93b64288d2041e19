//! The trigger parser and the instance loader never panic, whatever they are given, and a
//! printed trigger re-parses to the same tree.

use closeflow_mapping::schema::{
    ActionSchema, DestinationSchema, FieldKind, FieldSpec, SettingSpec,
};
use closeflow_mapping::trigger::Trigger;
use proptest::prelude::*;

fn schema() -> DestinationSchema {
    DestinationSchema {
        name: "test",
        settings: vec![SettingSpec {
            name: "api_key",
            description: "",
            required: true,
            secret: true,
            list: false,
        }],
        actions: vec![ActionSchema {
            name: "act",
            description: "",
            default_trigger: "type = \"identify\"",
            fields: vec![FieldSpec {
                name: "f",
                label: "F",
                description: "",
                kind: FieldKind::String,
                default: None,
                requires_setting: None,
                key_prefixes: &[],
                key_check: None,
                reserved_keys: &[],
            }],
        }],
    }
}

fn trigger_src() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("type".to_string()),
        Just("event".to_string()),
        Just("userId".to_string()),
        "(traits|properties|context)\\.[a-z]{1,5}(\\.[a-z]{1,3})?",
    ];
    let value = prop_oneof![
        "\"[a-zA-Z0-9 ]{0,6}\"",
        "-?[0-9]{1,3}(\\.[0-9]{1,2})?",
        Just("null".to_string()),
        Just("true".to_string()),
    ];
    let cond = (
        field.clone(),
        prop_oneof![Just("="), Just("!="), Just(">"), Just("<=")],
        value,
    )
        .prop_map(|(f, o, v)| format!("{f} {o} {v}"));
    let func = (
        prop_oneof![Just("contains"), Just("!contains"), Just("match")],
        field,
        "[a-z]{1,4}",
        any::<bool>(),
    )
        .prop_map(|(n, f, s, start)| {
            if n == "match" {
                if start {
                    format!("match({f}, \"{s}*\")")
                } else {
                    format!("match({f}, \"*{s}\")")
                }
            } else {
                format!("{n}({f}, \"{s}\")")
            }
        });
    let leaf = prop_oneof![cond, func];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trigger_parser_never_panics(s in "\\PC{0,60}") {
        let _ = Trigger::parse(&s);
    }

    #[test]
    fn trigger_parser_never_panics_on_near_misses(s in "[a-z.()!=<> \"',0-9*\\\\-]{0,40}") {
        if let Err(e) = Trigger::parse(&s) {
            prop_assert!(e.start + e.len <= s.len());
        }
    }

    #[test]
    fn printed_triggers_reparse_to_the_same_tree(src in trigger_src()) {
        if let Ok(t) = Trigger::parse(&src) {
            let printed = t.to_string();
            let again = Trigger::parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
            prop_assert_eq!(again.root, t.root, "{} printed as {}", src, printed);
        }
    }

    #[test]
    fn loader_never_panics(s in "\\PC{0,200}") {
        let env = |_: &str| None;
        let _ = closeflow_mapping::instance::load("x.yaml", &s, &schema(), &env);
    }

    #[test]
    fn loader_never_panics_on_yamlish_input(
        lines in proptest::collection::vec("( {0,4})(name|settings|mappings|- name|trigger|action|fields|api_key|f|\"@path\"|@if)?: ?[a-z$.{}\\[\\]\"@ ]{0,12}", 0..12)
    ) {
        let src = lines.join("\n");
        let env = |_: &str| Some("v".to_string());
        let (inst, diags) = closeflow_mapping::instance::load("x.yaml", &src, &schema(), &env);
        prop_assert!(inst.is_some() || diags.iter().any(|d| d.is_error()));
        for d in diags {
            if let Some(sp) = d.span { prop_assert!(sp.offset + sp.len <= src.len()); }
        }
    }
}
