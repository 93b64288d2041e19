//! `closeflow dlq list|show|replay|drop`: the dead-letter store, read from the queue file or,
//! with `--queue nats://…`, from the cluster (a running server picks up replays within a
//! second).

use crate::serve::{QueueChoice, queue_choice};
use anyhow::{Context, Result, bail};
use closeflow_queue::journey::{RETENTION, SqliteJournal};
use closeflow_queue::sqlite::{Options, SqliteQueue};
use closeflow_queue::{DeadLetter, DeadLetters};
use closeflow_server::admin::dead_letter_json;
use closeflow_server::config::defaults;
use closeflow_server::journey::{Journals, stages};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DlqCmd {
    /// One line per dead letter: id, instance, messageId, reason, attempts, error.
    List {
        #[command(flatten)]
        at: At,
        #[arg(long, value_enum, default_value = "human")]
        format: crate::Format,
    },
    /// A dead letter in full (JSON): its event, reason, attempts, error and last reply (Close's
    /// reply to a refusal, or the last failure's kind when retries ran out).
    Show {
        #[command(flatten)]
        at: At,
        id: i64,
    },
    /// Queue dead letters again (after fixing the cause): by id, or --all (of --instance).
    Replay {
        #[command(flatten)]
        at: At,
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good: by id, or --all (of --instance).
    Drop {
        #[command(flatten)]
        at: At,
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args)]
pub struct At {
    /// The server's data directory.
    #[arg(long, default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// Only this instance's dead letters.
    #[arg(long)]
    instance: Option<String>,
    /// The server's queue: `sqlite` (under --data-dir) or `nats://HOST:PORT[,…]`, as given to
    /// `closeflow serve --queue`.
    #[arg(long, default_value = "sqlite", value_parser = queue_choice)]
    queue: QueueChoice,
}

fn open(at: &At) -> Result<SqliteQueue> {
    let path = at.data_dir.join("queue.db");
    if !path.exists() {
        bail!(
            "{}: no queue here (is --data-dir the server's?)",
            path.display()
        );
    }
    let mut o = Options::in_dir(&at.data_dir);
    o.repair = false;
    SqliteQueue::open(o).with_context(|| format!("cannot open {}", path.display()))
}

fn cut(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        one_line.chars().take(n - 1).collect::<String>() + "…"
    }
}

async fn targets<Q: DeadLetters>(
    q: &Q,
    at: &At,
    ids: &[i64],
    all: bool,
) -> Result<Vec<DeadLetter>> {
    let list = q.dead_letters(at.instance.as_deref()).await?;
    if all {
        return Ok(list);
    }
    if ids.is_empty() {
        bail!("name the dead letters by id (see `closeflow dlq list`), or pass --all");
    }
    let mut out = Vec::new();
    for id in ids {
        match list.iter().find(|d| d.id == *id) {
            Some(d) => out.push(d.clone()),
            None => bail!(
                "no dead letter with id {id}{}",
                at.instance
                    .as_ref()
                    .map(|i| format!(" in instance {i}"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

pub fn run(cmd: DlqCmd) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let at = match &cmd {
            DlqCmd::List { at, .. }
            | DlqCmd::Show { at, .. }
            | DlqCmd::Replay { at, .. }
            | DlqCmd::Drop { at, .. } => at,
        };
        match &at.queue {
            QueueChoice::Sqlite => {
                let q = open(at)?;
                // Replays and drops go into the events' journeys, when the server keeps them.
                let journal = at
                    .data_dir
                    .join("journey.db")
                    .exists()
                    .then(|| SqliteJournal::open(&at.data_dir, RETENTION).ok())
                    .flatten()
                    .map(Journals::Sqlite)
                    .unwrap_or(Journals::Off);
                on(&q, cmd, journal).await
            }
            QueueChoice::Nats(urls) => {
                let q = connect(urls).await?;
                let journal = match q.existing_journal().await {
                    Ok(Some(j)) => Journals::Nats(j),
                    _ => Journals::Off,
                };
                on(&q, cmd, journal).await
            }
        }
    })
}

/// The cluster's queue, as a client: no leases, no delivery, only the shared state.
pub async fn connect(urls: &[String]) -> Result<closeflow_queue::jetstream::JetStreamQueue> {
    let c = closeflow_server::ClusterConfig {
        urls: urls.to_vec(),
        node: "closeflow-cli".into(),
        ack_wait: defaults::ACK_WAIT,
        partitions: defaults::PARTITIONS,
        replicas: None,
    };
    closeflow_server::connect_cluster(&c, defaults::DEDUP_WINDOW, None, None).await
}

/// Notes a replay or a drop in the event's journey; a journal that cannot be written is no reason
/// to fail the command (the queue already did what was asked).
async fn note(journal: &Journals, stage: closeflow_queue::journey::Record) {
    if let Err(e) = journal.write(vec![stage]).await {
        eprintln!("note: the event's journey was not updated: {e}");
    }
}

async fn on<Q: DeadLetters>(q: &Q, cmd: DlqCmd, journal: Journals) -> Result<ExitCode> {
    match cmd {
        DlqCmd::List { at, format } => {
            let list = q.dead_letters(at.instance.as_deref()).await?;
            match format {
                crate::Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "dead_letters": list.iter().map(dead_letter_json).collect::<Vec<_>>()
                    }))?
                ),
                crate::Format::Human => {
                    if list.is_empty() {
                        outln!("no dead letters");
                    }
                    for d in &list {
                        outln!(
                            "{:>6}  {}  {}  {}  attempts={}  {}",
                            d.id,
                            d.instance,
                            d.message_id,
                            d.reason,
                            d.attempts,
                            cut(&d.error, 100)
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::Show { at, id } => match q.dead_letter(id).await? {
            Some(d) if at.instance.as_ref().is_none_or(|i| *i == d.instance) => {
                outln!("{}", serde_json::to_string_pretty(&dead_letter_json(&d))?);
                Ok(ExitCode::SUCCESS)
            }
            _ => bail!("no dead letter with id {id}"),
        },
        DlqCmd::Replay { at, ids, all } => {
            let mut n = 0;
            for d in targets(q, &at, &ids, all).await? {
                if q.replay(d.id).await? {
                    note(&journal, stages::replayed(&d, "cli")).await;
                    n += 1;
                    outln!("replayed {} ({} {})", d.id, d.instance, d.message_id);
                }
            }
            eprintln!(
                "{n} dead letter(s) queued again; a running server delivers them within a second"
            );
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::Drop { at, ids, all } => {
            let mut n = 0;
            for d in targets(q, &at, &ids, all).await? {
                if q.drop_dead(d.id).await? {
                    note(&journal, stages::dropped(&d, "cli")).await;
                    n += 1;
                    outln!("dropped {} ({} {})", d.id, d.instance, d.message_id);
                }
            }
            eprintln!("{n} dead letter(s) dropped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
