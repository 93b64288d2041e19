//! Journeys of accepted events (`closeflow_queue::journey`): where they are kept for this
//! server ([`Journals`]), the writer that keeps them off intake's and delivery's path
//! ([`Recorder`]), what each stage holds ([`stages`]), and how a journey reads to a person
//! ([`render`]).

pub mod render;
pub mod stages;

use crate::telemetry::{self, InternalEvent};
use closeflow_queue::QueueError;
use closeflow_queue::journey::{JetStreamJournal, Journal, Journey, Query, Record, SqliteJournal};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where this server keeps journeys: beside its queue.
#[derive(Debug, Clone)]
pub enum Journals {
    /// `--journey-retention 0`.
    Off,
    Sqlite(SqliteJournal),
    Nats(JetStreamJournal),
}

impl Journals {
    pub async fn write(&self, records: Vec<Record>) -> Result<(), QueueError> {
        match self {
            Journals::Off => Ok(()),
            Journals::Sqlite(j) => j.write(records).await,
            Journals::Nats(j) => j.write(records).await,
        }
    }

    pub async fn find(&self, q: &Query) -> Result<Vec<Journey>, QueueError> {
        match self {
            Journals::Off => Err(QueueError::Unavailable(
                "journeys are not kept (--journey-retention 0)".into(),
            )),
            Journals::Sqlite(j) => j.find(q).await,
            Journals::Nats(j) => j.find(q).await,
        }
    }

    pub async fn prune(&self) {
        match self {
            Journals::Off => {}
            Journals::Sqlite(j) => j.prune().await,
            Journals::Nats(j) => j.prune().await,
        }
    }
}

enum Msg {
    Stages(Vec<Record>),
    Flush(oneshot::Sender<()>),
}

/// Stages waiting to be written at most; beyond, new stages are dropped (and counted) rather
/// than making intake or delivery wait on diagnostics.
const BACKLOG: usize = 20_000;
/// Stages written in one transaction (or one round of publishes) at most.
const BATCH: usize = 1_000;

/// Takes stages from intake and delivery without making them wait, and writes them in batches.
#[derive(Debug)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Msg>>,
}

impl Recorder {
    /// A recorder that keeps nothing (journeys off, and tests that do not look at them).
    pub fn off() -> Arc<Recorder> {
        Arc::new(Recorder { tx: None })
    }

    /// Starts the writer task over `journals`.
    pub fn start(journals: Journals) -> Arc<Recorder> {
        if matches!(journals, Journals::Off) {
            return Recorder::off();
        }
        let (tx, mut rx) = mpsc::channel::<Msg>(BACKLOG);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut waiting = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Msg::Stages(rs) => batch.extend(rs),
                        Msg::Flush(done) => waiting.push(done),
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    let n = batch.len();
                    if let Err(e) = journals.write(std::mem::take(&mut batch)).await {
                        telemetry::JourneysLost {
                            count: n,
                            why: &e.to_string(),
                        }
                        .emit();
                    }
                }
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        Arc::new(Recorder { tx: Some(tx) })
    }

    /// Keeps a stage, or drops it (counted) when the writer is this far behind.
    pub fn record(&self, r: Record) {
        self.record_all(vec![r]);
    }

    /// Keeps stages of one event together, or drops them (counted).
    pub fn record_all(&self, rs: Vec<Record>) {
        let Some(tx) = &self.tx else { return };
        let n = rs.len();
        if tx.try_send(Msg::Stages(rs)).is_err() {
            telemetry::JourneysLost {
                count: n,
                why: "the journey writer is behind",
            }
            .emit();
        }
    }

    /// Whether journeys are kept (intake stores how events arrived only then).
    pub fn on(&self) -> bool {
        self.tx.is_some()
    }

    /// Returns once every stage recorded before it is written (or given up): a lookup sees
    /// what this server did up to now.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}
