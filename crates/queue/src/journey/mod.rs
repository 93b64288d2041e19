//! Journeys: what happened to each accepted event, stage by stage (received, each attempt with
//! its verdicts, plan and Close calls, the outcome, a replay or a drop), kept for a retention
//! window beside the queue so that `closeflow trace`, `/admin/events` and the console can answer
//! "why did this event do that?".
//!
//! A journey is diagnostics, not the record of truth: stages are written after the queue step
//! they describe, in batches, by a writer that never makes intake or delivery wait (the
//! server's `journey::Recorder`). A crash can lose the last moments of journeys; it never loses
//! or delays an event. The queue's counters stay the one source of outcomes.
//!
//! Stages are found by `messageId`, or through the keys the stage names (User ID, email,
//! Company ID), within `since`.

mod jetstream;
mod sqlite;

pub use jetstream::JetStreamJournal;
pub use sqlite::SqliteJournal;

use crate::{Millis, QueueError};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// How long journeys are kept unless the server is told otherwise (`--journey-retention`).
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// One step of an event's journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub instance: String,
    pub message_id: String,
    pub at: Millis,
    /// `received`, `duplicate`, `attempt`, `replayed`, `dropped`.
    pub kind: String,
    /// What the stage says (its shape depends on the kind; written by the server).
    pub data: serde_json::Value,
}

/// A stage to write, with the keys it can be found by.
#[derive(Debug, Clone)]
pub struct Record {
    pub stage: Stage,
    pub keys: Vec<Key>,
}

/// Something a journey can be looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// `user_id`, `email` or `company_id`.
    pub kind: String,
    pub value: String,
}

impl Key {
    /// Emails are found whatever their case.
    pub fn new(kind: &str, value: &str) -> Key {
        let value = if kind == "email" {
            value.trim().to_lowercase()
        } else {
            value.to_string()
        };
        Key {
            kind: kind.to_string(),
            value,
        }
    }
}

/// What to look for.
#[derive(Debug, Clone)]
pub enum Find {
    MessageId(String),
    Key(Key),
}

#[derive(Debug, Clone)]
pub struct Query {
    pub find: Find,
    pub instance: Option<String>,
    /// Stages before this are left out.
    pub since: Millis,
    /// Events (not stages) at most, the most recent first.
    pub limit: usize,
}

/// One event's journey: its stages in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Journey {
    pub instance: String,
    pub message_id: String,
    pub stages: Vec<Stage>,
}

/// Groups stages by event, each journey in time order, the most recently active first, at most
/// `limit` journeys.
pub fn journeys(mut stages: Vec<Stage>, limit: usize) -> Vec<Journey> {
    stages.sort_by_key(|s| s.at);
    let mut out: Vec<Journey> = Vec::new();
    for s in stages {
        match out
            .iter_mut()
            .find(|j| j.instance == s.instance && j.message_id == s.message_id)
        {
            // The same stage twice: an attempt a crash cut short after its stages were kept
            // was made again (its event arrived once).
            Some(j)
                if j.stages
                    .iter()
                    .any(|x| x.kind == s.kind && x.at == s.at && x.data == s.data) => {}
            Some(j) => j.stages.push(s),
            None => out.push(Journey {
                instance: s.instance.clone(),
                message_id: s.message_id.clone(),
                stages: vec![s],
            }),
        }
    }
    out.sort_by_key(|j| std::cmp::Reverse(j.stages.last().map_or(0, |s| s.at)));
    out.truncate(limit);
    out
}

/// Where journeys are kept.
pub trait Journal: Send + Sync + 'static {
    /// Stores stages (all of them, or an error: the caller counts what it could not keep).
    fn write(&self, records: Vec<Record>) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The journeys a query finds, grouped by event ([`journeys`]).
    fn find(&self, q: &Query) -> impl Future<Output = Result<Vec<Journey>, QueueError>> + Send;

    /// Forgets stages older than the retention window (a stream with a max age does it itself).
    fn prune(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
