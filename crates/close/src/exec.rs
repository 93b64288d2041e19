//! Running an event: gather the lookups, plan, then (live only) write. The dry-run and the live
//! run share `gather` and `plan`; only [`apply`] takes a [`WritePort`], so a dry-run has
//! nothing to write with.

use crate::lookup::{self, LookupResults};
use crate::model::KeyConfig;
use crate::overlay::Overlay;
use crate::payload::Payload;
use crate::plan::{self, Object, Plan, Step, StepKind};
use crate::port::{PortError, PortErrorKind, ReadPort, WritePort};

/// The records a plan over `found` may write: what the lookups returned.
fn found_ids(found: &LookupResults) -> Vec<String> {
    let mut ids: Vec<String> = found
        .leads_by_company
        .iter()
        .chain(&found.leads)
        .map(|l| l.id.clone())
        .chain(found.contacts.iter().map(|c| c.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Lookups for one event, from any reads.
pub async fn gather<R: ReadPort>(
    reads: &R,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<LookupResults, PortError> {
    let reqs = lookup::requests(cfg, p);
    if reqs.is_empty() {
        return Ok(LookupResults::default());
    }
    reads.find(cfg, p, &reqs).await
}

/// Plans one event of a dry-run over `overlay`, which accumulates what earlier events of the
/// run would have created or changed (and only that). Reads only.
pub async fn dry_run<R: ReadPort>(
    reads: &R,
    overlay: &mut Overlay,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Plan, PortError> {
    let found = gather(reads, cfg, p).await?;
    overlay.track_keys(cfg);
    // The source's records as this run left them, and the run's own: the overlay keeps only
    // what a plan writes, so it grows with the changes, not with the records read.
    let (seen, view) = overlay.lookup_over(&found, &lookup::requests(cfg, p));
    let plan = plan::plan(cfg, p, &seen);
    overlay.apply(&plan, view);
    Ok(plan)
}

/// What a live run did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The plan as it was carried out: after a re-plan, the writes an earlier attempt made
    /// stand in for the `unchanged` steps they caused.
    pub plan: Plan,
    /// Ids Close gave to created records, in plan order.
    pub created: Vec<String>,
}

/// Event-level attempts after an interrupted create: each one looks up and plans afresh.
const REPLANS: u32 = 3;

/// How far an attempt got before it failed.
#[derive(Default)]
struct Progress {
    /// Writes that Close confirmed (creates carry the id Close gave).
    done: Vec<Step>,
    created: Vec<String>,
    /// A create whose reply was lost (with the contact nested in it): it may or may not have
    /// happened; the next plan tells.
    unknown: Vec<Step>,
}

/// Plans one event against live Close and applies the plan's writes in order, with the lookups
/// read through `reads` (a live run's coalescing cache); every reply Close gives a write goes
/// back to it, and a failure makes it forget the event's keys. A create whose reply was lost
/// is never re-sent blindly: the event is looked up and planned again, which converges whether
/// or not the create happened; the result reports what was written.
pub async fn apply<R: ReadPort + Sync, W: WritePort + Sync>(
    reads: &R,
    writes: &W,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Applied, PortError> {
    let mut so_far = Progress::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Look up, hold what was found; if another event wrote any of it meanwhile, the
        // lookups are stale: again (a cached port answers that from its refreshed cache).
        let (found, mut held) = loop {
            let since = reads.epoch();
            let found = match gather(reads, cfg, p).await {
                Ok(f) => f,
                Err(e) => {
                    reads.forget(&lookup::requests(cfg, p), &[]);
                    return Err(e);
                }
            };
            let held = reads.hold(found_ids(&found), since).await;
            if !held.stale {
                break (found, held);
            }
        };
        let plan = plan::plan(cfg, p, &found);
        resolve_unknown(&mut so_far, &plan);
        let mut this = Progress::default();
        let result = execute(writes, &plan, &mut this, &|reply| reads.written(reply)).await;
        for id in this.done.iter().filter_map(|s| s.id.as_deref()) {
            held.wrote(id);
        }
        so_far.created.append(&mut this.created);
        match result {
            Ok(()) => {
                // This plan's steps as carried out (creates now carry their ids); earlier
                // attempts' writes replace the `unchanged` steps they caused.
                let mut plan = plan;
                let mut executed = this.done.into_iter();
                for s in plan.steps.iter_mut().filter(|s| s.is_write()) {
                    if let Some(x) = executed.next() {
                        *s = x;
                    }
                }
                return Ok(Applied {
                    plan: carried_out(so_far.done, plan),
                    created: so_far.created,
                });
            }
            Err(e) if e.kind == PortErrorKind::Interrupted && attempt < REPLANS => {
                so_far.done.append(&mut this.done);
                so_far.unknown = this.unknown;
                // Whether the create happened only Close can tell: no cached answer.
                reads.forget(&lookup::requests(cfg, p), &found_ids(&found));
            }
            Err(e) => {
                reads.forget(&lookup::requests(cfg, p), &found_ids(&found));
                return Err(e);
            }
        }
    }
}

/// Decides, from a fresh plan, whether an interrupted create happened: if the plan creates
/// that kind of record again, it did not; otherwise the record it now finds (one no earlier
/// step knew) is the one created.
fn resolve_unknown(so_far: &mut Progress, plan: &Plan) {
    let known: Vec<&str> = so_far.done.iter().filter_map(|s| s.id.as_deref()).collect();
    let mut resolved = Vec::new();
    for mut s in std::mem::take(&mut so_far.unknown) {
        let again = plan.steps.iter().any(|x| {
            x.object == s.object && matches!(x.kind, StepKind::CreateLead | StepKind::CreateContact)
        });
        if again {
            continue;
        }
        let appeared = plan.steps.iter().find(|x| {
            x.object == s.object
                && x.kind == StepKind::Unchanged
                && x.id.as_deref().is_some_and(|id| !known.contains(&id))
        });
        if let Some(x) = appeared {
            s.id.clone_from(&x.id);
            if s.object == Object::Contact {
                s.lead_id.clone_from(&x.lead_id);
            }
            resolved.push(s);
        }
    }
    so_far.done.extend(resolved);
}

/// The final plan with each `unchanged` step replaced by the earlier writes to that record,
/// and earlier writes to records the final plan does not mention put first.
fn carried_out(done: Vec<Step>, mut plan: Plan) -> Plan {
    if done.is_empty() {
        return plan;
    }
    let in_plan = |id: &Option<String>| plan.steps.iter().any(|x| x.id.is_some() && &x.id == id);
    let (mut steps, mut by_id): (Vec<Step>, Vec<Step>) =
        done.into_iter().partition(|s| !in_plan(&s.id));
    for s in std::mem::take(&mut plan.steps) {
        let earlier: Vec<Step> = if s.kind == StepKind::Unchanged {
            let (mine, rest) = by_id.into_iter().partition(|x| x.id == s.id);
            by_id = rest;
            mine
        } else {
            vec![]
        };
        if earlier.is_empty() {
            steps.push(s);
        } else {
            steps.extend(earlier);
        }
    }
    steps.extend(by_id);
    plan.steps = steps;
    plan
}

fn id_of(v: &serde_json::Value) -> Option<String> {
    v.get("id")?.as_str().map(str::to_string)
}

async fn execute<W: WritePort + Sync>(
    writer: &W,
    plan: &Plan,
    out: &mut Progress,
    replied: &(dyn Fn(&serde_json::Value) + Sync),
) -> Result<(), PortError> {
    let writes: Vec<&Step> = plan.writes().collect();
    let mut nested_ids: Vec<String> = Vec::new();
    for (n, s) in writes.iter().enumerate() {
        let mut s = (*s).clone();
        let result = match (s.kind, s.object) {
            (StepKind::CreateLead, _) => writer.create_lead(&s.body).await.map(|lead| {
                replied(&lead);
                s.id = id_of(&lead);
                nested_ids = lead
                    .get("contacts")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(id_of)
                    .collect();
                out.created.extend(s.id.clone());
                out.created.extend(nested_ids.iter().cloned());
                nested_ids.reverse();
            }),
            (StepKind::CreateContact, _) if s.nested => {
                s.id = nested_ids.pop();
                s.lead_id = out
                    .done
                    .iter()
                    .rev()
                    .find(|x| x.kind == StepKind::CreateLead)
                    .and_then(|x| x.id.clone());
                Ok(())
            }
            (StepKind::CreateContact, _) => writer.create_contact(&s.body).await.map(|c| {
                replied(&c);
                s.id = id_of(&c);
                out.created.extend(s.id.clone());
            }),
            (StepKind::UpdateLead, _) => writer
                .update_lead(s.id.as_deref().unwrap_or_default(), &s.body)
                .await
                .map(|r| replied(&r)),
            (StepKind::UpdateContact, Object::Contact) => writer
                .update_contact(s.id.as_deref().unwrap_or_default(), &s.body)
                .await
                .map(|r| replied(&r)),
            _ => Ok(()),
        };
        match result {
            Ok(()) => out.done.push(s),
            Err(e) => {
                if e.kind == PortErrorKind::Interrupted {
                    out.unknown.push(s.clone());
                    // The contact created inside this lead's request shares its fate.
                    if s.kind == StepKind::CreateLead {
                        out.unknown.extend(
                            writes[n + 1..]
                                .iter()
                                .take_while(|x| x.nested)
                                .map(|x| (*x).clone()),
                        );
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}
