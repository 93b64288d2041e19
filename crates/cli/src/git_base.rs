//! Instance files as they were at a git revision (`closeflow diff --base REV`), read with the
//! `git` command-line tool: the same paths the user named for the new version, so a pull
//! request's CI compares `mappings/` with `mappings/` on its base branch.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("cannot run `git` (is it installed and on the PATH?)")
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// `REV:./name` names `name` relative to the directory git runs in (`-C`).
fn object(rev: &str, name: &str) -> String {
    format!("{rev}:./{name}")
}

fn check_revision(dir: &Path, rev: &str) -> Result<()> {
    let o = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )?;
    if !o.status.success() {
        let repo = git(dir, &["rev-parse", "--git-dir"])?;
        if !repo.status.success() {
            bail!(
                "--base: {} is not in a git repository ({})",
                dir.display(),
                text(&repo)
            );
        }
        bail!(
            "--base: `{rev}` is not a commit of the git repository at {} (in CI, fetch it first, e.g. `git fetch origin main`)",
            dir.display()
        );
    }
    Ok(())
}

/// The object's type at `rev`, or `None` when the path did not exist then.
fn kind(dir: &Path, rev: &str, name: &str) -> Result<Option<String>> {
    let o = git(dir, &["cat-file", "-t", &object(rev, name)])?;
    Ok(o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string()))
}

fn blob(dir: &Path, spec: &str, shown: &str) -> Result<String> {
    let o = git(dir, &["cat-file", "blob", spec])?;
    if !o.status.success() {
        bail!("cannot read {shown} from git: {}", text(&o));
    }
    String::from_utf8(o.stdout).with_context(|| format!("{shown} is not UTF-8 text"))
}

/// One instance file's text at `rev`, named for diagnostics as `REV:path`.
pub struct Old {
    pub file: String,
    pub source: String,
}

/// The instance files among `paths` (files, or directories one level deep, as on disk) as they
/// were at `rev`. A path that did not exist at `rev` contributes nothing: its instances are new.
pub fn instances_at(rev: &str, paths: &[PathBuf]) -> Result<Vec<Old>> {
    let mut out = Vec::new();
    for p in paths {
        let (dir, name) = if p.is_dir() {
            (p.clone(), String::new())
        } else {
            let parent = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let name = p
                .file_name()
                .with_context(|| format!("{} is not a file name", p.display()))?
                .to_string_lossy()
                .to_string();
            (parent, name)
        };
        if !dir.is_dir() {
            bail!("{}: no such directory", dir.display());
        }
        check_revision(&dir, rev)?;
        let shown = |n: &str| format!("{rev}:{}", dir.join(n).display());
        match kind(&dir, rev, &name)?.as_deref() {
            None => {}
            Some("blob") => out.push(Old {
                source: blob(&dir, &object(rev, &name), &shown(&name))?,
                file: shown(&name),
            }),
            Some("tree") => {
                let o = git(&dir, &["ls-tree", "-z", "--full-tree", &object(rev, &name)])?;
                if !o.status.success() {
                    bail!("cannot list {} in git: {}", shown(&name), text(&o));
                }
                let listing = String::from_utf8_lossy(&o.stdout).to_string();
                let mut files: Vec<(String, String)> = listing
                    .split('\0')
                    .filter_map(|entry| {
                        // `<mode> <type> <object>\t<name>`
                        let (meta, file) = entry.split_once('\t')?;
                        let mut m = meta.split(' ');
                        let (_, kind, id) = (m.next()?, m.next()?, m.next()?);
                        let is_instance =
                            kind == "blob" && crate::input::is_instance_file(Path::new(file));
                        is_instance.then(|| (file.to_string(), id.to_string()))
                    })
                    .collect();
                files.sort();
                for (file, id) in files {
                    let shown = shown(&file);
                    out.push(Old {
                        source: blob(&dir, &id, &shown)?,
                        file: shown,
                    });
                }
            }
            Some(other) => bail!("{} is a git {other}, not a file or directory", shown(&name)),
        }
    }
    Ok(out)
}
