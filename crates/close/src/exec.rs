//! Running an event: gather the lookups, plan, then (live only) write. The dry-run and the live
//! run share `gather` and `plan`; only the live path holds a [`Writer`].

use crate::client::{CloseError, Reader, Writer};
use crate::lookup::{self, Found};
use crate::model::KeyConfig;
use crate::payload::Payload;
use crate::plan::{self, Object, Plan, StepKind};
use crate::state::State;

/// Something Close records can be read from: the live API, or a snapshot.
pub trait Source {
    fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[lookup::LookupRequest],
    ) -> impl std::future::Future<Output = Result<Found, CloseError>> + Send;
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
/// run would have created or changed. Reads only.
pub async fn dry_run<S: Source>(
    source: &S,
    overlay: &mut State,
    cfg: &KeyConfig,
    p: &Payload,
) -> Result<Plan, CloseError> {
    let found = gather(source, cfg, p).await?;
    overlay.absorb(&found);
    let seen = overlay.lookup(&lookup::requests(cfg, p));
    let plan = plan::plan(cfg, p, &seen);
    overlay.apply(&plan);
    Ok(plan)
}

/// What a live run did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub plan: Plan,
    /// Ids Close gave to created records, in plan order.
    pub created: Vec<String>,
}

/// Event-level attempts after an interrupted create: each one looks up and plans afresh.
const REPLANS: u32 = 3;

/// Plans one event against live Close and applies the plan's writes in order. A create whose
/// reply was lost is never re-sent blindly: the event is looked up and planned again, which
/// converges whether or not the create happened.
pub async fn apply(writer: &Writer, cfg: &KeyConfig, p: &Payload) -> Result<Applied, CloseError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_once(writer, cfg, p).await {
            Err(CloseError::Interrupted { .. }) if attempt < REPLANS => {}
            other => return other,
        }
    }
}

async fn apply_once(writer: &Writer, cfg: &KeyConfig, p: &Payload) -> Result<Applied, CloseError> {
    let found = gather(writer.reader(), cfg, p).await?;
    let plan = plan::plan(cfg, p, &found);
    let mut created = Vec::new();
    for s in plan.writes() {
        match (s.kind, s.object) {
            (StepKind::CreateLead, _) => {
                let lead = writer.create_lead(&s.body).await?;
                created.extend(lead.get("id").and_then(|v| v.as_str()).map(str::to_string));
                if let Some(cs) = lead.get("contacts").and_then(|c| c.as_array()) {
                    created.extend(
                        cs.iter()
                            .filter_map(|c| c.get("id")?.as_str().map(str::to_string)),
                    );
                }
            }
            (StepKind::CreateContact, _) if s.nested => {}
            (StepKind::CreateContact, _) => {
                let c = writer.create_contact(&s.body).await?;
                created.extend(c.get("id").and_then(|v| v.as_str()).map(str::to_string));
            }
            (StepKind::UpdateLead, _) => {
                writer
                    .update_lead(s.id.as_deref().unwrap_or_default(), &s.body)
                    .await?;
            }
            (StepKind::UpdateContact, Object::Contact) => {
                writer
                    .update_contact(s.id.as_deref().unwrap_or_default(), &s.body)
                    .await?;
            }
            _ => {}
        }
    }
    Ok(Applied { plan, created })
}
