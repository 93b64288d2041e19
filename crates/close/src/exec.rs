//! Running an event: gather the lookups, plan, then (live only) write. The dry-run and the live
//! run share `gather` and `plan`; only the live path holds a [`Writer`].

use crate::client::{CloseError, Reader, Writer};
use crate::lookup::{self, Found};
use crate::model::KeyConfig;
use crate::overlay::Overlay;
use crate::payload::Payload;
use crate::plan::{self, Object, Plan, Step, StepKind};
use crate::state::State;

/// Something Close records can be read from: the live API, or a snapshot.
pub trait Source {
    fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[lookup::LookupRequest],
    ) -> impl std::future::Future<Output = Result<Found, CloseError>> + Send;

    /// A live run wrote and Close replied with this record (a source that caches refreshes it).
    fn written(&self, _reply: &serde_json::Value) {}

    /// A live run failed for an event with these lookups, which had found these records (a
    /// source that caches forgets both).
    fn forget(&self, _reqs: &[lookup::LookupRequest], _found: &[String]) {}

    /// A counter that moves whenever an event releases records it held (see [`Source::hold`]).
    fn epoch(&self) -> u64 {
        0
    }

    /// For live runs that share a source concurrently (the server's workers): waits until no
    /// other event holds any of these records, then holds them until the [`Hold`] is dropped,
    /// so two events that reach one record through different keys never write it at once.
    /// `stale` says another event released one of them after `since`: look up again.
    fn hold(
        &self,
        _ids: Vec<String>,
        _since: u64,
    ) -> impl std::future::Future<Output = Hold> + Send {
        std::future::ready(Hold::default())
    }
}

/// Lets go of held records, given the ids among them the event wrote.
pub type Release = Box<dyn FnOnce(&[String]) + Send>;

/// Records held by one event, released on drop with the ids it wrote.
#[derive(Default)]
pub struct Hold {
    /// Not held: another event wrote one of the records since the lookup; look up again.
    pub stale: bool,
    written: Vec<String>,
    release: Option<Release>,
}

impl Hold {
    pub fn new(release: Release) -> Hold {
        Hold {
            stale: false,
            written: Vec::new(),
            release: Some(release),
        }
    }
    pub fn stale() -> Hold {
        Hold {
            stale: true,
            written: Vec::new(),
            release: None,
        }
    }
    /// Close changed this record (so others that read it before must look again).
    pub fn wrote(&mut self, id: &str) {
        self.written.push(id.to_string());
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f(&self.written);
        }
    }
}

/// The records a plan over `found` may write: what the lookups returned.
fn found_ids(found: &Found) -> Vec<String> {
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

impl Source for Reader {
    async fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[lookup::LookupRequest],
    ) -> Result<Found, CloseError> {
        Reader::find(self, cfg, p, reqs).await
    }
}

impl Source for State {
    async fn find(
        &self,
        _: &KeyConfig,
        _: &Payload,
        reqs: &[lookup::LookupRequest],
    ) -> Result<Found, CloseError> {
        Ok(self.lookup(reqs))
    }
}

impl Source for crate::snapshot::Snapshot {
    async fn find(
        &self,
        _: &KeyConfig,
        _: &Payload,
        reqs: &[lookup::LookupRequest],
    ) -> Result<Found, CloseError> {
        Ok(self.lookup(reqs))
    }
}

/// Lookups for one event, from any source.
pub async fn gather<S: Source>(
    source: &S,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Found, CloseError> {
    let reqs = lookup::requests(cfg, p);
    if reqs.is_empty() {
        return Ok(Found::default());
    }
    source.find(cfg, p, &reqs).await
}

/// Plans one event of a dry-run over `overlay`, which accumulates what earlier events of the
/// run would have created or changed (and only that). Reads only.
pub async fn dry_run<S: Source>(
    source: &S,
    overlay: &mut Overlay,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Plan, CloseError> {
    let found = gather(source, cfg, p).await?;
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

/// Plans one event against live Close and applies the plan's writes in order. A create whose
/// reply was lost is never re-sent blindly: the event is looked up and planned again, which
/// converges whether or not the create happened; the result reports what was written.
pub async fn apply(writer: &Writer, cfg: &KeyConfig, p: &Payload) -> Result<Applied, CloseError> {
    apply_via(writer, writer.reader(), cfg, p).await
}

/// [`apply`], with the lookups read through `source` (the live run's coalescing cache); every
/// reply Close gives a write goes back to it, and a failure makes it forget the event's keys.
pub async fn apply_via<S: Source + Sync>(
    writer: &Writer,
    source: &S,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Applied, CloseError> {
    let mut so_far = Progress::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Look up, hold what was found; if another event wrote any of it meanwhile, the
        // lookups are stale: again (a cached source answers that from its refreshed cache).
        let (found, mut held) = loop {
            let since = source.epoch();
            let found = match gather(source, cfg, p).await {
                Ok(f) => f,
                Err(e) => {
                    source.forget(&lookup::requests(cfg, p), &[]);
                    return Err(e);
                }
            };
            let held = source.hold(found_ids(&found), since).await;
            if !held.stale {
                break (found, held);
            }
        };
        let plan = plan::plan(cfg, p, &found);
        resolve_unknown(&mut so_far, &plan);
        let mut this = Progress::default();
        let result = execute(writer, &plan, &mut this, &|reply| source.written(reply)).await;
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
            Err(CloseError::Interrupted { .. }) if attempt < REPLANS => {
                so_far.done.append(&mut this.done);
                so_far.unknown = this.unknown;
                // Whether the create happened only Close can tell: no cached answer.
                source.forget(&lookup::requests(cfg, p), &found_ids(&found));
            }
            Err(e) => {
                source.forget(&lookup::requests(cfg, p), &found_ids(&found));
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

async fn execute(
    writer: &Writer,
    plan: &Plan,
    out: &mut Progress,
    replied: &(dyn Fn(&serde_json::Value) + Sync),
) -> Result<(), CloseError> {
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
                if matches!(e, CloseError::Interrupted { .. }) {
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
