//! Reconciliation: what the simulator holds, what the queue recorded and what the metrics say,
//! against what the workload's events should produce.
//!
//! - every event has a final outcome in the queue file (applied, skipped or dead-lettered with
//!   a reason); one without is **lost**;
//! - the effect of every event that was not dead-lettered is visible in the simulator: each
//!   person's contact, once, under their company's lead, with the title of their last event;
//!   each company's lead, once, with the plan of its last group call; a missing or wrong
//!   effect is **lost** too;
//! - a second lead for a company or a second contact for a person (or a record no event asked
//!   for) is a **duplicate**;
//! - the metrics add up: accepted + replayed = applied + skipped + dead-lettered + queued.

use super::workload::{Effect, Workload, company_id, company_name};
use crate::procs::{contacts, leads, metric};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// One event's row in the queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// 0 queued, 1 settled (applied or skipped), 2 dead-lettered.
    pub state: i64,
    pub outcome: Option<String>,
}

/// Every event of `instance` in the queue file, by `messageId` (read-only; the server may be
/// running: WAL readers never block it).
pub fn read_queue(db: &Path, instance: &str) -> Result<HashMap<String, Recorded>, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let mut st = conn
        .prepare("SELECT message_id, state, outcome FROM events WHERE instance = ?1")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([instance], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Recorded {
                    state: r.get(1)?,
                    outcome: r.get(2)?,
                },
            ))
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// The soak's table and every problem found.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub events: usize,
    pub accepted: u64,
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub throttled: u64,
    /// Close calls that failed (503, or the connection cut), over every server process: the
    /// injected faults as the server met them (most are retried within the call).
    pub failed_calls: u64,
    pub duplicate_requests: u64,
    pub kills: usize,
    pub problems: Vec<String>,
}

impl Table {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.lost == 0 && self.duplicates == 0
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let rows: [(&str, String, &str); 11] = [
            (
                "events sent",
                self.events.to_string(),
                "the seeded workload",
            ),
            (
                "accepted",
                self.accepted.to_string(),
                "stored durably and acknowledged (distinct messageIds)",
            ),
            ("applied", self.applied.to_string(), "planned and written"),
            (
                "skipped",
                self.skipped.to_string(),
                "nothing to do (no mapping matched)",
            ),
            (
                "dead-lettered",
                self.dead_lettered.to_string(),
                "given up, kept with a reason (the poison events)",
            ),
            (
                "lost",
                self.lost.to_string(),
                "no final outcome, or its effect not visible (must be 0)",
            ),
            (
                "duplicates",
                self.duplicates.to_string(),
                "extra leads or contacts (must be 0)",
            ),
            (
                "retries",
                self.retries.to_string(),
                "failed delivery attempts tried again",
            ),
            ("429s", self.throttled.to_string(), "throttled Close calls"),
            (
                "failed calls",
                self.failed_calls.to_string(),
                "Close calls answered 503 or cut off (the injected faults)",
            ),
            (
                "kill -9",
                self.kills.to_string(),
                "server killed and restarted mid-run",
            ),
        ];
        let _ = writeln!(o, "{:<14} {:>8}  ", "", "");
        for (name, value, what) in rows {
            let _ = writeln!(o, "{name:<14} {value:>8}  {what}");
        }
        let _ = writeln!(
            o,
            "({} requests were re-sent after a failure and answered as duplicates)",
            self.duplicate_requests
        );
        for p in &self.problems {
            let _ = writeln!(o, "PROBLEM: {p}");
        }
        o
    }
}

/// What the simulator should hold, from the events that were not dead-lettered.
struct Expected {
    /// Per person: the title of their last event, when any of their events counts.
    titles: BTreeMap<usize, String>,
    /// Per company that some event touched: the plan of its last group call, if any.
    plans: BTreeMap<usize, Option<String>>,
}

fn expected(w: &Workload, dead: &dyn Fn(&str) -> bool) -> Expected {
    let mut e = Expected {
        titles: BTreeMap::new(),
        plans: BTreeMap::new(),
    };
    // Lane order is queue order for everything that touches one person or one company.
    for lane in &w.lanes {
        for &i in lane {
            let ev = &w.events[i];
            if dead(&ev.message_id) {
                continue;
            }
            match &ev.effect {
                Effect::Identify { person, title } => {
                    e.titles.insert(*person, title.clone());
                    e.plans.entry(w.people[*person].company).or_insert(None);
                }
                Effect::SignUp { person } => {
                    if e.titles.contains_key(person) {
                        e.titles.insert(*person, "Signed up".into());
                    }
                }
                Effect::Group { company, plan } => {
                    e.plans.insert(*company, Some(plan.clone()));
                }
                Effect::Noise | Effect::Poison => {}
            }
        }
    }
    e
}

/// Reconciles one finished run. `throttled` is the 429s counted over every server process
/// (the in-memory counter restarts with the process).
pub fn reconcile(
    w: &Workload,
    instance: &str,
    queue: &HashMap<String, Recorded>,
    sim_state: &Value,
    metrics: &str,
    throttled: u64,
) -> Table {
    let label = format!("instance=\"{instance}\"");
    let mut t = Table {
        events: w.events.len(),
        accepted: metric(metrics, "closeflow_events_accepted_total", &label) as u64,
        applied: metric(metrics, "closeflow_events_applied_total", &label) as u64,
        skipped: metric(metrics, "closeflow_events_skipped_total", &label) as u64,
        dead_lettered: metric(metrics, "closeflow_events_dead_lettered_total", &label) as u64,
        retries: metric(metrics, "closeflow_events_retried_total", &label) as u64,
        duplicate_requests: metric(metrics, "closeflow_events_duplicate_total", &label) as u64,
        throttled,
        ..Table::default()
    };
    let replayed = metric(metrics, "closeflow_events_replayed_total", &label) as u64;
    let queued = metric(metrics, "closeflow_queue_depth", &label) as u64;
    if t.accepted + replayed != t.applied + t.skipped + t.dead_lettered + queued {
        t.problems.push(format!(
            "the metrics do not add up: accepted {} + replayed {replayed} != applied {} + skipped {} + dead-lettered {} + queued {queued}",
            t.accepted, t.applied, t.skipped, t.dead_lettered
        ));
    }
    if t.accepted != w.events.len() as u64 {
        t.problems.push(format!(
            "{} events were sent but {} accepted",
            w.events.len(),
            t.accepted
        ));
    }

    // Every event: a final outcome in the queue, the one its kind calls for.
    let mut unexpected_dead = 0;
    for ev in &w.events {
        let Some(r) = queue.get(&ev.message_id) else {
            t.lost += 1;
            t.problems
                .push(format!("{}: not in the queue file", ev.message_id));
            continue;
        };
        match (r.state, &ev.effect) {
            (0, _) => {
                t.lost += 1;
                t.problems
                    .push(format!("{}: still queued, never settled", ev.message_id));
            }
            (2, Effect::Poison) if r.outcome.as_deref() == Some("invalid_payload") => {}
            (2, _) if r.outcome.as_deref().is_none_or(str::is_empty) => {
                t.lost += 1;
                t.problems
                    .push(format!("{}: dead-lettered without a reason", ev.message_id));
            }
            (2, _) => unexpected_dead += 1,
            (_, Effect::Poison) => t.problems.push(format!(
                "{}: a poison event was {:?}, not dead-lettered",
                ev.message_id, r.outcome
            )),
            (_, Effect::Noise) if r.outcome.as_deref() != Some("skipped: not_matched") => {
                t.problems.push(format!(
                    "{}: an event no mapping matches was {:?}",
                    ev.message_id, r.outcome
                ));
            }
            _ => {}
        }
    }
    if unexpected_dead > 0 {
        t.problems.push(format!(
            "{unexpected_dead} events that could succeed were dead-lettered (kept with a reason, but the soak's retry policy should never give up on them)"
        ));
    }

    // The effects, in the simulator.
    let dead = |m: &str| queue.get(m).is_some_and(|r| r.state == 2);
    let exp = expected(w, &dead);
    let mut lead_by_company: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in leads(sim_state) {
        let c = l["custom.cf_company"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        lead_by_company.entry(c).or_default().push(l);
    }
    let mut contact_by_user: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in contacts(sim_state) {
        let u = c["custom.cf_user"].as_str().unwrap_or_default().to_string();
        contact_by_user.entry(u).or_default().push(c);
    }
    for (company, plan) in &exp.plans {
        let id = company_id(*company);
        let found = lead_by_company.remove(&id).unwrap_or_default();
        let Some(lead) = found.first() else {
            t.lost += 1;
            t.problems.push(format!("no lead for company {id}"));
            continue;
        };
        t.duplicates += found.len() as u64 - 1;
        if found.len() > 1 {
            t.problems
                .push(format!("{} leads for company {id}", found.len()));
        }
        let have = lead["custom.cf_plan"].as_str().map(str::to_string);
        if have != *plan || lead["name"] != company_name(*company) {
            t.lost += 1;
            t.problems.push(format!(
                "lead of {id}: plan {have:?} and name {}, expected plan {plan:?}",
                lead["name"]
            ));
        }
    }
    for (user, found) in &lead_by_company {
        t.duplicates += found.len() as u64;
        t.problems.push(format!(
            "{} leads no event asked for (company {user:?})",
            found.len()
        ));
    }
    for (person, title) in &exp.titles {
        let p = &w.people[*person];
        let found = contact_by_user.remove(&p.user).unwrap_or_default();
        let Some(c) = found.first() else {
            t.lost += 1;
            t.problems.push(format!("no contact for {}", p.user));
            continue;
        };
        t.duplicates += found.len() as u64 - 1;
        if found.len() > 1 {
            t.problems
                .push(format!("{} contacts for {}", found.len(), p.user));
        }
        let lead_company = leads(sim_state)
            .into_iter()
            .find(|l| l["id"] == c["lead_id"])
            .and_then(|l| l["custom.cf_company"].as_str().map(str::to_string));
        let email = c["emails"][0]["email"].as_str().unwrap_or_default();
        if c["title"] != title.as_str()
            || email != p.email
            || lead_company.as_deref() != Some(company_id(p.company).as_str())
        {
            t.lost += 1;
            t.problems.push(format!(
                "contact of {}: title {} email {email} under {lead_company:?}; expected {title:?}, {}, under {}",
                p.user,
                c["title"],
                p.email,
                company_id(p.company)
            ));
        }
    }
    for (user, found) in &contact_by_user {
        t.duplicates += found.len() as u64;
        t.problems.push(format!(
            "{} contacts no event asked for (user {user:?})",
            found.len()
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::workload::generate;
    use super::*;
    use serde_json::json;

    /// A simulator state built from the expectation itself reconciles cleanly; a duplicate
    /// contact, a stale title or an unsettled event each show up.
    #[test]
    fn each_kind_of_damage_is_caught() {
        let w = generate(300, 3);
        let mut queue = HashMap::new();
        for e in &w.events {
            let (state, outcome) = match e.effect {
                Effect::Poison => (2, "invalid_payload"),
                Effect::Noise => (1, "skipped: not_matched"),
                _ => (1, "applied"),
            };
            queue.insert(
                e.message_id.clone(),
                Recorded {
                    state,
                    outcome: Some(outcome.into()),
                },
            );
        }
        let exp = expected(&w, &|m| queue.get(m).is_some_and(|r| r.state == 2));
        let mut lead_list = Vec::new();
        for (c, plan) in &exp.plans {
            let mut l = json!({"id": format!("lead_{c}"), "name": company_name(*c),
                               "custom.cf_company": company_id(*c), "contacts": []});
            if let Some(p) = plan {
                l["custom.cf_plan"] = json!(p);
            }
            lead_list.push(l);
        }
        for (p, title) in &exp.titles {
            let person = &w.people[*p];
            let c = json!({"id": format!("cont_{p}"), "lead_id": format!("lead_{}", person.company),
                           "title": title, "emails": [{"email": person.email}],
                           "custom.cf_user": person.user});
            let lead = lead_list
                .iter_mut()
                .find(|l| l["custom.cf_company"] == company_id(person.company))
                .unwrap();
            lead["contacts"].as_array_mut().unwrap().push(c);
        }
        let state = json!({"leads": lead_list.clone()});
        let n = w.events.len();
        let poison = w
            .events
            .iter()
            .filter(|e| e.effect == Effect::Poison)
            .count();
        let noise = w
            .events
            .iter()
            .filter(|e| e.effect == Effect::Noise)
            .count();
        let metrics = format!(
            "closeflow_events_accepted_total{{instance=\"soak\"}} {n}\n\
             closeflow_events_applied_total{{instance=\"soak\"}} {}\n\
             closeflow_events_skipped_total{{instance=\"soak\",reason=\"not_matched\"}} {noise}\n\
             closeflow_events_dead_lettered_total{{instance=\"soak\",reason=\"invalid_payload\"}} {poison}\n\
             closeflow_queue_depth{{instance=\"soak\"}} 0\n",
            n - poison - noise
        );
        let t = reconcile(&w, "soak", &queue, &state, &metrics, 0);
        assert!(t.ok(), "{}", t.render());

        // A second contact for somebody.
        let with_contact = lead_list
            .iter()
            .position(|l| !l["contacts"].as_array().unwrap().is_empty())
            .unwrap();
        let mut dup = state.clone();
        let extra = dup["leads"][with_contact]["contacts"][0].clone();
        dup["leads"][with_contact]["contacts"]
            .as_array_mut()
            .unwrap()
            .push(extra);
        let t = reconcile(&w, "soak", &queue, &dup, &metrics, 0);
        assert_eq!((t.duplicates, t.lost), (1, 0), "{}", t.render());

        // A stale title: the last update's effect is not visible.
        let mut stale = state.clone();
        stale["leads"][with_contact]["contacts"][0]["title"] = json!("something old");
        let t = reconcile(&w, "soak", &queue, &stale, &metrics, 0);
        assert_eq!((t.duplicates, t.lost), (0, 1), "{}", t.render());

        // An event never settled, and the counters short by one.
        let mut q = queue.clone();
        let first = &w.events[0].message_id;
        q.get_mut(first).unwrap().state = 0;
        let t = reconcile(&w, "soak", &q, &state, &metrics, 0);
        assert!(t.lost >= 1 && !t.ok(), "{}", t.render());
        let short = metrics.replace(
            "queue_depth{instance=\"soak\"} 0",
            "queue_depth{instance=\"soak\"} 1",
        );
        let t = reconcile(&w, "soak", &queue, &state, &short, 0);
        assert!(
            t.problems.iter().any(|p| p.contains("do not add up")),
            "{}",
            t.render()
        );
    }
}
