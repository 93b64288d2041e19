//! `cargo xtask bench diff`: how fast `closeflow diff` compares two versions of an instance over
//! a day of traffic. 100,000 ~1 KB events (identify, with some track calls) go through a
//! realistic edit of the default mapping: a tighter trigger (free plans no longer match), a new
//! templated description and a changed contact name, so most events differ.
//! Figures are printed; nothing here is a pass/fail test.

use crate::bench::{identify_events, per_sec};
use anyhow::{Context, Result};
use closeflow_close::diff::{Differ, Review};
use closeflow_close::schema;
use closeflow_close::state::State;
use closeflow_mapping::events::{self, Entry};
use closeflow_mapping::{Instance, instance};
use serde_json::{Value, json};
use std::time::Instant;

const EVENTS: usize = 100_000;
/// Plans read and grow an in-memory overlay; fewer events keep that part short.
const PLANNED_EVENTS: usize = 5_000;

const OLD: &str = r#"
name: bench
settings:
  api_key: bench
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: Identify → contact and lead
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
    fields:
      contact_name: "{{traits.first_name}} {{traits.last_name}}"
      lead_custom_fields:
        cf_plan: $.traits.plan
  - name: Signed up
    trigger: type = "track" and event = "Signed Up"
    action: create_or_update_contact_and_lead
    fields:
      contact_email: $.properties.email
"#;

const NEW: &str = r#"
name: bench
settings:
  api_key: bench
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: Identify → contact and lead
    trigger: type = "identify" and traits.plan != "free"
    action: create_or_update_contact_and_lead
    fields:
      contact_name: "{{traits.name}}"
      lead_description: "Plan: {{traits.plan}}"
      lead_custom_fields:
        cf_plan: $.traits.plan
  - name: Signups
    trigger: type = "track" and event = "Signed Up"
    action: create_or_update_contact_and_lead
    fields:
      contact_email: $.properties.email
"#;

fn load(text: &str) -> Result<Instance> {
    let env = |_: &str| None;
    let (inst, diags) = instance::load("bench.yaml", text, &schema::destination(), &env);
    inst.with_context(|| format!("bench instance invalid: {diags:?}"))
}

/// Identify events with one track call in ten, as JSON lines.
fn traffic(n: usize) -> String {
    let mut out = String::new();
    for (i, mut e) in identify_events(n).into_iter().enumerate() {
        if i % 10 == 9 {
            e = json!({"type": "track", "event": "Signed Up", "messageId": e["messageId"], "userId": e["userId"],
                       "properties": {"email": e["traits"]["email"], "plan": e["traits"]["plan"]},
                       "context": e["context"]});
        }
        out.push_str(&e.to_string());
        out.push('\n');
    }
    out
}

/// Half of the companies and every third user already in Close.
fn snapshot() -> Value {
    let leads: Vec<Value> = (0..250)
        .map(|c| {
            let contacts: Vec<Value> = (0..PLANNED_EVENTS)
                .filter(|i| i % 500 == c && i % 3 == 0)
                .map(|i| json!({"id": format!("cont_{i}"), "name": format!("Person {i}"), "title": "Engineer",
                                "emails": [{"email": format!("person{i}@example{}.com", i % 97)}],
                                "custom.cf_user": format!("user_{i}")}))
                .collect();
            json!({"id": format!("lead_{c}"), "name": format!("Company {c}"), "custom.cf_company": format!("c_{c}"),
                   "custom.cf_plan": "free", "contacts": contacts})
        })
        .collect();
    json!({ "leads": leads })
}

pub fn run() -> Result<()> {
    let (old, new) = (vec![load(OLD)?], vec![load(NEW)?]);
    let text = traffic(EVENTS);
    println!(
        "diff benchmark: {EVENTS} events (~{} bytes each, 9 identify : 1 track), the default mapping against an edit of it",
        text.len() / EVENTS
    );

    // Once untimed: the first pass over this much memory pays for page faults the others don't.
    drop(events::parse_stream(&text));

    // The floor: reading the events (the reader `dry-run` and `diff` share), and freeing them.
    let t = Instant::now();
    drop(std::hint::black_box(events::parse_stream(&text)));
    let parse_only = per_sec(EVENTS, t.elapsed().as_secs_f64());

    // What `closeflow diff` does without --against: read, compare, review, free.
    let differ = Differ::new(&old, &new);
    let t = Instant::now();
    let entries = events::parse_stream(&text);
    let mut review = Review::new(3);
    for (i, e) in entries.iter().enumerate() {
        review.add(&differ.event(i, e));
    }
    let summary = review.finish();
    drop(entries);
    let end_to_end = per_sec(EVENTS, t.elapsed().as_secs_f64());

    // The same, one line at a time through the same reader (as a streaming reader would: each
    // event parsed, compared and freed while it is still in cache).
    let t = Instant::now();
    let mut review = Review::new(3);
    let mut i = 0;
    for line in text.lines() {
        for e in events::parse_stream(line) {
            review.add(&differ.event(i, &e));
            i += 1;
        }
    }
    std::hint::black_box(review.finish());
    let streamed = per_sec(EVENTS, t.elapsed().as_secs_f64());

    let entries = events::parse_stream(&text);
    let t = Instant::now();
    let mut review = Review::new(3);
    for (i, e) in entries.iter().enumerate() {
        review.add(&differ.event(i, e));
    }
    std::hint::black_box(review.finish());
    let compare_only = per_sec(EVENTS, t.elapsed().as_secs_f64());

    // With --format json every event diff is also serialised.
    let t = Instant::now();
    let mut bytes = 0usize;
    for (i, e) in entries.iter().enumerate() {
        bytes += serde_json::to_string(&differ.event(i, e))?.len();
    }
    std::hint::black_box(bytes);
    let with_json = per_sec(EVENTS, t.elapsed().as_secs_f64());

    // The baseline: one version's verdicts and payloads, as a dry-run prepares them.
    let t = Instant::now();
    let mut n = 0usize;
    for (i, e) in entries.iter().enumerate() {
        n += closeflow_close::run::prepare(&new[0], i, e)
            .0
            .mappings
            .len();
    }
    std::hint::black_box(n);
    let one_version = per_sec(EVENTS, t.elapsed().as_secs_f64());

    println!(
        "  changed {} of {} events ({} newly matched, {} no longer matched, {} payload changes)",
        summary.changed,
        summary.events,
        summary.newly_matched,
        summary.no_longer_matched,
        summary.payload_changed
    );
    println!("  reading the events alone (JSON lines)  : {parse_only:>10.0} events/s");
    println!(
        "  trigger + payload diff, JSON lines in  : {streamed:>10.0} events/s   (read line by line as `closeflow diff` does, both versions, compare, review)"
    );
    println!("  … the same, the whole file read first  : {end_to_end:>10.0} events/s");
    println!("  trigger + payload diff, parsed events  : {compare_only:>10.0} events/s");
    println!("  … and each event diff as JSON          : {with_json:>10.0} events/s");
    println!(
        "  one version prepared (dry-run's share) : {one_version:>10.0} events/s   (diff / this = {:.2})",
        compare_only / one_version
    );

    // Plans: each version dry-run over its own overlay on a snapshot, against one dry-run. The
    // snapshot is read as `closeflow diff --against sim:` reads it: indexed by both versions'
    // lookup keys.
    let keys: Vec<_> = old
        .iter()
        .chain(&new)
        .map(closeflow_close::run::key_config)
        .collect();
    let source =
        closeflow_close::snapshot::Snapshot::read(snapshot().to_string().as_bytes(), &keys)
            .map_err(anyhow::Error::msg)?;
    let planned: Vec<Entry> = entries.into_iter().take(PLANNED_EVENTS).collect();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let t = Instant::now();
    let mut differ = Differ::new(&old, &new);
    let mut review = Review::new(3);
    for (i, e) in planned.iter().enumerate() {
        review.add(&rt.block_on(differ.event_planned(&[&source], i, e)));
    }
    let plans = review.finish();
    let diff_plans = per_sec(PLANNED_EVENTS, t.elapsed().as_secs_f64());
    // The baseline: each version dry-run on its own, as two `closeflow dry-run`s would.
    let t = Instant::now();
    for inst in [&old[0], &new[0]] {
        let mut overlay = State::default();
        for (i, e) in planned.iter().enumerate() {
            let r = rt.block_on(closeflow_close::run::dry_run(
                inst,
                &source,
                &mut overlay,
                i,
                e,
            ));
            std::hint::black_box(r);
        }
    }
    let dry_runs = per_sec(PLANNED_EVENTS, t.elapsed().as_secs_f64());
    println!(
        "  with plans, first {PLANNED_EVENTS} events          : {diff_plans:>10.0} events/s   ({} plans changed)",
        plans.plan_changed
    );
    println!(
        "  two snapshot dry-runs (old, new)       : {dry_runs:>10.0} events/s   (diff / this = {:.2})",
        diff_plans / dry_runs
    );
    Ok(())
}
