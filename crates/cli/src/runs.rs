//! `closeflow dry-run` and `closeflow send`: the same plans, read-only or applied.

use crate::json_doc::JsonDoc;
use crate::plan_view::{self, Style};
use crate::resume::{self, Done};
use anyhow::{Context, Result, bail};
use closeflow_close::model::KeyConfig;
use closeflow_close::overlay::Overlay;
use closeflow_close::port::{PortError, PortErrorKind};
use closeflow_close::run::{self, EventReport, Summary};
use closeflow_close::snapshot::Snapshot;
use closeflow_close_api::client::{Reader, Writer};
use closeflow_close_api::connect::client_config;
use closeflow_close_api::live::LiveSource;
use closeflow_close_api::lookahead::LookAhead;
use closeflow_close_api::search::{SearchOptions, Searcher};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Human,
    Json,
    Jsonl,
}

/// Opens a simulator snapshot to plan against (`dry-run` and `diff --against sim:PATH`),
/// indexed by the lookup keys of the instances that will read it. Streamed lead by lead into a
/// compact index: neither the file nor its parsed form is held whole.
pub fn open_snapshot(path: &str, keys: &[KeyConfig]) -> Result<Snapshot> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
    Snapshot::read(file, keys)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{path} is not a usable simulator snapshot"))
}

/// A counter on standard error, for streamed events (their number is not known ahead).
pub fn counter(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{pos}} events {what} ({{per_sec}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    Some(pb)
}

/// Nothing answers at Close's URL: every later event would fail the same way after its
/// retries, so the run stops with one error.
fn stop_if_unreachable(err: &Option<PortError>, index: usize) -> Result<()> {
    if let Some(e) = err
        .as_ref()
        .filter(|e| e.kind == PortErrorKind::Unreachable)
    {
        bail!(
            "{e}; stopped at event {} (nothing after it was attempted)",
            index + 1
        );
    }
    Ok(())
}

/// Prints reports as they come, per the format: `--format json` writes its document as it
/// goes, so only the report at hand is held.
struct Output {
    format: PlanFormat,
    style: Style,
    doc: Option<JsonDoc<std::io::BufWriter<std::io::StdoutLock<'static>>>>,
    summary: Summary,
}

impl Output {
    fn new(format: PlanFormat, color: bool) -> Output {
        let doc = (format == PlanFormat::Json)
            .then(|| JsonDoc::new(crate::stdout_buffered(), vec![("format_version", json!(1))]));
        Output {
            format,
            style: Style { color },
            doc,
            summary: Summary::default(),
        }
    }
    fn event(&mut self, r: EventReport) -> Result<()> {
        self.summary.add(&r);
        if let Some(doc) = &mut self.doc {
            return doc.event(&r).map_err(crate::stdout_failed);
        }
        let mut out = std::io::stdout().lock();
        match self.format {
            PlanFormat::Human => write!(out, "{}", plan_view::event(&self.style, &r))?,
            PlanFormat::Jsonl => {
                let mut v = serde_json::to_value(&r)?;
                v["format_version"] = json!(1);
                writeln!(out, "{v}")?;
            }
            PlanFormat::Json => {}
        }
        Ok(())
    }
    fn finish(mut self) -> Result<Summary> {
        if let Some(doc) = self.doc.take() {
            doc.finish(&self.summary).map_err(crate::stdout_failed)?;
            return Ok(self.summary);
        }
        let mut out = std::io::stdout().lock();
        match self.format {
            PlanFormat::Human => writeln!(out, "{}", plan_view::summary(&self.summary))?,
            PlanFormat::Jsonl => writeln!(
                out,
                "{}",
                json!({"format_version": 1, "summary": self.summary})
            )?,
            PlanFormat::Json => {}
        }
        Ok(self.summary)
    }
}

pub struct DryRun<'a> {
    pub instance: &'a Path,
    pub events: &'a str,
    pub against: Option<&'a str>,
    pub close_url: Option<&'a str>,
    pub format: PlanFormat,
    pub detailed_exitcode: bool,
    pub color: bool,
}

pub fn dry_run(a: DryRun<'_>) -> Result<ExitCode> {
    let inst = crate::input::require_instance(a.instance, a.color)?;
    let mut out = Output::new(a.format, a.color);
    let rt = tokio::runtime::Runtime::new()?;
    let mut overlay = Overlay::default();
    let pb;
    match a.against {
        Some(spec) => {
            let path = spec
                .strip_prefix("sim:")
                .with_context(|| format!("--against takes sim:STATE.json, got {spec}"))?;
            let source = open_snapshot(path, &[run::key_config(&inst)])?;
            let entries = crate::stream::open(a.events)?;
            pb = counter("planned");
            for (i, e) in entries.enumerate() {
                let (r, _) =
                    rt.block_on(run::dry_run_checked(&inst, &source, &mut overlay, i, &e?));
                out.event(r)?;
                if let Some(p) = &pb {
                    p.inc(1);
                }
            }
        }
        None => {
            // The live API, read-only: only a Reader exists on this path.
            let reader = Reader::new(client_config(&inst, a.close_url)?)?;
            rt.block_on(reader.check_credentials())?;
            let reader = Searcher::new(reader, SearchOptions::default());
            let entries = crate::stream::open(a.events)?;
            pb = counter("planned");
            for (i, e) in entries.enumerate() {
                let (r, err) =
                    rt.block_on(run::dry_run_checked(&inst, &reader, &mut overlay, i, &e?));
                out.event(r)?;
                stop_if_unreachable(&err, i)?;
                if let Some(p) = &pb {
                    p.inc(1);
                }
            }
        }
    }
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    let summary = out.finish()?;
    Ok(if summary.errors > 0 {
        ExitCode::from(1)
    } else if a.detailed_exitcode && summary.changes() > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub struct Send<'a> {
    pub instance: &'a Path,
    pub events: &'a str,
    pub close_url: Option<&'a str>,
    pub resume: bool,
    pub resume_file: Option<PathBuf>,
    pub format: PlanFormat,
    pub color: bool,
    pub lookahead: usize,
    pub lookups: crate::lookups::LookupArgs,
}

pub fn send(a: Send<'_>) -> Result<ExitCode> {
    let inst = crate::input::require_instance(a.instance, a.color)?;
    let cfg = client_config(&inst, a.close_url)?;
    let endpoint = cfg.base_url.clone();
    let writer = Writer::new(cfg)?;
    let source = LiveSource::new(
        Searcher::new(writer.reader().clone(), a.lookups.search_options()),
        run::key_config(&inst),
        a.lookups.options(),
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(writer.reader().check_credentials())?;
    let resume_path = a
        .resume_file
        .clone()
        .unwrap_or_else(|| resume::default_file(&inst.name, &endpoint));
    let mut done = Done::open(&resume_path, &inst.name, &endpoint)?;
    let mut out = Output::new(a.format, a.color);
    let mut failed: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut unkeyed = 0usize;
    // Events `--resume` will skip are not looked up ahead (as the run began: one applied
    // during the run is still skipped below, merely looked up once more).
    let already = if a.resume {
        done.ids.clone()
    } else {
        Default::default()
    };
    let mut events = LookAhead::new(
        &inst,
        &source,
        crate::stream::open(a.events)?,
        a.lookahead,
        move |e| e.message_id().is_some_and(|m| already.contains(m)),
    );
    let pb = counter("sent");
    while let Some((i, e)) = rt.block_on(events.next())? {
        if a.resume {
            match e.message_id() {
                Some(m) if done.ids.contains(m) => {
                    if a.format == PlanFormat::Human {
                        let mut out = std::io::stdout().lock();
                        writeln!(
                            out,
                            "event {}  = skipped by --resume: messageId {m} was already applied",
                            i + 1
                        )?;
                    }
                    skipped.push(m.to_string());
                    if let Some(p) = &pb {
                        p.inc(1);
                    }
                    continue;
                }
                Some(_) => {}
                None => unkeyed += 1,
            }
        }
        let (r, err) = rt.block_on(run::send(&inst, &source, &writer, i, &e));
        let bad = r
            .error
            .clone()
            .or_else(|| err.as_ref().map(ToString::to_string))
            .or_else(|| r.mappings.iter().find_map(|m| m.error.clone()));
        match bad {
            Some(why) => failed.push(format!(
                "event {} (messageId {}): {why}",
                i + 1,
                r.message_id.as_deref().unwrap_or("none")
            )),
            None => {
                if let Some(m) = &r.message_id {
                    done.record(m)?;
                }
            }
        }
        out.event(r)?;
        // As in dry-run: the event is shown, then the run stops.
        stop_if_unreachable(&err, i)?;
        if let Some(p) = &pb {
            p.inc(1);
        }
    }
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    out.finish()?;
    let place = format!("instance {} at {endpoint}", inst.name);
    if a.resume {
        if skipped.is_empty() {
            eprintln!(
                "--resume: nothing skipped; {} records no event of this stream as applied by {place}",
                done.path.display()
            );
        } else {
            let shown: Vec<&str> = skipped.iter().take(10).map(String::as_str).collect();
            let more = if skipped.len() > shown.len() {
                format!(", … ({} in all)", skipped.len())
            } else {
                String::new()
            };
            eprintln!(
                "--resume: {} event(s) skipped because {} records them as already applied by {place} (messageIds {}{more})",
                skipped.len(),
                done.path.display(),
                shown.join(", ")
            );
        }
        if unkeyed > 0 {
            eprintln!(
                "--resume: {unkeyed} event(s) without a messageId cannot be recognised and were planned again (an applied one writes nothing)"
            );
        }
    }
    eprintln!(
        "applied messageIds are recorded in {} ({place}); `--resume` skips them next time",
        done.path.display()
    );
    if failed.is_empty() {
        eprintln!("all events applied");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} event(s) failed:", failed.len());
        for f in &failed {
            eprintln!("  {f}");
        }
        Ok(ExitCode::from(1))
    }
}
