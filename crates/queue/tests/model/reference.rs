//! The reference queue: what a queue must answer, kept as plainly as possible in memory, with
//! no durability, no threads and no partitions. The model test runs the same operations on it
//! and on a real backend and compares every answer.

use closeflow_queue::Enqueued;
use std::collections::{BTreeMap, BTreeSet};

/// An event waiting in the queue.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub message_id: String,
    pub attempts: u32,
    /// Handed out by `fetch` in this process (and not settled finally).
    pub handed: bool,
}

/// One instance's queue.
#[derive(Debug, Default)]
pub struct Instance {
    /// Queue order, oldest first.
    pub queue: Vec<Waiting>,
    /// Dead letters, by `messageId`.
    pub dead: BTreeSet<String>,
    /// Every `messageId` the instance accepted (a duplicate within the window).
    pub seen: BTreeSet<String>,
    pub counts: Counts,
}

/// The counts the model tracks, as a backend's stats report them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub duplicates: u64,
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub replayed: u64,
    pub queued: u64,
    pub dead_now: u64,
}

/// A final outcome or a retry, as the model applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOutcome {
    Applied,
    Skipped,
    Retry,
    Dead,
}

#[derive(Debug, Default)]
pub struct Model {
    pub instances: BTreeMap<String, Instance>,
}

impl Model {
    fn inst(&mut self, instance: &str) -> &mut Instance {
        self.instances.entry(instance.to_string()).or_default()
    }

    pub fn enqueue(&mut self, instance: &str, ids: &[String]) -> Vec<Enqueued> {
        let i = self.inst(instance);
        ids.iter()
            .map(|id| {
                if i.seen.insert(id.clone()) {
                    i.queue.push(Waiting {
                        message_id: id.clone(),
                        attempts: 0,
                        handed: false,
                    });
                    i.counts.accepted += 1;
                    Enqueued::Accepted
                } else {
                    i.counts.duplicates += 1;
                    Enqueued::Duplicate
                }
            })
            .collect()
    }

    /// `(messageId, attempts)` of what `fetch` hands out.
    pub fn fetch(&mut self, instance: &str, max: usize) -> Vec<(String, u32)> {
        let i = self.inst(instance);
        let mut out = Vec::new();
        for w in i.queue.iter_mut().filter(|w| !w.handed).take(max) {
            w.handed = true;
            out.push((w.message_id.clone(), w.attempts));
        }
        out
    }

    /// Settles a handed-out event; after a retry, its attempts.
    pub fn settle(
        &mut self,
        instance: &str,
        message_id: &str,
        outcome: ModelOutcome,
    ) -> Option<u32> {
        let i = self.inst(instance);
        let at = i
            .queue
            .iter()
            .position(|w| w.message_id == message_id && w.handed)
            .expect("the model hands out what is settled");
        match outcome {
            ModelOutcome::Retry => {
                i.queue[at].attempts += 1;
                return Some(i.queue[at].attempts);
            }
            ModelOutcome::Applied => i.counts.applied += 1,
            ModelOutcome::Skipped => i.counts.skipped += 1,
            ModelOutcome::Dead => {
                i.counts.dead_lettered += 1;
                i.dead.insert(message_id.to_string());
            }
        }
        i.queue.remove(at);
        None
    }

    /// Queues a dead letter again, at the back, attempts reset.
    pub fn replay(&mut self, instance: &str, message_id: &str) -> bool {
        let i = self.inst(instance);
        if !i.dead.remove(message_id) {
            return false;
        }
        i.queue.push(Waiting {
            message_id: message_id.to_string(),
            attempts: 0,
            handed: false,
        });
        i.counts.replayed += 1;
        true
    }

    pub fn drop_dead(&mut self, instance: &str, message_id: &str) -> bool {
        self.inst(instance).dead.remove(message_id)
    }

    /// A restart: nothing is handed out any more (every lease died with the process).
    pub fn restart(&mut self) {
        for i in self.instances.values_mut() {
            for w in &mut i.queue {
                w.handed = false;
            }
        }
    }

    pub fn counts(&self, instance: &str) -> Counts {
        self.instances
            .get(instance)
            .map_or_else(Counts::default, |i| Counts {
                queued: i.queue.len() as u64,
                dead_now: i.dead.len() as u64,
                ..i.counts
            })
    }

    /// `(instance, messageId)` of every dead letter.
    pub fn dead_letters(&self) -> BTreeSet<(String, String)> {
        self.instances
            .iter()
            .flat_map(|(n, i)| i.dead.iter().map(move |m| (n.clone(), m.clone())))
            .collect()
    }
}
