//! `closeflow diff`: what a mapping change does to real events. Loads both versions, feeds
//! every event through both (`close::diff`), and renders the differences and the review.

use crate::diff_view;
use crate::json_doc::JsonDoc;
use crate::plan_view::Style;
use anyhow::{Context, Result, bail};
use closeflow_close::model::KeyConfig;
use closeflow_close::run;
use closeflow_close::snapshot::Snapshot;
use closeflow_close_api::client::Reader;
use closeflow_close_api::connect::client_config;
use closeflow_close_api::search::Searcher;
use closeflow_close_tools::diff::{Differ, EventDiff, Review};
use closeflow_mapping::Instance;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum DiffFormat {
    /// Each changed event in detail, then the review.
    Human,
    /// One JSON document (`format_version: 1`).
    Json,
    /// The review alone (for a pull-request comment).
    Summary,
}

pub struct Diff<'a> {
    pub new: &'a [PathBuf],
    pub old: &'a [PathBuf],
    pub base: Option<&'a str>,
    pub events: &'a [String],
    pub against: Option<&'a str>,
    pub close_url: Option<&'a str>,
    pub format: DiffFormat,
    pub detailed_exitcode: bool,
    pub limit: usize,
    pub color: bool,
}

/// Where plans are read from: nowhere (verdicts and payloads only), a snapshot, or live Close.
enum Against {
    Nothing,
    Snapshot(Snapshot, String),
    Close,
}

/// `keys`: the lookup keys of every instance of both versions (the snapshot is indexed by all).
fn against(spec: Option<&str>, keys: &[KeyConfig]) -> Result<Against> {
    let Some(spec) = spec else {
        return Ok(Against::Nothing);
    };
    if spec == "close" {
        return Ok(Against::Close);
    }
    let path = spec
        .strip_prefix("sim:")
        .with_context(|| format!("--against takes sim:STATE.json or close, got {spec}"))?;
    // Opened as dry-run opens it, so that the diff plans exactly as dry-run does.
    let snapshot = crate::runs::open_snapshot(path, keys)?;
    Ok(Against::Snapshot(snapshot, path.to_string()))
}

fn unique(version: &str, insts: &[Instance]) -> Result<()> {
    for (i, a) in insts.iter().enumerate() {
        if let Some(b) = insts[..i].iter().find(|b| b.name == a.name) {
            bail!(
                "the {version} version has two instances named \"{}\" ({} and {})",
                a.name,
                b.file,
                a.file
            );
        }
    }
    Ok(())
}

fn load_new(paths: &[PathBuf], color: bool) -> Result<Vec<Instance>> {
    let files = crate::input::instance_files(paths)?;
    if files.is_empty() {
        bail!("--new names no instance files (*.yaml, *.yml)");
    }
    let insts = files
        .iter()
        .map(|f| crate::input::require_instance(f, color))
        .collect::<Result<Vec<_>>>()?;
    unique("new", &insts)?;
    Ok(insts)
}

fn load_old(a: &Diff<'_>) -> Result<Vec<Instance>> {
    let insts = match a.base {
        Some(rev) => crate::git_base::instances_at(rev, a.new)?
            .into_iter()
            .map(|o| {
                crate::input::require_loaded(crate::input::load_source(o.file, o.source), a.color)
            })
            .collect::<Result<Vec<_>>>()?,
        None => {
            let files = crate::input::instance_files(a.old)?;
            if files.is_empty() {
                bail!("--old names no instance files (*.yaml, *.yml)");
            }
            files
                .iter()
                .map(|f| crate::input::require_instance(f, a.color))
                .collect::<Result<Vec<_>>>()?
        }
    };
    unique("old", &insts)?;
    Ok(insts)
}

/// Prints event diffs as they come, per the format: `--format json` writes its document as it
/// goes, so only the event at hand is held.
struct Output {
    format: DiffFormat,
    style: Style,
    multi: bool,
    doc: Option<JsonDoc<std::io::BufWriter<std::io::StdoutLock<'static>>>>,
    printed: usize,
}

impl Output {
    fn event(&mut self, ev: &EventDiff) -> Result<()> {
        match (&mut self.doc, self.format) {
            (Some(doc), _) => doc.event(ev).map_err(crate::stdout_failed)?,
            (None, DiffFormat::Human) if ev.changed || ev.error.is_some() => {
                out!("{}", diff_view::event(&self.style, self.multi, ev));
                self.printed += 1;
            }
            _ => {}
        }
        Ok(())
    }
}

pub fn run(a: Diff<'_>) -> Result<ExitCode> {
    let new = load_new(a.new, a.color)?;
    let old = load_old(&a)?;
    let mut keys: Vec<KeyConfig> = Vec::new();
    for k in old.iter().chain(&new).map(run::key_config) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let against = against(a.against, &keys)?;
    let mut differ = Differ::new(&old, &new);
    let readers: Vec<Searcher> = match against {
        Against::Close => differ
            .instances()
            .iter()
            .map(|(_, o, n)| {
                let inst = n.or(*o).context("an instance of neither version")?;
                Ok(Searcher::from(Reader::new(client_config(
                    inst,
                    a.close_url,
                )?)?))
            })
            .collect::<Result<_>>()?,
        _ => vec![],
    };
    let compared = match &against {
        Against::Nothing => "triggers, payloads (plans need --against)".to_string(),
        Against::Snapshot(_, path) => format!("triggers, payloads, plans against {path}"),
        Against::Close => "triggers, payloads, plans against live Close (read-only)".into(),
    };
    let pairs = differ.instances().len();
    let doc = match a.format {
        DiffFormat::Json => Some(JsonDoc::new(
            crate::stdout_buffered(),
            vec![
                ("format_version", json!(1)),
                ("plans", json!(!matches!(against, Against::Nothing))),
                ("instance_changes", json!(differ.instance_changes())),
                ("mapping_changes", json!(differ.mapping_changes())),
            ],
        )),
        _ => None,
    };
    let mut out = Output {
        format: a.format,
        style: Style { color: a.color },
        multi: pairs > 1,
        doc,
        printed: 0,
    };
    let mut review = Review::new(a.limit);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // As dry-run does: a wrong key or a Close that does not answer stops the diff at once.
    for r in &readers {
        rt.block_on(r.reader().check_credentials())?;
    }
    let mut index = 0;
    for file in a.events {
        // Streamed, as dry-run and send read: each event compared and freed in turn.
        let pb = match against {
            Against::Nothing => None,
            _ => crate::runs::counter("compared"),
        };
        for e in crate::stream::open(file)? {
            let e = &e?;
            let ev = match &against {
                Against::Nothing => differ.event(index, e),
                Against::Snapshot(snapshot, _) => {
                    let sources = vec![snapshot; pairs];
                    rt.block_on(differ.event_planned(&sources, index, e))
                }
                Against::Close => {
                    let sources: Vec<&Searcher> = readers.iter().collect();
                    rt.block_on(differ.event_planned(&sources, index, e))
                }
            };
            review.add(&ev);
            out.event(&ev)?;
            if let Some(p) = &pb {
                p.inc(1);
            }
            index += 1;
        }
        if let Some(p) = pb {
            p.finish_and_clear();
        }
    }
    let summary = review.finish();
    match out.doc.take() {
        Some(doc) => {
            doc.finish(&summary).map_err(crate::stdout_failed)?;
        }
        None => outln!(
            "{}{}",
            if out.printed > 0 { "\n" } else { "" },
            diff_view::summary(
                &out.style,
                out.multi,
                &differ.instance_changes(),
                &differ.mapping_changes(),
                &summary,
                &compared
            )
        ),
    }
    Ok(if summary.errors > 0 {
        ExitCode::from(1)
    } else if a.detailed_exitcode && summary.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
