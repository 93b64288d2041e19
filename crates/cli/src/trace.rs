//! `closeflow trace`: what happened to an event (or to every event of a person), from the
//! journeys the server keeps beside its queue: received, each mapping's verdict, the payload,
//! the plan, each Close call, the outcome.

use crate::serve::{QueueChoice, queue_choice};
use anyhow::{Result, bail};
use closeflow_queue::journey::{Find, Journal, Journey, Key, Query, SqliteJournal};
use closeflow_server::config::defaults;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["message_id", "user_id", "email", "company_id"])))]
pub struct TraceArgs {
    /// The event's messageId.
    message_id: Option<String>,
    /// Every event about this User ID.
    #[arg(long)]
    user_id: Option<String>,
    /// Every event about this email (any case).
    #[arg(long)]
    email: Option<String>,
    /// Every event about this Company ID (known once a mapping ran on the event).
    #[arg(long)]
    company_id: Option<String>,
    /// Only events active within this span (`30m`, `24h`, `7d`); a messageId is found at any age
    /// the journeys are kept.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Only this instance's events.
    #[arg(long)]
    instance: Option<String>,
    /// Events shown at most (most recently active first).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value = "human")]
    format: crate::Format,
    /// The server's data directory.
    #[arg(long, default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// The server's queue: `sqlite` (under --data-dir) or `nats://HOST:PORT[,…]`.
    #[arg(long, default_value = "sqlite", value_parser = queue_choice)]
    queue: QueueChoice,
}

pub fn run(a: TraceArgs) -> Result<ExitCode> {
    let since = match closeflow_server::admin::parse_since(&a.since) {
        Some(ms) => ms,
        None => bail!(
            "--since {}: expected a span such as 30m, 24h or 7d",
            a.since
        ),
    };
    let find = match (&a.message_id, &a.user_id, &a.email, &a.company_id) {
        (Some(m), None, None, None) => Find::MessageId(m.clone()),
        (None, Some(u), None, None) => Find::Key(Key::new("user_id", u)),
        (None, None, Some(e), None) => Find::Key(Key::new("email", e)),
        (None, None, None, Some(c)) => Find::Key(Key::new("company_id", c)),
        _ => bail!("give one of: a messageId, --user-id, --email or --company-id"),
    };
    let q = Query {
        since: match find {
            Find::MessageId(_) => 0,
            Find::Key(_) => closeflow_queue::now_ms() - since,
        },
        find,
        instance: a.instance.clone(),
        limit: a.limit.max(1),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let found: Vec<Journey> = rt.block_on(async {
        match &a.queue {
            QueueChoice::Sqlite => {
                Ok::<_, anyhow::Error>(SqliteJournal::open_read_only(&a.data_dir)?.find(&q).await?)
            }
            QueueChoice::Nats(urls) => {
                let queue = crate::dlq::connect(urls).await?;
                match queue.existing_journal().await? {
                    Some(j) => Ok(j.find(&q).await?),
                    None => bail!(
                        "no journeys on this cluster: no server keeps them (--journey-retention 0?)"
                    ),
                }
            }
        }
    })?;
    match a.format {
        crate::Format::Json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"events": found}))?
            );
        }
        crate::Format::Human => {
            if found.is_empty() {
                eprintln!(
                    "no journey found (not accepted, older than --since or the server's --journey-retention, or kept by another server)"
                );
            } else {
                out!("{}", closeflow_server::journey::render::journeys(&found));
            }
        }
    }
    Ok(if found.is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
