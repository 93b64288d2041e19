//! The shared queue's roles: intake publishes to the instance's stream, delivery pulls from
//! the partitions this node owns, dead letters live in one stream for every instance.

use super::errors::{failed, no_message};
use super::names;
use super::records::{DeadHeader, unframe};
use super::{JetStreamQueue, NodeState, leases, locks, owner, stats};
use crate::{
    DeadLetter, DeadLetters, Deliver, Delivery, Enqueued, Inspect, InstanceStats, Intake, KeyHold,
    Lease, Load, Millis, NewEvent, QueueError, Retained, Upkeep,
};
use async_nats::HeaderMap;
use async_nats::jetstream;

impl NodeState {
    async fn dead_letter_at(&self, seq: u64) -> Result<Option<DeadLetter>, QueueError> {
        match self.dlq.get_raw_message(seq).await {
            Ok(m) => Ok(self.parse_dead(&m)),
            Err(e) if no_message(&e) => Ok(None),
            Err(e) => Err(failed("reading a dead letter", e)),
        }
    }

    /// A dead letter, `None` for a message that is not one.
    fn parse_dead(&self, m: &jetstream::message::StreamMessage) -> Option<DeadLetter> {
        let (h, body) = unframe::<DeadHeader>(&m.payload)?;
        let instance = names::dec(
            m.subject
                .as_str()
                .strip_prefix(&format!("{}.dlq.", self.names.prefix))?,
        )?;
        Some(DeadLetter {
            id: m.sequence as i64,
            instance,
            message_id: h.message_id,
            reason: h.reason,
            error: h.error,
            last_reply: h.last_reply,
            attempts: h.attempts as u32,
            received_at: h.received_at,
            dead_at: h.dead_at,
            body,
        })
    }

    /// The partition of an event of `instance`: a hash of its partition key (by the keyer the
    /// server gave), else of its `messageId`.
    fn partition(
        &self,
        inst: &owner::InstanceQueue,
        instance: &str,
        message_id: &str,
        body: &str,
    ) -> u32 {
        let key = self
            .keyer
            .as_ref()
            .and_then(|k| k(instance, body))
            .unwrap_or_else(|| format!("m:{message_id}"));
        (names::fnv1a(&key) % u64::from(inst.partitions)) as u32
    }
}

/// An event in its queue stream: the envelope, then the event as stored.
fn wrapped(message_id: &str, received_at: Millis, body: &str, meta: Option<&str>) -> bytes::Bytes {
    names::wrap_with(message_id, received_at, body, meta).into()
}

impl Intake for JetStreamQueue {
    async fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let me = &self.inner;
        let inst = owner::open(me, instance).await?;
        // A messageId accepted within the window is a duplicate, whatever JetStream remembers
        // (after a restart, only what it still stores). Recorded once the event is stored, so a
        // failure in between costs a duplicate check, never an event: the client's retry is
        // stored again or caught by JetStream's own window.
        let keys: Vec<String> = events
            .iter()
            .map(|e| me.names.seen_key(instance, &e.message_id))
            .collect();
        let seen = futures_util::future::try_join_all(keys.iter().map(|k| me.seen.get(k)))
            .await
            .map_err(|e| failed("checking a messageId", e))?;
        let mut acks = Vec::with_capacity(events.len());
        for (e, seen) in events.iter().zip(&seen) {
            if seen.is_some() {
                acks.push(None);
                continue;
            }
            let p = me.partition(&inst, instance, &e.message_id, &e.body);
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", names::msg_id(&e.message_id).as_str());
            let f = me
                .js
                .publish_with_headers(
                    me.names.queue_subject(instance, p),
                    h,
                    wrapped(&e.message_id, e.received_at, &e.body, e.meta.as_deref()),
                )
                .await
                .map_err(|e| failed("queueing", e))?;
            acks.push(Some(f));
        }
        let mut out = Vec::with_capacity(acks.len());
        let mut stored = Vec::new();
        for (f, key) in acks.into_iter().zip(&keys) {
            let Some(f) = f else {
                out.push(Enqueued::Duplicate);
                continue;
            };
            let ack = f.await.map_err(|e| failed("queueing", e))?;
            stored.push(key);
            out.push(if ack.duplicate {
                Enqueued::Duplicate
            } else {
                Enqueued::Accepted
            });
        }
        futures_util::future::try_join_all(
            stored
                .iter()
                .map(|k| me.seen.put(k.as_str(), bytes::Bytes::new())),
        )
        .await
        .map_err(|e| failed("remembering a messageId", e))?;
        let dups = out.iter().filter(|r| **r == Enqueued::Duplicate).count() as u64;
        if dups > 0 {
            // Informational (not part of the balance): a lost increment only under-reports.
            let _ = me.count(instance, "duplicates", "", dups, None).await;
        }
        if dups < out.len() as u64 {
            inst.mark_dirty();
            let _ = me
                .client
                .publish(me.names.wake_subject(instance), bytes::Bytes::new())
                .await;
        }
        Ok(out)
    }

    fn load(&self, instance: &str) -> Load {
        JetStreamQueue::load(self, instance)
    }
}

impl Deliver for JetStreamQueue {
    type Backend = JetStreamQueue;

    async fn fetch(
        &self,
        instance: &str,
        max: usize,
    ) -> Result<Vec<Lease<JetStreamQueue>>, QueueError> {
        let inst = leases::open_for_delivery(&self.inner, instance).await?;
        owner::pull(&self.inner, &inst, max).await?;
        Ok(inst
            .hand_out(max)
            .into_iter()
            .map(|d| Lease::new(self.clone(), d))
            .collect())
    }

    async fn hold_keys(
        &self,
        d: &Delivery,
        keys: &[String],
    ) -> Result<Option<KeyHold>, QueueError> {
        locks::hold_keys(&self.inner, d, keys).await
    }
}

impl DeadLetters for JetStreamQueue {
    async fn dead_letters(&self, instance: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let me = &self.inner;
        let info = me
            .dlq
            .get_info()
            .await
            .map_err(|e| failed("reading the dead-letter stream", e))?;
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Some(d) = me.dead_letter_at(seq).await?
                && instance.is_none_or(|i| i == d.instance)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, QueueError> {
        if id <= 0 {
            return Ok(None);
        }
        self.inner.dead_letter_at(id as u64).await
    }

    async fn replay(&self, id: i64) -> Result<bool, QueueError> {
        let me = &self.inner;
        let Some(d) = self.dead_letter(id).await? else {
            return Ok(false);
        };
        let origin = me
            .dlq
            .get_raw_message(id as u64)
            .await
            .ok()
            .and_then(|m| unframe::<DeadHeader>(&m.payload)?.0.seq);
        let inst = owner::open(me, &d.instance).await?;
        let p = me.partition(&inst, &d.instance, &d.message_id, &d.body);
        // Counted first: `accepted` is derived as (stream sequence − replayed), so the sum
        // accepted + replayed is exact whichever step a crash interrupts.
        let once = format!("replay.{}.{id}", me.names.dlq_stream());
        me.count(&d.instance, "replayed", "", 1, Some(once.clone()))
            .await?;
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", once.as_str());
        me.js
            .publish_with_headers(
                me.names.queue_subject(&d.instance, p),
                h,
                wrapped(&d.message_id, d.received_at, &d.body, None),
            )
            .await
            .map_err(|e| failed("replaying", e))?
            .await
            .map_err(|e| failed("replaying", e))?;
        let removed = me
            .dlq
            .delete_message(id as u64)
            .await
            .map_err(|e| failed("replaying", e))?;
        // The dead event's record goes too, as the embedded queue deletes its row: the event
        // is retained (for `capture`) once, as the replayed one.
        if let Some(origin) = origin {
            let _ = me
                .events
                .purge(me.names.event_key(&d.instance, origin))
                .await;
        }
        inst.mark_dirty();
        let _ = me
            .client
            .publish(me.names.wake_subject(&d.instance), bytes::Bytes::new())
            .await;
        Ok(removed)
    }

    async fn drop_dead(&self, id: i64) -> Result<bool, QueueError> {
        if self.dead_letter(id).await?.is_none() {
            return Ok(false);
        }
        Ok(self.inner.dlq.delete_message(id as u64).await.is_ok())
    }
}

impl Inspect for JetStreamQueue {
    async fn stats(&self) -> Result<Vec<InstanceStats>, QueueError> {
        stats::stats(&self.inner).await
    }

    async fn retained(
        &self,
        instance: &str,
        since: Millis,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Retained>, QueueError> {
        stats::retained(&self.inner, instance, since, after, limit).await
    }

    async fn cluster(&self) -> Option<serde_json::Value> {
        Some(owner::status(&self.inner).await)
    }
}

/// Settled events' records expire with their bucket: nothing to prune.
impl Upkeep for JetStreamQueue {}
