//! Journeys on a NATS cluster: one stream, `<prefix>_JOURNEY`, whose messages expire with the
//! retention window (so nothing prunes). A stage is published on a subject per event
//! (`….journey.m.<instance>.<hash of messageId>`), and each key it can be found by on a subject
//! per key (`….journey.k.<kind>.<hash of value>`, the event named in the message). A lookup
//! reads one subject with direct gets (from any replica), a message per request: journeys are
//! a handful of stages, and a person a handful of events.

use super::{Find, Journal, Journey, Query, Record, Stage, journeys};
use crate::QueueError;
use crate::jetstream::names::{enc, fnv1a};
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone)]
pub struct JetStreamJournal {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl std::fmt::Debug for JetStreamJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JetStreamJournal({})", self.prefix)
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("journeys: {what}: {e}"))
}

/// 128 bits of two FNV-1a hashes: a subject token for any text, long or not.
fn token(s: &str) -> String {
    format!("{:016x}{:016x}", fnv1a(s), fnv1a(&format!("{s}\u{1}")))
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    instance: String,
    message_id: String,
    kind: String,
    value: String,
}

impl JetStreamJournal {
    /// Opens (creating) the journey stream with these replicas and retention.
    pub async fn open(
        client: async_nats::Client,
        prefix: &str,
        replicas: usize,
        retention: Duration,
    ) -> Result<JetStreamJournal, QueueError> {
        let js = jetstream::new(client);
        let cfg = stream::Config {
            name: format!("{prefix}_JOURNEY"),
            subjects: vec![format!("{prefix}.journey.>")],
            num_replicas: replicas,
            max_age: retention,
            allow_direct: true,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(cfg.clone())
            .await
            .map_err(|e| failed("creating the journey stream", e))?;
        // A server started with another --journey-retention re-times the stream.
        if stream.cached_info().config.max_age != retention {
            js.update_stream(stream::Config {
                num_replicas: stream.cached_info().config.num_replicas,
                ..cfg
            })
            .await
            .map_err(|e| failed("changing the journey stream's retention", e))?;
            stream = js
                .get_stream(format!("{prefix}_JOURNEY"))
                .await
                .map_err(|e| failed("reading the journey stream", e))?;
        }
        Ok(JetStreamJournal {
            js,
            stream,
            prefix: prefix.to_string(),
        })
    }

    /// Every instance's stages of a `messageId` share a subject: a lookup by `messageId` alone
    /// reads one subject.
    /// The journey stream as the servers made it, to read or note in (`closeflow trace`,
    /// `dlq`): never created here (`None` when no server keeps journeys on this cluster).
    pub async fn existing(
        client: async_nats::Client,
        prefix: &str,
    ) -> Result<Option<JetStreamJournal>, QueueError> {
        let js = jetstream::new(client);
        match js.get_stream(format!("{prefix}_JOURNEY")).await {
            Ok(stream) => Ok(Some(JetStreamJournal {
                js,
                stream,
                prefix: prefix.to_string(),
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(api)
                        if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(failed("reading the journey stream", e)),
        }
    }

    fn stage_subject(&self, message_id: &str) -> String {
        format!("{}.journey.m.{}", self.prefix, token(message_id))
    }

    fn key_subject(&self, kind: &str, value: &str) -> String {
        format!("{}.journey.k.{}.{}", self.prefix, enc(kind), token(value))
    }

    /// Every message on one subject, oldest first.
    async fn read(&self, subject: &str, max: usize) -> Result<Vec<bytes::Bytes>, QueueError> {
        let mut out = Vec::new();
        let mut from = None;
        while out.len() < max {
            match self.stream.direct_get_next_for_subject(subject, from).await {
                Ok(m) => {
                    from = Some(m.sequence + 1);
                    out.push(m.payload);
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(failed("reading", e)),
            }
        }
        Ok(out)
    }

    async fn stages_of(
        &self,
        instance: Option<&str>,
        message_id: &str,
    ) -> Result<Vec<Stage>, QueueError> {
        Ok(self
            .read(&self.stage_subject(message_id), 10_000)
            .await?
            .iter()
            .filter_map(|p| serde_json::from_slice::<Stage>(p).ok())
            .filter(|s| s.message_id == message_id && instance.is_none_or(|i| s.instance == i))
            .collect())
    }
}

impl Journal for JetStreamJournal {
    async fn write(&self, records: Vec<Record>) -> Result<(), QueueError> {
        let mut acks = Vec::new();
        for r in &records {
            let s = &r.stage;
            let body = serde_json::to_vec(s).map_err(|e| failed("encoding", e))?;
            acks.push(
                self.js
                    .publish(self.stage_subject(&s.message_id), body.into())
                    .await
                    .map_err(|e| failed("publishing", e))?,
            );
            for k in &r.keys {
                let e = KeyEntry {
                    instance: s.instance.clone(),
                    message_id: s.message_id.clone(),
                    kind: k.kind.clone(),
                    value: k.value.clone(),
                };
                let body = serde_json::to_vec(&e).map_err(|e| failed("encoding", e))?;
                acks.push(
                    self.js
                        .publish(self.key_subject(&k.kind, &k.value), body.into())
                        .await
                        .map_err(|e| failed("publishing", e))?,
                );
            }
        }
        for a in acks {
            a.await.map_err(|e| failed("storing", e))?;
        }
        Ok(())
    }

    async fn find(&self, q: &Query) -> Result<Vec<Journey>, QueueError> {
        let mut stages = Vec::new();
        match &q.find {
            Find::MessageId(m) => stages = self.stages_of(q.instance.as_deref(), m).await?,
            Find::Key(k) => {
                let mut seen = std::collections::HashSet::new();
                for p in self
                    .read(&self.key_subject(&k.kind, &k.value), 10_000)
                    .await?
                {
                    let Ok(e) = serde_json::from_slice::<KeyEntry>(&p) else {
                        continue;
                    };
                    if e.kind != k.kind
                        || e.value != k.value
                        || q.instance.as_ref().is_some_and(|i| *i != e.instance)
                    {
                        continue;
                    }
                    if seen.insert((e.instance.clone(), e.message_id.clone())) {
                        stages.extend(self.stages_of(Some(&e.instance), &e.message_id).await?);
                    }
                }
            }
        }
        let mut found = journeys(stages, usize::MAX);
        found.retain(|j| j.stages.iter().any(|s| s.at >= q.since));
        found.truncate(q.limit);
        Ok(found)
    }
}
