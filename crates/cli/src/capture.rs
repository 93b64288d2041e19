//! `closeflow capture`: an instance's recently accepted events, from the server's queue (the
//! SQLite file, or with `--queue nats://…` the cluster), as JSON lines — so a mapping change
//! can be tried (`closeflow diff`, `dry-run`) on real traffic.

use anyhow::{Context, Result, bail};
use closeflow_queue::Inspect;
use closeflow_queue::sqlite::{Options, SqliteQueue};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// The server's data directory.
    #[arg(long, default_value = closeflow_server::config::defaults::DATA_DIR)]
    data_dir: PathBuf,
    #[arg(long)]
    instance: String,
    /// How far back (the queue retains settled events for its dedup window, 24 h by default).
    #[arg(long, default_value_t = crate::duration::Span(closeflow_server::config::defaults::DEDUP_WINDOW), value_parser = crate::duration::span)]
    since: crate::duration::Span,
    /// At most this many events, sampled at random (with --seed) over the whole window.
    #[arg(long)]
    sample: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's queue: `sqlite` (under --data-dir) or `nats://HOST:PORT[,…]`, as given to
    /// `closeflow serve --queue`.
    #[arg(long, default_value = "sqlite", value_parser = crate::serve::queue_choice)]
    queue: crate::serve::QueueChoice,
}

const PAGE: usize = 5_000;

pub fn run(a: CaptureArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    match &a.queue {
        crate::serve::QueueChoice::Sqlite => {
            let path = a.data_dir.join("queue.db");
            if !path.exists() {
                bail!(
                    "{}: no queue here (is --data-dir the server's?)",
                    path.display()
                );
            }
            let mut o = Options::in_dir(&a.data_dir);
            o.repair = false;
            let q =
                SqliteQueue::open(o).with_context(|| format!("cannot open {}", path.display()))?;
            write(&rt, &q, &a)
        }
        crate::serve::QueueChoice::Nats(urls) => {
            let q = rt.block_on(crate::dlq::connect(urls))?;
            write(&rt, &q, &a)
        }
    }
}

fn write<Q: Inspect>(rt: &tokio::runtime::Runtime, q: &Q, a: &CaptureArgs) -> Result<ExitCode> {
    let since = closeflow_queue::now_ms() - a.since.0.as_millis() as i64;
    let mut out = std::io::stdout().lock();
    let mut kept: Vec<(i64, String)> = Vec::new();
    let (mut seen, mut after) = (0usize, 0i64);
    // Reservoir sampling: one pass, memory bounded by --sample, every event equally likely.
    let mut rng = a.seed.max(1);
    let mut next = move |bound: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % bound as u64) as usize
    };
    loop {
        let page = rt.block_on(q.retained(&a.instance, since, after, PAGE))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in page {
            seen += 1;
            match a.sample {
                None => writeln!(out, "{}", e.body)?,
                Some(n) if kept.len() < n => kept.push((e.id, e.body)),
                Some(n) => {
                    let j = next(seen);
                    if j < n {
                        kept[j] = (e.id, e.body);
                    }
                }
            }
        }
    }
    kept.sort_by_key(|(id, _)| *id);
    for (_, body) in &kept {
        writeln!(out, "{body}")?;
    }
    let written = if a.sample.is_some() { kept.len() } else { seen };
    eprintln!(
        "{written} event(s) of instance {} written ({seen} retained in the window)",
        a.instance
    );
    Ok(ExitCode::SUCCESS)
}
