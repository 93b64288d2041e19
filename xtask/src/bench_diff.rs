//! `cargo xtask bench diff [--events N] [--planned-events M] [--keep] [--generate DIR]`: the
//! release `closeflow diff`, run on files as users run it, comparing two versions of an
//! instance over a day of traffic. N (100,000) ~740-byte events (identify, one track call in
//! ten) go through a realistic edit of the default mapping: a tighter trigger (free plans no
//! longer match), a new templated description and a changed contact name, so most events
//! differ. Each output format is run in turn (standard output read and counted by the bench,
//! as a pipe to a script would), then the same with plans (`--against sim:`) over the first M
//! (10,000) events. Reported: wall time from start to exit, events/s over it, and peak RSS
//! (the child's `VmHWM`). `--generate DIR` writes the files and stops. Nothing here is a
//! pass/fail test.

use crate::args;
use crate::child::{mb, measure};
use crate::traffic::identify_events;
use anyhow::Result;
use serde_json::{Value, json};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const EVENTS: usize = 100_000;
/// Plans read and grow an in-memory overlay; fewer events keep that part short.
const PLANNED_EVENTS: usize = 10_000;

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

/// Identify events with one track call in ten, as JSON lines.
fn write_traffic(path: &Path, n: usize) -> Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for (i, mut e) in identify_events(n).into_iter().enumerate() {
        if i % 10 == 9 {
            e = json!({"type": "track", "event": "Signed Up", "messageId": e["messageId"], "userId": e["userId"],
                       "properties": {"email": e["traits"]["email"], "plan": e["traits"]["plan"]},
                       "context": e["context"]});
        }
        serde_json::to_writer(&mut out, &e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Half of the companies and every third user (of the planned events) already in Close.
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

struct Files {
    old: PathBuf,
    new: PathBuf,
    events: PathBuf,
    planned: PathBuf,
    snapshot: PathBuf,
    events_bytes: u64,
}

fn generate(dir: &Path, events: usize, planned: usize) -> Result<Files> {
    std::fs::create_dir_all(dir)?;
    let f = Files {
        old: dir.join("old.yaml"),
        new: dir.join("new.yaml"),
        events: dir.join(format!("events-{events}.jsonl")),
        planned: dir.join(format!("events-{planned}.jsonl")),
        snapshot: dir.join("snapshot.json"),
        events_bytes: 0,
    };
    std::fs::write(&f.old, OLD.trim_start())?;
    std::fs::write(&f.new, NEW.trim_start())?;
    std::fs::write(&f.snapshot, snapshot().to_string())?;
    write_traffic(&f.planned, planned)?;
    let events_bytes = write_traffic(&f.events, events)?;
    Ok(Files { events_bytes, ..f })
}

pub fn run(args: &[&str]) -> Result<()> {
    let events = args::number(args, "--events", EVENTS)?;
    let planned = args::number(args, "--planned-events", PLANNED_EVENTS)?;
    if let Some(dir) = args::dir(args, "--generate")? {
        let f = generate(&dir, events, planned)?;
        println!(
            "written to {}: old.yaml, new.yaml, {} ({:.1} MB), {}, snapshot.json",
            dir.display(),
            f.events.display(),
            mb(f.events_bytes),
            f.planned.display()
        );
        return Ok(());
    }
    let bin = crate::release_closeflow()?;
    let dir = std::env::temp_dir().join(format!("closeflow-bench-diff-{}", std::process::id()));
    let f = generate(&dir, events, planned)?;
    println!(
        "diff benchmark: release `closeflow diff --old old.yaml --new new.yaml EVENTS.jsonl --format F` on {events} events ({:.1} MB, ~{} bytes each, 9 identify : 1 track), standard output read by the bench",
        mb(f.events_bytes),
        f.events_bytes / events.max(1) as u64
    );
    let runs: [(&Path, usize, bool); 2] = [(&f.events, events, false), (&f.planned, planned, true)];
    for (file, n, plans) in runs {
        if plans {
            println!(
                "  with plans (`--against sim:snapshot.json`, 250 leads), the first {n} events:"
            );
        }
        for format in ["human", "json", "summary"] {
            let mut a: Vec<std::ffi::OsString> = vec![
                "diff".into(),
                "--old".into(),
                f.old.clone().into(),
                "--new".into(),
                f.new.clone().into(),
                "--format".into(),
                format.into(),
            ];
            if plans {
                a.push("--against".into());
                a.push(format!("sim:{}", f.snapshot.display()).into());
            }
            a.push(file.into());
            let m = measure(&bin, &a)?;
            println!(
                "  --format {format:<8} {n:>7} events: {:>6.2} s, {:>8.0} events/s, peak RSS {:>7.1} MB, output {:>7.1} MB",
                m.secs,
                n as f64 / m.secs,
                mb(m.peak),
                mb(m.bytes)
            );
        }
    }
    if args.contains(&"--keep") {
        println!("  generated files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
