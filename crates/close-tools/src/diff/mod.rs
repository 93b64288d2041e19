//! Two versions of a set of instances side by side over the same events (`closeflow diff`):
//! per event and per mapping, the trigger verdict, the payload field by field and, when there
//! is a Close state to plan against, the plan.
//!
//! This is a comparison of run reports, not a decision: each version's reports come from
//! [`run::prepare`] or [`run::dry_run`] unchanged (each version plans over its own overlay), so
//! a diff shows exactly the difference between what `dry-run` shows for either version. It
//! lives here rather than in a frontend so that every frontend (the CLI, the server, the bench)
//! compares the same way.
//!
//! Mappings are matched by instance name and mapping name. A mapping present only in the old
//! version and one present only in the new version whose definitions (action, trigger as
//! parsed, fields) are identical are a rename; anything less is a removal and an addition, since
//! guessing which edited mapping "became" which would be a guess.

mod compare;
mod review;

pub use compare::{FieldChange, Op, StepChange, payload_changes, plan_changes};
pub use review::{Group, GroupKind, Review, Summary, ValueCount};

use closeflow_close::plan::Step;
use closeflow_close::port::ReadPort;
use closeflow_close::run::{self, EventReport, MappingReport};
use closeflow_mapping::events::Entry;
use closeflow_mapping::instance::Setting;
use closeflow_mapping::{Instance, Mapping};
use serde::Serialize;
use serde_json::{Map, Value};

/// How a mapping (or instance) of one version relates to the other version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Kept,
    Renamed,
    Added,
    Removed,
}

impl Status {
    pub fn mirrored(self) -> Status {
        match self {
            Status::Added => Status::Removed,
            Status::Removed => Status::Added,
            s => s,
        }
    }
}

/// One mapping of either version, paired with its counterpart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingChange {
    pub instance: String,
    /// The new version's name (the old one's for a removed mapping).
    pub name: String,
    /// The old version's name, when it was renamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_name: Option<String>,
    pub status: Status,
    /// What differs in the definition of a kept or renamed mapping: `action`, `trigger`,
    /// `fields`, and `enabled` or `disabled` when that switch was flipped.
    pub changed: Vec<&'static str>,
}

impl MappingChange {
    /// Whether the definition differs at all (a kept, identical mapping does not).
    pub fn is_change(&self) -> bool {
        self.status != Status::Kept || !self.changed.is_empty()
    }
    fn old_name(&self) -> Option<&str> {
        match self.status {
            Status::Added => None,
            _ => Some(self.old_name.as_deref().unwrap_or(&self.name)),
        }
    }
    fn new_name(&self) -> Option<&str> {
        (self.status != Status::Removed).then_some(self.name.as_str())
    }
}

/// An instance of either version, paired by its `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceChange {
    pub name: String,
    pub status: Status,
    /// Plain settings (and `endpoint`) whose value differs; secrets are compared by presence
    /// only and never shown.
    pub settings: Vec<String>,
}

/// One side of a mapping's comparison: what that version made of the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Side {
    pub matched: bool,
    pub payload: Option<Map<String, Value>>,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Side {
    fn of(r: Option<&MappingReport>) -> Side {
        match r {
            Some(r) => Side {
                matched: r.matched,
                payload: r.payload.clone(),
                steps: r.steps.clone(),
                error: r.error.clone(),
            },
            // Absent in this version (added, removed, disabled): it cannot match.
            None => Side::default(),
        }
    }
}

/// A mapping whose verdict, payload, plan or error differs between the versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappingDiff {
    pub instance: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_name: Option<String>,
    pub status: Status,
    pub old: Side,
    pub new: Side,
    /// Field by field, when both versions matched (sorted by field path).
    pub payload_changes: Vec<FieldChange>,
    /// Step by step, when both versions matched and plans were made.
    pub plan_changes: Vec<StepChange>,
}

impl MappingDiff {
    pub fn newly_matched(&self) -> bool {
        !self.old.matched && self.new.matched
    }
    pub fn no_longer_matched(&self) -> bool {
        self.old.matched && !self.new.matched
    }
    pub fn error_changed(&self) -> bool {
        self.old.matched && self.new.matched && self.old.error != self.new.error
    }
}

/// One event through both versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventDiff {
    pub index: usize,
    pub message_id: Option<String>,
    pub changed: bool,
    /// Why the event could not be compared (in full): it is invalid, or a mapping failed the
    /// same way in both versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Only the mappings that differ.
    pub mappings: Vec<MappingDiff>,
    #[serde(skip)]
    pub kind: String,
    #[serde(skip)]
    pub about: String,
}

fn find<'r>(r: Option<&'r EventReport>, name: Option<&str>) -> Option<&'r MappingReport> {
    let name = name?;
    r?.mappings.iter().find(|m| m.name == name)
}

/// Compares one instance's reports of one event under both versions (`None`: the instance is
/// absent from that version). Appends what differs to `into`.
pub fn compare_reports(
    mappings: &[MappingChange],
    old: Option<&EventReport>,
    new: Option<&EventReport>,
    into: &mut EventDiff,
) {
    if let Some(e) = old.or(new).and_then(|r| r.error.as_ref()) {
        into.error.get_or_insert_with(|| e.clone());
        return;
    }
    for mc in mappings {
        let o = find(old, mc.old_name());
        let n = find(new, mc.new_name());
        if let (Some(o), Some(n)) = (o, n)
            && let Some(e) = &o.error
            && o.error == n.error
            && o.payload == n.payload
        {
            into.error.get_or_insert_with(|| {
                format!("mapping \"{}\" fails in both versions: {e}", mc.name)
            });
        }
        into.mappings.extend(compare::mapping(mc, o, n));
    }
}

struct Pair<'a> {
    name: String,
    old: Option<&'a Instance>,
    new: Option<&'a Instance>,
    status: InstanceChange,
    mappings: Vec<MappingChange>,
    old_overlay: closeflow_close::overlay::Overlay,
    new_overlay: closeflow_close::overlay::Overlay,
}

/// Runs events through both versions and compares the reports.
pub struct Differ<'a> {
    pairs: Vec<Pair<'a>>,
}

impl<'a> Differ<'a> {
    /// Pairs the instances by name (new version's order, then the removed ones) and their
    /// mappings by name or rename.
    pub fn new(old: &'a [Instance], new: &'a [Instance]) -> Differ<'a> {
        let mut pairs = Vec::new();
        for n in new {
            let o = old.iter().find(|o| o.name == n.name);
            pairs.push(Pair::new(&n.name, o, Some(n)));
        }
        for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
            pairs.push(Pair::new(&o.name, Some(o), None));
        }
        Differ { pairs }
    }

    /// The paired instances' names, in the order `event_planned` wants its sources.
    pub fn instances(&self) -> Vec<(&str, Option<&'a Instance>, Option<&'a Instance>)> {
        self.pairs
            .iter()
            .map(|p| (p.name.as_str(), p.old, p.new))
            .collect()
    }

    /// Instances added, removed, or whose settings differ.
    pub fn instance_changes(&self) -> Vec<&InstanceChange> {
        self.pairs
            .iter()
            .map(|p| &p.status)
            .filter(|s| s.status != Status::Kept || !s.settings.is_empty())
            .collect()
    }

    /// Mappings added, removed, renamed, or whose definition differs.
    pub fn mapping_changes(&self) -> Vec<&MappingChange> {
        self.pairs
            .iter()
            .flat_map(|p| &p.mappings)
            .filter(|m| m.is_change())
            .collect()
    }

    fn new_event(index: usize, entry: &Entry) -> EventDiff {
        EventDiff {
            index,
            message_id: entry.message_id().map(str::to_string),
            changed: false,
            error: None,
            mappings: vec![],
            kind: String::new(),
            about: String::new(),
        }
    }

    fn add(ev: &mut EventDiff, p: &Pair<'_>, old: Option<&EventReport>, new: Option<&EventReport>) {
        if ev.kind.is_empty()
            && let Some(r) = new.or(old)
        {
            ev.kind.clone_from(&r.kind);
            ev.about.clone_from(&r.about);
        }
        compare_reports(&p.mappings, old, new, ev);
    }

    /// Trigger verdicts and payloads only (no Close state needed).
    pub fn event(&self, index: usize, entry: &Entry) -> EventDiff {
        let mut ev = Self::new_event(index, entry);
        for p in &self.pairs {
            let old = p.old.map(|i| run::prepare(i, index, entry).0);
            let new = p.new.map(|i| run::prepare(i, index, entry).0);
            Self::add(&mut ev, p, old.as_ref(), new.as_ref());
        }
        ev.changed = !ev.mappings.is_empty();
        ev
    }

    /// Verdicts, payloads and plans: each version is dry-run over its own overlay, reading
    /// from `sources[i]` for the `i`-th of [`Differ::instances`]. Reads only.
    pub async fn event_planned<R: ReadPort>(
        &mut self,
        sources: &[&R],
        index: usize,
        entry: &Entry,
    ) -> EventDiff {
        let mut ev = Self::new_event(index, entry);
        for (p, source) in self.pairs.iter_mut().zip(sources) {
            let old = match p.old {
                Some(i) => Some(run::dry_run(i, *source, &mut p.old_overlay, index, entry).await),
                None => None,
            };
            let new = match p.new {
                Some(i) => Some(run::dry_run(i, *source, &mut p.new_overlay, index, entry).await),
                None => None,
            };
            Self::add(&mut ev, p, old.as_ref(), new.as_ref());
        }
        ev.changed = !ev.mappings.is_empty();
        ev
    }
}

impl<'a> Pair<'a> {
    fn new(name: &str, old: Option<&'a Instance>, new: Option<&'a Instance>) -> Pair<'a> {
        let (status, settings) = match (old, new) {
            (Some(o), Some(n)) => (Status::Kept, settings_changes(o, n)),
            (None, _) => (Status::Added, vec![]),
            (_, None) => (Status::Removed, vec![]),
        };
        let none: &[Mapping] = &[];
        let mappings = pair_mappings(
            name,
            old.map_or(none, |i| &i.mappings),
            new.map_or(none, |i| &i.mappings),
        );
        Pair {
            name: name.to_string(),
            old,
            new,
            status: InstanceChange {
                name: name.to_string(),
                status,
                settings,
            },
            mappings,
            old_overlay: Default::default(),
            new_overlay: Default::default(),
        }
    }
}

fn settings_changes(o: &Instance, n: &Instance) -> Vec<String> {
    let mut out = Vec::new();
    if o.endpoint != n.endpoint {
        out.push("endpoint".to_string());
    }
    let names: std::collections::BTreeSet<&String> =
        o.settings.keys().chain(n.settings.keys()).collect();
    for k in names {
        let differs = match (o.settings.get(k), n.settings.get(k)) {
            (Some(Setting::Plain(a)), Some(Setting::Plain(b))) => a != b,
            // Secrets are not compared by value; a list that grew or shrank did change.
            (
                Some(a @ (Setting::Secret(_) | Setting::Secrets(_))),
                Some(b @ (Setting::Secret(_) | Setting::Secrets(_))),
            ) => a.secrets().len() != b.secrets().len(),
            (None, None) => false,
            _ => true,
        };
        if differs {
            out.push(k.clone());
        }
    }
    out
}

/// The parts of a definition that decide what a mapping does.
fn same_definition(o: &Mapping, n: &Mapping) -> bool {
    o.action == n.action && o.trigger.to_string() == n.trigger.to_string() && o.fields == n.fields
}

fn definition_changes(o: &Mapping, n: &Mapping) -> Vec<&'static str> {
    let mut out = Vec::new();
    if o.action != n.action {
        out.push("action");
    }
    if o.trigger.to_string() != n.trigger.to_string() {
        out.push("trigger");
    }
    if o.fields != n.fields {
        out.push("fields");
    }
    match (o.enabled, n.enabled) {
        (false, true) => out.push("enabled"),
        (true, false) => out.push("disabled"),
        _ => {}
    }
    out
}

/// Pairs mappings by name; then an unpaired new mapping with the definition of an unpaired old
/// one (the first, in file order) is that one renamed. New version's order, removed ones last.
pub fn pair_mappings(instance: &str, old: &[Mapping], new: &[Mapping]) -> Vec<MappingChange> {
    let mut partner: Vec<Option<usize>> = new
        .iter()
        .map(|n| old.iter().position(|o| o.name == n.name))
        .collect();
    let mut taken: Vec<bool> = vec![false; old.len()];
    for i in partner.iter().flatten() {
        taken[*i] = true;
    }
    for (j, n) in new.iter().enumerate() {
        if partner[j].is_some() {
            continue;
        }
        if let Some(i) = (0..old.len()).find(|&i| !taken[i] && same_definition(&old[i], n)) {
            taken[i] = true;
            partner[j] = Some(i);
        }
    }
    let mut out: Vec<MappingChange> = new
        .iter()
        .zip(&partner)
        .map(|(n, p)| match p {
            Some(i) => {
                let o = &old[*i];
                let renamed = o.name != n.name;
                MappingChange {
                    instance: instance.to_string(),
                    name: n.name.clone(),
                    old_name: renamed.then(|| o.name.clone()),
                    status: if renamed {
                        Status::Renamed
                    } else {
                        Status::Kept
                    },
                    changed: definition_changes(o, n),
                }
            }
            None => MappingChange {
                instance: instance.to_string(),
                name: n.name.clone(),
                old_name: None,
                status: Status::Added,
                changed: vec![],
            },
        })
        .collect();
    out.extend(
        old.iter()
            .zip(&taken)
            .filter(|(_, t)| !**t)
            .map(|(o, _)| MappingChange {
                instance: instance.to_string(),
                name: o.name.clone(),
                old_name: None,
                status: Status::Removed,
                changed: vec![],
            }),
    );
    out
}
