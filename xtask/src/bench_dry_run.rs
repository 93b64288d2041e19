//! `cargo xtask bench dry-run [--leads N] [--events M] [--keep] [--generate DIR]`: the release
//! `closeflow dry-run --against sim:` over a generated snapshot of N leads (10,000; each with
//! one or two contacts, custom fields on both) and M identify events (10,000), run on files as
//! users run it. Two mixes of events:
//! - **updates**: half about people in the snapshot, each with their own company, so they
//!   update an existing lead (name, plan) and contact (title, last seen); half about new
//!   people (one in four of a company in the snapshot, the others of a few new companies);
//! - **creates**: as before this bench was fixed, the known people get a random company of the
//!   snapshot, so nearly every event creates a contact.
//!
//! Reported per run: wall time, peak RSS (the child's `VmHWM`, sampled from /proc), and
//! events/s after loading (from the first event's output line to the end): the base size in
//! each output format, then the events, the snapshot and both grown ten times (JSON lines
//! out). `--generate DIR` writes the files and stops. Nothing here is a pass/fail test.

use crate::args;
use crate::child::{mb, measure};
use anyhow::Result;
use std::io::{BufWriter, Write};
use std::path::Path;

const INSTANCE: &str = r#"name: bench
settings:
  api_key: bench
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: people
    action: create_or_update_contact_and_lead
    fields:
      contact_name: "{{traits.first_name}} {{traits.last_name}}"
      lead_custom_fields:
        cf_plan: $.traits.plan
      contact_custom_fields:
        cf_seen: $.timestamp
"#;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn write_snapshot(path: &Path, leads: usize) -> Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    write!(
        w,
        r#"{{"api_keys": ["bench"], "custom_fields": {{"lead": [{{"id": "cf_company", "name": "Company ID", "type": "text"}}, {{"id": "cf_plan", "name": "Plan", "type": "text"}}], "contact": [{{"id": "cf_user", "name": "User ID", "type": "text"}}, {{"id": "cf_seen", "name": "Last seen", "type": "datetime"}}]}}, "lead_statuses": [{{"id": "stat_potential", "label": "Potential"}}], "leads": ["#
    )?;
    for i in 0..leads {
        if i > 0 {
            w.write_all(b",\n")?;
        }
        let contact = |j: usize| {
            format!(
                r#"{{"id": "cont_{i}_{j}", "name": "Person {i} {j}", "title": "Engineer", "date_created": "2025-01-01T00:00:00+00:00", "emails": [{{"email": "person{i}.{j}@example{}.com", "type": "office"}}], "phones": [{{"phone": "+1 555 {:04}", "type": "office"}}], "urls": [], "custom.cf_user": "u_{i}_{j}", "custom.cf_seen": "2025-06-01T00:00:00+00:00"}}"#,
                i % 97,
                i % 10_000
            )
        };
        let contacts = if i % 4 == 0 {
            format!("{}, {}", contact(0), contact(1))
        } else {
            contact(0)
        };
        write!(
            w,
            r#"{{"id": "lead_{i}", "name": "Company {i}", "description": "", "status_id": "stat_potential", "date_created": "2025-01-01T00:00:00+00:00", "custom.cf_company": "c_{i}", "custom.cf_plan": "free", "contacts": [{contacts}]}}"#
        )?;
    }
    w.write_all(b"]}\n")?;
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Known people with their own company: updates of existing records.
    Updates,
    /// Known people with a random company: a contact created under another lead.
    Creates,
}

fn write_events(path: &Path, events: usize, leads: usize, mix: Mix) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in 0..events {
        // Half about people in the snapshot, half about new people (of a few new companies).
        // New people are named apart, so that they are new in a larger snapshot too.
        let known = rng.below(2) == 0 && leads > 0;
        let (i, dom, own) = if known {
            let k = rng.below(leads);
            (k.to_string(), k % 97, Some(k))
        } else {
            (format!("new{}", rng.below(events.max(1))), 0, None)
        };
        let company = if let (Some(k), Mix::Updates) = (own, mix) {
            format!("c_{k}")
        } else if known || rng.below(4) == 0 {
            format!("c_{}", rng.below(leads.max(1)))
        } else {
            format!("c_new_{}", rng.below(1 + events / 20))
        };
        writeln!(
            w,
            r#"{{"type": "identify", "messageId": "m{n}", "userId": "u_{i}_0", "timestamp": "2026-11-30T06:13:48.000Z", "traits": {{"email": "person{i}.0@example{}.com", "first_name": "Person", "last_name": "{i} 0", "plan": "{}", "title": "CTO", "company": {{"id": "{company}", "name": "Company"}}}}}}"#,
            dom,
            ["free", "pro"][rng.below(2)]
        )?;
    }
    w.flush()?;
    Ok(())
}

struct Run {
    /// From start to the first event's plan (the snapshot loaded), and to the end.
    load: f64,
    secs: f64,
    planned: usize,
    peak: u64,
}

impl Run {
    /// Events planned per second after loading (the first event's plan marks the end of the
    /// load, measured in the same process).
    fn per_sec(&self) -> f64 {
        self.planned.saturating_sub(1) as f64 / (self.secs - self.load).max(1e-9)
    }
}

fn dry_run(bin: &Path, dir: &Path, snapshot: &Path, events: &Path, format: &str) -> Result<Run> {
    let against = format!("sim:{}", snapshot.display());
    let instance = dir.join("bench.yaml");
    let args: [&std::ffi::OsStr; 8] = [
        "dry-run".as_ref(),
        "--format".as_ref(),
        format.as_ref(),
        "--instance".as_ref(),
        instance.as_os_str(),
        "--against".as_ref(),
        against.as_ref(),
        events.as_os_str(),
    ];
    let m = measure(bin, &args)?;
    Ok(Run {
        load: m.first_line.unwrap_or(m.secs),
        secs: m.secs,
        planned: count_events(events)?,
        peak: m.peak,
    })
}

fn count_events(path: &Path) -> Result<usize> {
    let text = std::fs::read(path)?;
    Ok(text.iter().filter(|b| **b == b'\n').count())
}

pub fn run(args: &[&str]) -> Result<()> {
    let leads = args::number(args, "--leads", 10_000)?;
    let events = args::number(args, "--events", 10_000)?;
    let generate = args::dir(args, "--generate")?;
    let dir = generate.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("closeflow-bench-dry-run-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench.yaml"), INSTANCE)?;
    let snap = |n: usize| dir.join(format!("snapshot-{n}.json"));
    let evs = |m: usize, n: usize, mix: Mix| {
        let name = if mix == Mix::Updates {
            "updates"
        } else {
            "creates"
        };
        dir.join(format!("events-{m}-{name}-over-{n}.jsonl"))
    };
    let mut sizes = std::collections::BTreeMap::new();
    for n in [leads, leads * 10] {
        sizes.insert(n, write_snapshot(&snap(n), n)?);
    }
    let runs = [
        (leads, events, Mix::Updates),
        (leads, events * 10, Mix::Updates),
        (leads * 10, events, Mix::Updates),
        (leads * 10, events * 10, Mix::Updates),
        (leads * 10, events * 10, Mix::Creates),
    ];
    for (n, m, mix) in runs {
        if !evs(m, n, mix).exists() {
            write_events(&evs(m, n, mix), m, n, mix)?;
        }
    }
    if generate.is_some() {
        println!("written to {}", dir.display());
        return Ok(());
    }
    let bin = crate::release_closeflow()?;
    println!(
        "dry-run benchmark: release `closeflow dry-run --instance bench.yaml --against sim:SNAPSHOT --format F EVENTS.jsonl`, standard output read by the bench"
    );
    let row = |what: &str, n: usize, m: usize, r: &Run| {
        let file = sizes[&n];
        println!(
            "  {what:<22} {n:>7} leads ({:>5.1} MB) {m:>7} events: load {:>5.2} s, total {:>6.2} s, {:>7.0} events/s after loading, peak RSS {:>6.1} MB ({:.2}x the snapshot file)",
            mb(file),
            r.load,
            r.secs,
            r.per_sec(),
            mb(r.peak),
            r.peak as f64 / file as f64
        );
    };
    // JSON lines is the first row of the table below.
    for format in ["human", "json"] {
        let r = dry_run(
            &bin,
            &dir,
            &snap(leads),
            &evs(events, leads, Mix::Updates),
            format,
        )?;
        row(&format!("updates, --format {format}"), leads, events, &r);
    }
    let mut table = Vec::new();
    for (n, m, mix) in runs {
        let r = dry_run(&bin, &dir, &snap(n), &evs(m, n, mix), "jsonl")?;
        let what = if mix == Mix::Updates {
            "updates"
        } else {
            "creates"
        };
        row(&format!("{what}, --format jsonl"), n, m, &r);
        table.push(r);
    }
    let (base, more_events, more_leads) = (&table[0], &table[1], &table[2]);
    println!(
        "  events x10:   planning time x{:.1} (linear: x10), peak RSS x{:.2}",
        (more_events.secs - more_events.load) / (base.secs - base.load),
        more_events.peak as f64 / base.peak as f64
    );
    println!(
        "  snapshot x10: events/s x{:.2} (flat: x1), load time x{:.1}, peak RSS x{:.2}",
        more_leads.per_sec() / base.per_sec(),
        more_leads.load / base.load,
        more_leads.peak as f64 / base.peak as f64
    );
    if args.contains(&"--keep") {
        println!("  generated files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
