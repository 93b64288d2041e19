//! The file graph of a source tree: which file defines which module (found by following `mod`
//! declarations from every file no other file declares, i.e. the crate roots), which file each
//! `crate::`/`super::`/`self::` path lands in, and the circles among those edges.

use super::source::{Scan, scan};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// One use of another file: where it is written and what it names.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub line: usize,
    pub path: String,
}

/// Edges between files (paths relative to the tree's root), each with its first evidence.
pub type Edges = BTreeMap<PathBuf, BTreeMap<PathBuf, Evidence>>;

/// Builds the edges among `files` (all relative to `root`). An edge between a module and one of
/// its ancestors is left out: a child naturally uses its parent's types, and a parent declares
/// and re-exports its children.
pub fn edges(root: &Path, files: &[PathBuf]) -> Edges {
    let scans: HashMap<&PathBuf, Scan> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
            (f, scan(&text))
        })
        .collect();
    let known: BTreeSet<&PathBuf> = files.iter().collect();
    // Which file each `mod x;` of a file names.
    let child_file = |file: &PathBuf, decl: &super::source::ModDecl| -> Option<PathBuf> {
        let dir = file.parent().unwrap_or(Path::new(""));
        if let Some(p) = &decl.path_attr {
            let p = normalise(&dir.join(p));
            return known.contains(&p).then_some(p);
        }
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut bases = Vec::new();
        if !matches!(stem, "mod" | "lib" | "main") {
            bases.push(dir.join(stem));
        }
        // Crate roots with other names (integration tests, build scripts) own their directory.
        bases.push(dir.to_path_buf());
        bases.into_iter().find_map(|mut base| {
            for s in &decl.scope {
                base.push(s);
            }
            [
                base.join(format!("{}.rs", decl.name)),
                base.join(&decl.name).join("mod.rs"),
            ]
            .into_iter()
            .find(|p| known.contains(p))
        })
    };
    let mut children: HashMap<&PathBuf, Vec<(Vec<String>, PathBuf)>> = HashMap::new();
    let mut declared = BTreeSet::new();
    for f in files {
        for d in &scans[f].mods {
            if let Some(c) = child_file(f, d) {
                let mut at = d.scope.clone();
                at.push(d.name.clone());
                declared.insert(c.clone());
                children.entry(f).or_default().push((at, c));
            }
        }
    }
    let mut out = Edges::new();
    for crate_root in files.iter().filter(|f| !declared.contains(*f)) {
        // Module path → the file it is written in (inline modules: the file holding them), and
        // each file's own module path.
        let mut module_file: HashMap<Vec<String>, PathBuf> = HashMap::new();
        let mut file_module: HashMap<PathBuf, Vec<String>> = HashMap::new();
        let mut queue = VecDeque::from([(Vec::new(), crate_root.clone())]);
        while let Some((module, file)) = queue.pop_front() {
            if file_module.contains_key(&file) {
                continue;
            }
            module_file.insert(module.clone(), file.clone());
            for inline in &scans[&file].inline {
                module_file.insert([module.clone(), inline.clone()].concat(), file.clone());
            }
            for (at, child) in children.get(&file).into_iter().flatten() {
                queue.push_back(([module.clone(), at.clone()].concat(), child.clone()));
            }
            file_module.insert(file, module);
        }
        for (file, module) in &file_module {
            for r in &scans[file].refs {
                let mut at = [module.clone(), r.scope.clone()].concat();
                let mut rest = r.segments.iter().peekable();
                match rest.next().map(String::as_str) {
                    Some("crate") => at.clear(),
                    Some("super") => {
                        at.pop();
                        while rest.next_if(|s| *s == "super").is_some() {
                            at.pop();
                        }
                    }
                    _ => {}
                }
                at.extend(rest.cloned());
                let Some(target) = (0..=at.len()).rev().find_map(|n| module_file.get(&at[..n]))
                else {
                    continue;
                };
                let theirs = &file_module[target];
                if target == file || module.starts_with(theirs) || theirs.starts_with(module) {
                    continue;
                }
                out.entry(file.clone())
                    .or_default()
                    .entry(target.clone())
                    .or_insert_with(|| Evidence {
                        line: r.line,
                        path: r.segments.join("::"),
                    });
            }
        }
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The circles: sets of two or more files each reachable from every other (strongly connected
/// components), each sorted, in a stable order.
pub fn circles(edges: &Edges) -> Vec<Vec<PathBuf>> {
    let reach = |from: &PathBuf| -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(f) = stack.pop() {
            for next in edges.get(&f).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&PathBuf, BTreeSet<PathBuf>> =
        edges.keys().map(|f| (f, reach(f))).collect();
    let mut out: Vec<Vec<PathBuf>> = Vec::new();
    for (f, from_f) in &reached {
        if out.iter().any(|c| c.contains(f)) || !from_f.contains(*f) {
            continue;
        }
        let circle: Vec<PathBuf> = from_f
            .iter()
            .filter(|g| reached.get(g).is_some_and(|r| r.contains(*f)))
            .cloned()
            .collect();
        out.push(circle);
    }
    out
}
