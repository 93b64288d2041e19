//! Counts and retained events, read back from the cluster.
//!
//! `accepted` is the queue stream's last sequence (every stored event took one, duplicates
//! none) less the replays; `queued` is what the stream still stores (work-queue retention drops
//! an event when it is acknowledged); outcomes come from the durable counters, summed over the
//! nodes (and kept per node, so that the metrics say which node did what).

use super::errors::failed;
use super::records::CounterValue;
use super::{NodeState, names};
use crate::{InstanceStats, Load, Millis, NodeCounts, QueueError, Retained};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};

/// `(instance, stream name)` of every instance queue in the cluster.
async fn queues(me: &NodeState) -> Result<Vec<(String, String)>, QueueError> {
    let mut names_ = me.js.stream_names();
    let mut out = Vec::new();
    while let Some(n) = names_.next().await {
        let n = n.map_err(|e| failed("listing queues", e))?;
        if let Some(i) = me.names.instance_of_stream(&n) {
            out.push((i, n));
        }
    }
    Ok(out)
}

/// The current info of the queue stream named `s`.
async fn queue_info(me: &NodeState, s: &str) -> Result<stream::Info, QueueError> {
    me.js
        .get_stream_no_info(s)
        .await
        .map_err(|e| failed("reading a queue", e))?
        .get_info()
        .await
        .map_err(|e| failed("reading a queue", e))
}

/// What each instance's queue stream holds now: the stream is the one source of its depth.
pub(crate) async fn loads(me: &NodeState) -> Result<HashMap<String, Load>, QueueError> {
    let mut out = HashMap::new();
    for (i, s) in queues(me).await? {
        let st = queue_info(me, &s).await?.state;
        out.insert(
            i,
            Load {
                queued: st.messages,
                bytes: st.bytes,
            },
        );
    }
    Ok(out)
}

pub(crate) async fn stats(me: &NodeState) -> Result<Vec<InstanceStats>, QueueError> {
    let mut by: BTreeMap<String, InstanceStats> = BTreeMap::new();
    let entry = |by: &mut BTreeMap<String, InstanceStats>, i: &str| {
        by.entry(i.to_string()).or_insert_with(|| InstanceStats {
            instance: i.to_string(),
            ..InstanceStats::default()
        });
    };
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    for (i, s) in queues(me).await? {
        let info = queue_info(me, &s).await?;
        entry(&mut by, &i);
        let st = by.get_mut(&i).expect("inserted above");
        st.queued = info.state.messages;
        if info.state.messages > 0 {
            st.oldest_queued_at =
                Some((info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as Millis);
        }
        last_seq.insert(i, info.state.last_sequence);
    }
    // Counters: one subject each; its last message holds the running total.
    let mut subjects = Vec::new();
    {
        let mut info = me
            .counts
            .info_with_subjects(me.names.counters())
            .await
            .map_err(|e| failed("reading counters", e))?;
        while let Some(s) = info.next().await {
            subjects.push(s.map_err(|e| failed("reading counters", e))?.0);
        }
    }
    let mut per_node: BTreeMap<(String, String), NodeCounts> = BTreeMap::new();
    for subject in subjects {
        let Some((i, node, name, reason)) = me.names.parse_counter(&subject) else {
            continue;
        };
        let m = me
            .counts
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| failed("reading counters", e))?;
        let n = CounterValue::total(&m.payload);
        entry(&mut by, &i);
        let st = by.get_mut(&i).expect("inserted above");
        let nc = per_node
            .entry((i.clone(), node.clone()))
            .or_insert_with(|| NodeCounts {
                node: node.clone(),
                ..NodeCounts::default()
            });
        let add = |v: &mut Vec<(String, u64)>| match v.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => v.push((reason.clone(), n)),
        };
        match name.as_str() {
            "applied" => {
                st.applied += n;
                nc.applied += n;
            }
            "duplicates" => st.duplicates += n,
            "replayed" => st.replayed += n,
            "skipped" => {
                add(&mut st.skipped);
                nc.skipped += n;
            }
            "dead_lettered" => {
                add(&mut st.dead_lettered);
                nc.dead_lettered += n;
            }
            "retried" => {
                add(&mut st.retried);
                nc.retried += n;
            }
            _ => {}
        }
    }
    for ((i, _), nc) in per_node {
        if let Some(st) = by.get_mut(&i) {
            st.by_node.push(nc);
        }
    }
    for (i, seq) in last_seq {
        if let Some(st) = by.get_mut(&i) {
            st.accepted = seq.saturating_sub(st.replayed);
        }
    }
    // Dead letters now: messages per instance subject of the dead-letter stream.
    let mut info = me
        .dlq
        .info_with_subjects(me.names.dlq_subjects())
        .await
        .map_err(|e| failed("reading dead letters", e))?;
    let prefix = format!("{}.dlq.", me.names.prefix);
    while let Some(s) = info.next().await {
        let (subject, n) = s.map_err(|e| failed("reading dead letters", e))?;
        if let Some(i) = subject.strip_prefix(&prefix).and_then(names::dec) {
            entry(&mut by, &i);
            by.get_mut(&i).expect("inserted above").dead_now = n as u64;
        }
    }
    Ok(by.into_values().collect())
}

/// Events received at or after `since`, settled (from their records, which keep the event
/// until the retention window ends) or still queued, in queue order after `after`. Reads them
/// one by one: meant for `capture`-sized reads, not for bulk export.
pub(crate) async fn retained(
    me: &NodeState,
    instance: &str,
    since: Millis,
    after: i64,
    limit: usize,
) -> Result<Vec<Retained>, QueueError> {
    let mut out: Vec<Retained> = Vec::new();
    // Queued: the instance's stream, in order.
    if let Ok(s) = me.js.get_stream(me.names.queue_stream(instance)).await {
        let info = s
            .get_info()
            .await
            .map_err(|e| failed("reading a queue", e))?;
        if info.state.messages > 0 {
            let from = info.state.first_sequence.max(after.max(0) as u64 + 1);
            for seq in from..=info.state.last_sequence {
                if out.len() >= limit {
                    break;
                }
                let Ok(m) = s.get_raw_message(seq).await else {
                    continue;
                };
                if let Some((message_id, received_at, body)) = names::unwrap(&m.payload)
                    && received_at >= since
                {
                    out.push(Retained {
                        id: seq as i64,
                        message_id,
                        received_at,
                        body,
                    });
                }
            }
        }
    }
    // Settled: the final records of the instance's events.
    let kv_stream = me
        .js
        .get_stream(format!("KV_{}", me.names.events_bucket()))
        .await
        .map_err(|e| failed("reading event records", e))?;
    let prefix = format!("$KV.{}.{}.", me.names.events_bucket(), names::enc(instance));
    let mut subjects = Vec::new();
    {
        let mut info = kv_stream
            .info_with_subjects(format!("{prefix}*"))
            .await
            .map_err(|e| failed("reading event records", e))?;
        while let Some(s) = info.next().await {
            subjects.push(s.map_err(|e| failed("reading event records", e))?.0);
        }
    }
    for subject in subjects {
        let Some(seq) = subject
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        if seq <= after || out.iter().any(|r| r.id == seq) {
            continue;
        }
        let Some((_, v)) = me.record(instance, seq as u64).await? else {
            continue;
        };
        let (Some(m), Some(r), Some(b)) = (v.message_id, v.received_at, v.body) else {
            continue;
        };
        if r >= since && v.outcome.is_some() {
            out.push(Retained {
                id: seq,
                message_id: m,
                received_at: r,
                body: b,
            });
        }
    }
    out.sort_by_key(|r| r.id);
    out.truncate(limit);
    Ok(out)
}
