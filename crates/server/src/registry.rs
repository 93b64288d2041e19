//! The instances the server runs, loaded from the config directory and reloaded when their
//! files change: a changed file is validated first and replaces the running version only when
//! valid (atomically, by swapping an `Arc`); an invalid edit leaves the old version running.

use closeflow_close::schema;
use closeflow_close_api::client::Writer;
use closeflow_close_api::connect::{client_config, same_connection};
use closeflow_close_api::live::{LiveOptions, LiveSource};
use closeflow_close_api::search::{SearchOptions, Searcher};
use closeflow_mapping::instance;
use closeflow_mapping::{Diagnostic, Instance};
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One running version of an instance, with its Close client.
pub struct Active {
    pub instance: Instance,
    pub writer: Writer,
    /// Lookups coalesced across this instance's concurrent deliveries, and cached.
    pub lookups: LiveSource,
    /// Increases with every reload of any instance (cached lookup keys are per version).
    pub version: u64,
    pub file: PathBuf,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Active({} v{})", self.instance.name, self.version)
    }
}

/// How the server's Close clients retry a single call. Event-level retries (hours, with
/// backoff, then the dead-letter store) are the delivery's business; a call gives up sooner
/// so that a failing key releases its worker and only holds back its own events.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub close_url: Option<String>,
    pub timeout: Duration,
    pub attempts: u32,
    pub max_age: Duration,
    pub backoff_base: Duration,
    /// How lookups are sent (combined or one per key, keys per search).
    pub search: SearchOptions,
    pub live: LiveOptions,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            close_url: None,
            timeout: Duration::from_secs(30),
            attempts: 3,
            max_age: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            search: SearchOptions::default(),
            live: LiveOptions::default(),
        }
    }
}

/// What a (re)load found in one file.
#[derive(Debug)]
pub enum FileReport {
    Loaded {
        file: PathBuf,
        instance: String,
        warnings: Vec<Diagnostic>,
    },
    /// Invalid: the previous version (if any) keeps running.
    Invalid {
        file: PathBuf,
        kept: Option<String>,
        diagnostics: Vec<Diagnostic>,
    },
    Removed {
        file: PathBuf,
        instance: String,
    },
    Unreadable {
        file: PathBuf,
        error: String,
    },
    /// Named like an instance file but not a file (a directory `x.yaml`): reported once.
    NotAFile {
        file: PathBuf,
    },
}

#[derive(Default)]
struct Registered {
    /// By instance name: what intake and delivery use now.
    active: BTreeMap<String, Arc<Active>>,
    /// Instances whose file was removed: still delivered (their events stay queued), no intake.
    retired: BTreeMap<String, Arc<Active>>,
    /// By file: what the last pass saw in it.
    files: HashMap<PathBuf, Seen>,
    /// Entries named like instance files that are not files (a directory `x.yaml`): warned
    /// about once, not at every pass.
    not_files: std::collections::HashSet<PathBuf>,
    version: u64,
}

/// One instance file as the last pass left it.
struct Seen {
    text: String,
    /// The instance it runs (for an invalid file: the one it ran before, still running).
    name: Option<String>,
    /// Whether the text as it is now is running.
    valid: bool,
    /// Refused only because another file had its instance name: looked at again whenever the
    /// running instances change, so renaming a file (copy, then delete) settles by itself.
    clashed: bool,
}

pub struct Registry {
    dir: PathBuf,
    policy: ClientPolicy,
    inner: RwLock<Registered>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.dir.display())
    }
}

/// Entries of `dir` named like instance files: `*.yaml`/`*.yml`, not mapping tests
/// (`*.test.yaml`). Some may not be files: [`Registry::scan`] warns about those once.
fn instance_names(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.contains(".test.")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Do two versions of an instance talk to the same Close with the same key and lookup fields?
fn writer_for(inst: &Instance, policy: &ClientPolicy) -> Result<Writer, String> {
    let mut cfg = client_config(inst, policy.close_url.as_deref()).map_err(|e| e.to_string())?;
    cfg.timeout = policy.timeout;
    cfg.max_attempts = policy.attempts;
    cfg.max_age = policy.max_age;
    cfg.backoff.base = policy.backoff_base;
    Writer::new(cfg)
        .map(|w| w.with_observer(crate::telemetry::close_observer(&inst.name)))
        .map_err(|e| e.to_string())
}

impl Registry {
    pub fn new(dir: &Path, policy: ClientPolicy) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            policy,
            inner: RwLock::new(Registered::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registered> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The running version of an instance (a removed instance's last version, for delivery).
    pub fn get(&self, name: &str) -> Option<Arc<Active>> {
        let g = self.read();
        g.active.get(name).or_else(|| g.retired.get(name)).cloned()
    }

    /// Every instance delivery must serve: running and retired.
    pub fn all_names(&self) -> Vec<String> {
        let g = self.read();
        g.active.keys().chain(g.retired.keys()).cloned().collect()
    }

    /// The instances a write key opens. Compared in constant time, against every key of every
    /// instance (no early exit), so timing says nothing about which keys exist.
    pub fn instances_for_key(&self, key: &str) -> Vec<String> {
        let g = self.read();
        let mut out = Vec::new();
        for (name, a) in &g.active {
            let mut hit = false;
            for k in &a.instance.write_keys {
                hit |= constant_time_eq::constant_time_eq(
                    k.expose_secret().as_bytes(),
                    key.as_bytes(),
                );
            }
            if hit {
                out.push(name.clone());
            }
        }
        out
    }

    /// Which of an instance's write keys `key` is (1-based, in the order `write_key:` lists
    /// them): how journeys name it.
    pub fn key_place(&self, instance: &str, key: &str) -> Option<usize> {
        let g = self.read();
        let a = g.active.get(instance)?;
        a.instance
            .write_keys
            .iter()
            .position(|k| {
                constant_time_eq::constant_time_eq(k.expose_secret().as_bytes(), key.as_bytes())
            })
            .map(|i| i + 1)
    }

    /// How many running instances take events at intake: what the queue is shared by.
    pub fn intake_count(&self) -> usize {
        self.read()
            .active
            .values()
            .filter(|a| !a.instance.write_keys.is_empty())
            .count()
    }

    /// Does any instance take events at intake?
    pub fn has_intake(&self) -> bool {
        self.intake_count() > 0
    }

    /// Each file's validity as the last pass left it (what `/metrics` reports): only files
    /// that are there now.
    pub fn file_validity(&self) -> Vec<(PathBuf, bool)> {
        let g = self.read();
        let mut out: Vec<_> = g.files.iter().map(|(f, s)| (f.clone(), s.valid)).collect();
        out.sort();
        out
    }

    /// Reads the directory and applies what changed since the last scan, so that the running
    /// instances are what the directory holds now.
    pub fn scan(&self) -> Result<Vec<FileReport>, std::io::Error> {
        let names = instance_names(&self.dir)?;
        let mut reports = Vec::new();
        let mut texts = Vec::new();
        let mut files = Vec::new();
        {
            let g = self.read();
            for f in names {
                if f.is_dir() {
                    if !g.not_files.contains(&f) {
                        reports.push(FileReport::NotAFile { file: f.clone() });
                    }
                    continue;
                }
                match std::fs::read_to_string(&f) {
                    Ok(t) if g.files.get(&f).is_some_and(|s| s.text == t && !s.clashed) => {}
                    Ok(t) => texts.push((f.clone(), t)),
                    Err(e) => {
                        // Seen before and now unreadable (mid-write, permissions): keep it.
                        if !g.files.contains_key(&f) {
                            reports.push(FileReport::Unreadable {
                                file: f.clone(),
                                error: e.to_string(),
                            });
                        }
                    }
                }
                files.push(f);
            }
        }
        let mut g = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only what is a directory now: one that goes and comes back is warned about again.
        g.not_files.retain(|f| f.is_dir());
        for r in &reports {
            if let FileReport::NotAFile { file } = r {
                g.not_files.insert(file.clone());
            }
        }
        let gone: Vec<PathBuf> = g
            .files
            .keys()
            .filter(|f| !files.contains(f))
            .cloned()
            .collect();
        let mut changed = false;
        for f in gone {
            if let Some(Seen {
                name: Some(name), ..
            }) = g.files.remove(&f)
                && let Some(a) = g.active.remove(&name)
            {
                changed = true;
                g.retired.insert(name.clone(), a);
                reports.push(FileReport::Removed {
                    file: f,
                    instance: name,
                });
            }
        }
        // Files refused for a name clash are looked at again after the others: a removal or a
        // rename above may have freed their name.
        texts.sort_by_key(|(f, _)| g.files.get(f).is_some_and(|s| s.clashed));
        let clashed_from = texts
            .iter()
            .position(|(f, _)| g.files.get(f).is_some_and(|s| s.clashed))
            .unwrap_or(texts.len());
        let env = |k: &str| std::env::var(k).ok();
        for (i, (f, text)) in texts.into_iter().enumerate() {
            if i >= clashed_from && !changed && g.files.get(&f).is_some_and(|s| s.text == text) {
                // Nothing that could free its name happened this pass.
                continue;
            }
            let file = f.display().to_string();
            let (loaded, diagnostics) = instance::load(&file, &text, &schema::destination(), &env);
            let previous = g.files.get(&f).and_then(|s| s.name.clone());
            let invalid = |diagnostics: Vec<Diagnostic>| FileReport::Invalid {
                file: f.clone(),
                kept: previous.clone(),
                diagnostics,
            };
            let Some(inst) = loaded else {
                reports.push(invalid(diagnostics));
                // Remember the text so an unchanged invalid file is not reported every scan.
                g.files.insert(
                    f.clone(),
                    Seen {
                        text,
                        name: previous.clone(),
                        valid: false,
                        clashed: false,
                    },
                );
                continue;
            };
            // Names are unique across instances (another file already running this name).
            let clash = g
                .active
                .iter()
                .find(|(n, a)| **n == inst.name && a.file != f)
                .map(|(_, a)| a.file.display().to_string());
            if let Some(other) = clash {
                let mut d = diagnostics;
                d.push(
                    Diagnostic::error(
                        closeflow_mapping::diag::code::DUPLICATE_NAME,
                        format!("instance name \"{}\" is already used by {other}", inst.name),
                    )
                    .hint("instance names are unique across files; rename one of them"),
                );
                for x in &mut d {
                    x.file.clone_from(&file);
                }
                reports.push(invalid(d));
                g.files.insert(
                    f.clone(),
                    Seen {
                        text,
                        name: previous.clone(),
                        valid: false,
                        clashed: true,
                    },
                );
                continue;
            }
            let name = inst.name.clone();
            // The same Close, key and lookup fields as the running version: keep its client
            // (rate-limit pacing), lookup cache and record holds, so events of the old and the
            // new version in flight together still see each other.
            let same = g
                .active
                .get(&name)
                .or_else(|| g.retired.get(&name))
                .filter(|old| {
                    same_connection(&old.instance, &inst, self.policy.close_url.as_deref())
                })
                .map(|old| (old.writer.clone(), old.lookups.clone()));
            let (writer, lookups) = match same {
                Some(kept) => kept,
                None => match writer_for(&inst, &self.policy) {
                    Ok(w) => {
                        let l = LiveSource::new(
                            Searcher::new(w.reader().clone(), self.policy.search),
                            closeflow_close::run::key_config(&inst),
                            self.policy.live.clone(),
                        );
                        (w, l)
                    }
                    Err(e) => {
                        reports.push(FileReport::Unreadable {
                            file: f.clone(),
                            error: e,
                        });
                        continue;
                    }
                },
            };
            g.version += 1;
            if let Some(old) = previous.as_ref().filter(|p| **p != name)
                && let Some(a) = g.active.remove(old)
            {
                g.retired.insert(old.clone(), a);
            }
            g.retired.remove(&name);
            let active = Arc::new(Active {
                instance: inst,
                writer,
                lookups,
                version: g.version,
                file: f.clone(),
            });
            g.active.insert(name.clone(), active);
            g.files.insert(
                f.clone(),
                Seen {
                    text,
                    name: Some(name.clone()),
                    valid: true,
                    clashed: false,
                },
            );
            changed = true;
            reports.push(FileReport::Loaded {
                file: f,
                instance: name,
                warnings: diagnostics,
            });
        }
        Ok(reports)
    }
}
