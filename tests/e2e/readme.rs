//! The README's examples run from a clean checkout and print what the README shows: every
//! ```sh block holding one `cargo run -q --bin closeflow -- …` command is run through the real
//! binary, and its standard output compared with the next untagged fenced block.

use closeflow_e2e::{closeflow, text, workspace_root};

const COMMAND: &str = "cargo run -q --bin closeflow -- ";

/// (language, body) of each fenced block, in order.
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// Each example command's arguments with the output the README shows for it.
fn examples(md: &str) -> Vec<(Vec<String>, String)> {
    let blocks = blocks(md);
    let mut out = Vec::new();
    for (i, (lang, body)) in blocks.iter().enumerate() {
        let commands: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix(COMMAND))
            .collect();
        // Servers (`serve`, `sim`) run until stopped: the serve tests cover them.
        let long_running = commands
            .first()
            .is_some_and(|c| c.starts_with("serve ") || c.starts_with("sim "));
        if lang != "sh" || commands.len() != 1 || long_running {
            continue;
        }
        let shown = blocks
            .get(i + 1)
            .filter(|(lang, _)| lang.is_empty() || lang == "text")
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("README: no output block after `{}`", commands[0]));
        let args = commands[0].split_whitespace().map(str::to_string).collect();
        out.push((args, shown));
    }
    out
}

#[test]
fn the_readme_examples_print_what_the_readme_shows() {
    let md = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let examples = examples(&md);
    let names: Vec<&str> = examples.iter().map(|(a, _)| a[0].as_str()).collect();
    assert!(
        names.contains(&"dry-run") && names.contains(&"diff"),
        "the README's dry-run and diff examples are found: {names:?}"
    );
    for (args, shown) in &examples {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = closeflow(&args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            *shown,
            "`closeflow {}` no longer prints what the README shows:\n{}",
            args.join(" "),
            text(&out)
        );
    }
}

#[test]
fn fenced_blocks_are_read_in_order() {
    let md = "x\n```sh\n# a comment\ncargo run -q --bin closeflow -- diff --old a\n```\nprints\n```\nout 1\nout 2\n```\n```yaml\nk: v\n```\n";
    let ex = examples(md);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].0, ["diff", "--old", "a"]);
    assert_eq!(ex[0].1, "out 1\nout 2\n");
}
