//! Settling an event on the shared queue: the event's record is written by compare-and-set
//! before anything else, so a settle happens once in the cluster; the follow-ups (dead letter,
//! count, acknowledgement) are idempotent by message id, so a node that dies after deciding is
//! finished by the next one.

use super::errors::failed;
use super::owner::{self, Held};
use super::records::{DeadHeader, EventRecord, Final, Kind, frame};
use super::{JetStreamQueue, NodeState, names};
use crate::{Lease, Outcome, QueueError, SettleError, Settles};
use async_nats::HeaderMap;
use async_nats::jetstream::kv;

impl NodeState {
    /// Adds `by` to a durable counter; with `once`, a repeat of the same id adds nothing.
    pub(super) async fn count(
        &self,
        instance: &str,
        name: &str,
        reason: &str,
        by: u64,
        once: Option<String>,
    ) -> Result<(), QueueError> {
        let mut h = HeaderMap::new();
        h.insert("Nats-Incr", format!("+{by}").as_str());
        if let Some(id) = once {
            h.insert("Nats-Msg-Id", id.as_str());
        }
        let subject = self.names.counter(instance, &self.opts.node, name, reason);
        self.js
            .publish_with_headers(subject, h, bytes::Bytes::new())
            .await
            .map_err(|e| failed("counting", e))?
            .await
            .map_err(|e| failed("counting", e))?;
        Ok(())
    }

    /// The follow-ups of a final outcome, each idempotent: the dead letter, the count, the
    /// acknowledgement that removes the event from the queue.
    pub(super) async fn complete(
        &self,
        held: &Held,
        record: &EventRecord,
        done: &Final,
    ) -> Result<(), QueueError> {
        let d = &held.d;
        let once = format!("{}.{}", names::enc(&d.instance), d.id);
        if done.kind == Kind::Dead {
            let header = DeadHeader {
                message_id: d.message_id.clone(),
                received_at: d.received_at,
                seq: Some(d.id as u64),
                reason: done.reason.clone(),
                error: done.error.clone(),
                last_reply: done.last_reply.clone(),
                attempts: record.attempts() + 1,
                dead_at: done.at,
                node: done.node.clone(),
            };
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", once.as_str());
            self.js
                .publish_with_headers(
                    self.names.dlq_subject(&d.instance),
                    h,
                    frame(&header, &d.body).into(),
                )
                .await
                .map_err(|e| failed("dead-lettering", e))?
                .await
                .map_err(|e| failed("dead-lettering", e))?;
        }
        let name = match done.kind {
            Kind::Dead => "dead_lettered",
            Kind::Skipped => "skipped",
            Kind::Applied | Kind::Retry => "applied",
        };
        // Counted before acknowledged: once the event leaves the queue it has been counted
        // (a crash in between redelivers it, and the count's message id keeps it single).
        self.count(
            &d.instance,
            name,
            &done.reason,
            1,
            Some(format!("{once}.f")),
        )
        .await?;
        held.msg
            .double_ack()
            .await
            .map_err(|e| QueueError::Unavailable(format!("acknowledging: {e}")))
    }

    /// Reads an event's record: `(revision, record)`.
    pub(super) async fn record(
        &self,
        instance: &str,
        seq: u64,
    ) -> Result<Option<(u64, EventRecord)>, QueueError> {
        let e = self
            .events
            .entry(self.names.event_key(instance, seq))
            .await
            .map_err(|e| failed("reading an event record", e))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((e.revision, serde_json::from_slice(&e.value).ok()?))))
    }

    /// Writes an event's record if it is still at `rev` (`None`: not written yet). `Ok(None)`:
    /// someone else wrote it first.
    pub(super) async fn write_record(
        &self,
        instance: &str,
        seq: u64,
        rev: Option<u64>,
        v: &EventRecord,
    ) -> Result<Option<u64>, QueueError> {
        let key = self.names.event_key(instance, seq);
        let bytes: bytes::Bytes = serde_json::to_vec(v).unwrap_or_default().into();
        match rev {
            None => match self.events.create(&key, bytes).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(failed("writing an event record", e)),
            },
            Some(rev) => match self.events.update(&key, bytes, rev).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(failed("writing an event record", e)),
            },
        }
    }

    /// Finishes an event whose record holds a final outcome (`false`: it holds none yet).
    pub(super) async fn finish_decided(
        &self,
        held: &Held,
        record: &EventRecord,
    ) -> Result<bool, QueueError> {
        match &record.outcome {
            Some(done) => self.complete(held, record, done).await.map(|()| true),
            None => Ok(false),
        }
    }
}

impl Settles for JetStreamQueue {
    async fn settle(
        &self,
        mut lease: Lease<JetStreamQueue>,
        outcome: Outcome,
    ) -> Result<Option<Lease<JetStreamQueue>>, SettleError<JetStreamQueue>> {
        match settle(&self.inner, &lease, outcome).await {
            Ok(None) => Ok(None),
            Ok(Some((attempts, not_before))) => {
                let d = lease.event_mut();
                d.attempts = attempts;
                d.not_before = not_before;
                Ok(Some(lease))
            }
            Err(e) => Err(SettleError::kept(e, lease)),
        }
    }
}

/// Records `outcome`; `Ok(Some((attempts, not_before)))` after a retry.
async fn settle(
    me: &NodeState,
    d: &crate::Delivery,
    outcome: Outcome,
) -> Result<Option<(u32, crate::Millis)>, QueueError> {
    let inst = owner::open(me, &d.instance).await?;
    let Some(held) = inst.held(d.id) else {
        return Err(QueueError::NotFound(d.id));
    };
    let seq = d.id as u64;
    let mut record = match held.rev {
        Some(_) => me
            .record(&d.instance, seq)
            .await?
            .map(|(_, v)| v)
            .unwrap_or_default(),
        None => EventRecord::default(),
    };
    if me.finish_decided(&held, &record).await? {
        // Decided already (by this node before a failed acknowledgement, or another node):
        // the follow-ups are finished, nothing is counted twice.
        inst.forget(d.id);
        return Err(QueueError::NotFound(d.id));
    }
    let attempts = record.attempts();
    if let Outcome::Retry {
        not_before,
        reason,
        error,
    } = &outcome
    {
        record.attempts = Some(attempts + 1);
        record.not_before = Some(*not_before);
        record.error = Some(error.clone());
        let rev = match me.write_record(&d.instance, seq, held.rev, &record).await? {
            Some(rev) => rev,
            None => match me.record(&d.instance, seq).await? {
                Some((_, r)) if me.finish_decided(&held, &r).await? => {
                    inst.forget(d.id);
                    return Err(QueueError::NotFound(d.id));
                }
                // Written since this lease read it but not settled: a write of this node's
                // whose reply was lost (or of a node that held the event before). The retry
                // goes on that revision; else every later settle would fail the same way.
                Some((rev, _)) => me
                    .write_record(&d.instance, seq, Some(rev), &record)
                    .await?
                    .ok_or_else(|| {
                        QueueError::Unavailable("the event's record changed meanwhile".into())
                    })?,
                None => {
                    return Err(QueueError::Unavailable(
                        "the event's record vanished".into(),
                    ));
                }
            },
        };
        inst.retried(d.id, rev, attempts as u32 + 1, *not_before);
        let once = format!("{}.{seq}.r{}", names::enc(&d.instance), attempts + 1);
        me.count(&d.instance, "retried", reason, 1, Some(once))
            .await?;
        return Ok(Some((attempts as u32 + 1, *not_before)));
    }
    if matches!(outcome, Outcome::Dead { .. }) {
        record.attempts = Some(attempts);
    }
    record.outcome = Some(Final::of(&outcome, &me.opts.node));
    record.message_id = Some(d.message_id.clone());
    record.received_at = Some(d.received_at);
    record.body = Some(d.body.clone());
    match me.write_record(&d.instance, seq, held.rev, &record).await? {
        Some(_) => {
            me.finish_decided(&held, &record).await?;
            inst.forget(d.id);
            Ok(None)
        }
        None => match me.record(&d.instance, seq).await? {
            // Someone settled it first; finish their follow-ups and report it settled.
            Some((_, r)) if me.finish_decided(&held, &r).await? => {
                inst.forget(d.id);
                Err(QueueError::NotFound(d.id))
            }
            // Not settled, only written since this lease read it: a retry recorded by this
            // node whose reply was lost (or by a node that held the event before). Taken as
            // not settled elsewhere — "not found" here would strand the event, its lease
            // extended for ever and never counted — the outcome goes on that revision.
            Some((rev, _)) => match me
                .write_record(&d.instance, seq, Some(rev), &record)
                .await?
            {
                Some(_) => {
                    me.finish_decided(&held, &record).await?;
                    inst.forget(d.id);
                    Ok(None)
                }
                None => Err(QueueError::Unavailable(
                    "the event's record changed meanwhile".into(),
                )),
            },
            None => Err(QueueError::Unavailable(
                "the event's record vanished".into(),
            )),
        },
    }
}
