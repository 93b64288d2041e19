//! `cargo xtask shape`: the check that keeps the code base's shape (issue 20). It fails, naming
//! the files, when a `.rs` file under `crates/`, `xtask/` or `tests/` is longer than
//! [`MAX_LINES`], or when files import each other in a circle (a helper living in the wrong
//! file). `cargo xtask test` runs it first, and the workspace test below runs it too.
//!
//! A circle is found on the graph of `crate::…`, `super::…` and `self::…` paths between files
//! (an edge from a file to the file defining the module a path names), leaving out edges between
//! a module and its own ancestor, since a child naturally uses its parent's types.

mod graph;
mod source;

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The longest a source file may be.
pub const MAX_LINES: usize = 700;

/// The trees checked, relative to the workspace root.
const TREES: &[&str] = &["crates", "xtask", "tests"];

/// Directories never read (build output, installed test clients).
const SKIP_DIRS: &[&str] = &["target", "node_modules", ".venv"];

/// Long files that are test data, not code, each with why it is allowed. Only test data belongs
/// here.
const ALLOWED_LONG: &[(&str, &str)] = &[];

/// One thing wrong with the tree.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    TooLong {
        file: PathBuf,
        lines: usize,
    },
    Circle {
        files: Vec<PathBuf>,
        edges: Vec<String>,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::TooLong { file, lines } => write!(
                f,
                "{} has {lines} lines (at most {MAX_LINES}): split it along its seams",
                file.display()
            ),
            Finding::Circle { files, edges } => {
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                writeln!(f, "import circle among {}:", names.join(", "))?;
                for e in edges {
                    writeln!(f, "    {e}")?;
                }
                write!(
                    f,
                    "    (move the shared helper to the file it belongs in, or to a module of its own)"
                )
            }
        }
    }
}

/// Every finding in the trees under `root`.
pub fn check(root: &Path, trees: &[&str], allowed_long: &[(&str, &str)]) -> Vec<Finding> {
    let mut files = Vec::new();
    for t in trees {
        collect(root, Path::new(t), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in &files {
        let lines = std::fs::read_to_string(root.join(f))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let allowed = allowed_long.iter().any(|(p, _)| Path::new(p) == f);
        if lines > MAX_LINES && !allowed {
            out.push(Finding::TooLong {
                file: f.clone(),
                lines,
            });
        }
    }
    let edges = graph::edges(root, &files);
    for files in graph::circles(&edges) {
        let mut lines = Vec::new();
        for from in &files {
            for (to, e) in edges.get(from).into_iter().flatten() {
                if files.contains(to) {
                    lines.push(format!(
                        "{}:{} names {} (in {})",
                        from.display(),
                        e.line,
                        e.path,
                        to.display()
                    ));
                }
            }
        }
        out.push(Finding::Circle {
            files,
            edges: lines,
        });
    }
    out
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let path = rel.join(&name);
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if !SKIP_DIRS.iter().any(|s| name == *s) {
                collect(root, &path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `cargo xtask shape`.
pub fn run(root: &Path) -> Result<()> {
    let fail = check(root, TREES, ALLOWED_LONG);
    for f in &fail {
        println!("error: {f}");
    }
    if !fail.is_empty() {
        bail!("the shape check found {} problem(s)", fail.len());
    }
    println!("shape: no file over {MAX_LINES} lines, no import circle between files");
    Ok(())
}

#[cfg(test)]
mod tests;
