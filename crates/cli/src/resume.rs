//! `send`'s resume file: the messageIds one instance applied to one Close.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `send` records what it applied, unless `--resume-file` says otherwise: in the current
/// directory, named after the instance **and** the Close it writes to, so that a send to
/// another Close (a fresh simulator, another organisation) never skips anything.
pub fn default_file(instance: &str, endpoint: &str) -> PathBuf {
    let slug = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            };
            if !(c == '_' && out.ends_with('_')) {
                out.push(c);
            }
        }
        out.trim_matches('_').to_string()
    };
    let place = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    PathBuf::from(format!(
        ".closeflow-send-{}-{}.done",
        slug(instance),
        slug(place)
    ))
}

/// Message ids already applied by one instance to one Close: a header line naming both, then
/// one id per line, appended and flushed to disk after each event.
pub struct Done {
    file: std::fs::File,
    pub ids: std::collections::HashSet<String>,
    pub path: PathBuf,
}

impl Done {
    fn header(instance: &str, endpoint: &str) -> String {
        format!("# closeflow send: instance {instance}, endpoint {endpoint}")
    }

    pub fn open(path: &Path, instance: &str, endpoint: &str) -> Result<Done> {
        let header = Done::header(instance, endpoint);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(first) = text.lines().next().filter(|l| l.starts_with('#'))
            && first != header
        {
            bail!(
                "{} records events applied elsewhere ({}), not by instance {instance} to {endpoint}; \
                 give this run its own --resume-file",
                path.display(),
                first.trim_start_matches("# closeflow send: ")
            );
        }
        let ids = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_string)
            .collect();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the resume file {}", path.display()))?;
        if text.is_empty() {
            writeln!(file, "{header}")?;
        }
        Ok(Done {
            file,
            ids,
            path: path.to_path_buf(),
        })
    }
    pub fn record(&mut self, id: &str) -> Result<()> {
        writeln!(self.file, "{id}")?;
        self.file.sync_data()?;
        self.ids.insert(id.to_string());
        Ok(())
    }
}
