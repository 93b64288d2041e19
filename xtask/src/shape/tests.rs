//! The shape check on tiny fixture trees, and on this workspace.

use super::*;

/// A tree of files under a temporary directory.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

fn circles(dir: &tempfile::TempDir) -> Vec<Vec<String>> {
    check(dir.path(), &["c"], &[])
        .into_iter()
        .filter_map(|f| match f {
            Finding::Circle { files, .. } => Some(
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>(),
            ),
            Finding::TooLong { .. } => None,
        })
        .collect()
}

#[test]
fn a_circle_between_sibling_files_is_found_with_its_files() {
    let dir = tree(&[
        ("c/src/lib.rs", "mod a;\nmod b;\n"),
        ("c/src/a.rs", "use crate::b::helper;\npub struct Thing;\n"),
        ("c/src/b.rs", "use super::a::Thing;\npub fn helper() {}\n"),
    ]);
    assert_eq!(circles(&dir), vec![vec!["c/src/a.rs", "c/src/b.rs"]]);
    let text = check(dir.path(), &["c"], &[])[0].to_string();
    assert!(text.contains("c/src/a.rs:1 names crate::b::helper (in c/src/b.rs)"));
    assert!(text.contains("c/src/b.rs:1 names super::a::Thing (in c/src/a.rs)"));
}

#[test]
fn a_longer_circle_through_nested_modules_and_use_trees_is_found() {
    let dir = tree(&[
        ("c/src/main.rs", "mod x;\nmod y;\n"),
        ("c/src/x/mod.rs", "mod inner;\n"),
        ("c/src/x/inner.rs", "use crate::{y::{self, f}, Other};\n"),
        ("c/src/y.rs", "fn g() { crate::x::inner::h(); }\n"),
    ]);
    assert_eq!(circles(&dir), vec![vec!["c/src/x/inner.rs", "c/src/y.rs"]]);
}

#[test]
fn a_parent_and_its_child_are_no_circle() {
    let dir = tree(&[
        ("c/src/lib.rs", "mod p;\npub use p::q::Q;\n"),
        ("c/src/p/mod.rs", "mod q;\nuse self::q::Q;\npub struct P;\n"),
        (
            "c/src/p/q.rs",
            "use super::P;\nuse crate::p::P as Again;\npub struct Q;\n",
        ),
    ]);
    assert!(circles(&dir).is_empty());
}

#[test]
fn inline_modules_comments_and_strings_make_no_edges() {
    let dir = tree(&[
        ("c/src/lib.rs", "mod a;\nmod b;\n"),
        (
            "c/src/a.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::b::g;\n}\n",
        ),
        (
            "c/src/b.rs",
            "// crate::a::f\n/* crate::a::f */\nconst S: &str = \"crate::a::f\";\nconst R: &str = r#\"crate::a::f\"#;\nconst C: char = '\"';\npub fn g<'a>(x: &'a str) -> &'a str { x }\n",
        ),
    ]);
    // `super::super::b` in a's tests module is b, one way: no circle.
    assert!(circles(&dir).is_empty());
}

#[test]
fn long_files_fail_unless_allowed_as_test_data() {
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let dir = tree(&[
        ("c/src/lib.rs", "mod data;\nmod big;\n"),
        ("c/src/data.rs", &long),
        ("c/src/big.rs", &long),
    ]);
    let found = check(dir.path(), &["c"], &[("c/src/data.rs", "test data")]);
    assert_eq!(
        found,
        vec![Finding::TooLong {
            file: "c/src/big.rs".into(),
            lines: MAX_LINES + 1
        }]
    );
}

/// This workspace keeps its shape (what `cargo xtask shape` checks), so that `cargo test
/// --workspace` fails as soon as it does not.
#[test]
fn this_workspace_keeps_its_shape() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fail = check(&root, TREES, ALLOWED_LONG);
    let text: Vec<String> = fail.iter().map(ToString::to_string).collect();
    assert!(fail.is_empty(), "{}", text.join("\n"));
}
