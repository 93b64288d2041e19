//! The review: a stream of event diffs folded into counts and groups ("37 events no longer
//! match …", "lead_description changes on 112 events: "" → "Plan: pro" ×80, …"), each with a
//! few example events. Unchanged events are counted, never kept.

use super::EventDiff;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// Distinct before → after pairs tracked per payload field; the rest are counted as "other".
const MAX_DISTINCT_VALUES: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    NoLongerMatched,
    NewlyMatched,
    Payload,
    Plan,
    Error,
    NotCompared,
}

impl GroupKind {
    pub fn mirrored(self) -> GroupKind {
        match self {
            GroupKind::NoLongerMatched => GroupKind::NewlyMatched,
            GroupKind::NewlyMatched => GroupKind::NoLongerMatched,
            k => k,
        }
    }
}

/// How many events went from one value of a payload field to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueCount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    pub events: usize,
}

/// One kind of change to one mapping, over all events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub kind: GroupKind,
    /// Empty for events that could not be compared at all (invalid events).
    pub instance: String,
    pub mapping: String,
    /// `payload`: the field's path; `plan`: the step change (`update_contact title → skipped
    /// contact: allow_updating_existing_contacts`); `error` and `not_compared`: the first message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    pub events: usize,
    /// The first events (0-based `index`), at most the limit.
    pub examples: Vec<usize>,
    /// `payload`: the most frequent before → after pairs, at most the limit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ValueCount>,
    /// `payload`: events whose pair is not among `values`.
    #[serde(skip_serializing_if = "is_zero")]
    pub other_values: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Counts over the whole run: events, and events with at least one change of each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub events: usize,
    pub changed: usize,
    /// Events compared in full with no difference.
    pub unchanged: usize,
    pub newly_matched: usize,
    pub no_longer_matched: usize,
    pub payload_changed: usize,
    pub plan_changed: usize,
    /// Events where a mapping fails in one version only, or differently.
    pub error_changed: usize,
    /// Events that could not be compared in full (invalid, or failing alike in both versions).
    pub errors: usize,
    pub groups: Vec<Group>,
}

impl Summary {
    /// Whether anything differs (for `--detailed-exitcode`).
    pub fn has_changes(&self) -> bool {
        self.changed > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: GroupKind,
    instance: String,
    mapping: String,
    what: String,
}

#[derive(Debug)]
struct ValueAcc {
    before: Option<Value>,
    after: Option<Value>,
    events: usize,
    first: usize,
}

#[derive(Debug)]
struct Acc {
    first: usize,
    events: usize,
    last_event: usize,
    examples: Vec<usize>,
    note: Option<String>,
    values: HashMap<(String, String), ValueAcc>,
    other_values: usize,
}

/// Folds event diffs into a [`Summary`].
#[derive(Debug)]
pub struct Review {
    limit: usize,
    counts: Summary,
    groups: HashMap<Key, Acc>,
}

fn text(v: &Option<Value>) -> String {
    v.as_ref().map_or_else(String::new, |v| format!("={v}"))
}

impl Review {
    /// `limit`: example events per group, and value pairs per payload field.
    pub fn new(limit: usize) -> Review {
        Review {
            limit,
            counts: Summary::default(),
            groups: HashMap::new(),
        }
    }

    fn group(
        &mut self,
        kind: GroupKind,
        instance: &str,
        mapping: &str,
        what: &str,
        index: usize,
    ) -> Option<&mut Acc> {
        let next = self.groups.len();
        let acc = self
            .groups
            .entry(Key {
                kind,
                instance: instance.to_string(),
                mapping: mapping.to_string(),
                what: what.to_string(),
            })
            .or_insert_with(|| Acc {
                first: next,
                events: 0,
                last_event: usize::MAX,
                examples: vec![],
                note: None,
                values: HashMap::new(),
                other_values: 0,
            });
        // One event counts once per group, however many of its steps fall in it.
        if acc.last_event == index {
            return None;
        }
        acc.last_event = index;
        acc.events += 1;
        if acc.examples.len() < self.limit {
            acc.examples.push(index);
        }
        Some(acc)
    }

    pub fn add(&mut self, ev: &EventDiff) {
        let i = ev.index;
        self.counts.events += 1;
        if ev.changed {
            self.counts.changed += 1;
        } else if ev.error.is_none() {
            self.counts.unchanged += 1;
        }
        if let Some(e) = &ev.error {
            self.counts.errors += 1;
            if let Some(acc) = self.group(GroupKind::NotCompared, "", "", "", i) {
                acc.note.get_or_insert_with(|| e.clone());
            }
        }
        let (mut newly, mut no_longer, mut payload, mut plan, mut error) =
            (false, false, false, false, false);
        for m in &ev.mappings {
            let (inst, name) = (m.instance.as_str(), m.name.as_str());
            if m.newly_matched() {
                newly = true;
                self.group(GroupKind::NewlyMatched, inst, name, "", i);
            }
            if m.no_longer_matched() {
                no_longer = true;
                self.group(GroupKind::NoLongerMatched, inst, name, "", i);
            }
            for f in &m.payload_changes {
                payload = true;
                let limit = self.limit;
                if let Some(acc) = self.group(GroupKind::Payload, inst, name, &f.field, i) {
                    let n = acc.values.len();
                    let key = (text(&f.before), text(&f.after));
                    match acc.values.get_mut(&key) {
                        Some(v) => v.events += 1,
                        None if n < MAX_DISTINCT_VALUES.max(limit) => {
                            acc.values.insert(
                                key,
                                ValueAcc {
                                    before: f.before.clone(),
                                    after: f.after.clone(),
                                    events: 1,
                                    first: n,
                                },
                            );
                        }
                        None => acc.other_values += 1,
                    }
                }
            }
            for s in &m.plan_changes {
                plan = true;
                self.group(GroupKind::Plan, inst, name, &s.brief(), i);
            }
            if m.error_changed() {
                error = true;
                let what = match (&m.old.error, &m.new.error) {
                    (None, Some(_)) => "now fails",
                    (Some(_), None) => "no longer fails",
                    _ => "fails differently",
                };
                let msg = m.new.error.clone().or_else(|| m.old.error.clone());
                if let Some(acc) = self.group(GroupKind::Error, inst, name, what, i) {
                    acc.note = acc.note.take().or(msg);
                }
            }
        }
        self.counts.newly_matched += usize::from(newly);
        self.counts.no_longer_matched += usize::from(no_longer);
        self.counts.payload_changed += usize::from(payload);
        self.counts.plan_changed += usize::from(plan);
        self.counts.error_changed += usize::from(error);
    }

    pub fn finish(self) -> Summary {
        let limit = self.limit;
        let mut groups: Vec<(Key, Acc)> = self.groups.into_iter().collect();
        groups.sort_by(|(ka, a), (kb, b)| {
            (ka.kind, std::cmp::Reverse(a.events), a.first).cmp(&(
                kb.kind,
                std::cmp::Reverse(b.events),
                b.first,
            ))
        });
        let mut s = self.counts;
        s.groups = groups
            .into_iter()
            .map(|(k, a)| {
                let mut values: Vec<ValueAcc> = a.values.into_values().collect();
                values.sort_by_key(|v| (std::cmp::Reverse(v.events), v.first));
                let shown: Vec<ValueCount> = values
                    .into_iter()
                    .take(limit)
                    .map(|v| ValueCount {
                        before: v.before,
                        after: v.after,
                        events: v.events,
                    })
                    .collect();
                let other_values = if k.kind == GroupKind::Payload {
                    a.events - shown.iter().map(|v| v.events).sum::<usize>()
                } else {
                    0
                };
                let what = match k.kind {
                    GroupKind::Payload | GroupKind::Plan => Some(k.what),
                    GroupKind::Error => Some(match a.note {
                        Some(n) => format!("{}: {n}", k.what),
                        None => k.what,
                    }),
                    GroupKind::NotCompared => a.note,
                    _ => None,
                };
                Group {
                    kind: k.kind,
                    instance: k.instance,
                    mapping: k.mapping,
                    what,
                    events: a.events,
                    examples: a.examples,
                    values: shown,
                    other_values,
                }
            })
            .collect();
        s
    }
}
