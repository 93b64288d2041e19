//! `cargo xtask bench dry-run [--leads N] [--events M]`: the release `closeflow dry-run
//! --against sim:` over a generated snapshot of N leads (each with one or two contacts, custom
//! fields on both) and M identify events (half about people in the snapshot, half new; one in
//! four about a company in it). It runs the real binary as a child and reports, per run, wall
//! time, peak RSS (the child's `VmHWM`, sampled from /proc) and events/s after loading (from
//! the first event's plan on standard output to the end); then how both grow when the events
//! or the snapshot grow ten times. Nothing here is a pass/fail test.

use anyhow::{Context, Result, bail};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn write_events(path: &Path, events: usize, leads: usize) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in 0..events {
        // Half about people in the snapshot, half about new people (of a few new companies).
        // New people are named apart, so that they are new in a larger snapshot too.
        let known = rng.below(2) == 0 && leads > 0;
        let (i, dom) = if known {
            let k = rng.below(leads);
            (k.to_string(), k % 97)
        } else {
            (format!("new{}", rng.below(events.max(1))), 0)
        };
        let company = if known || rng.below(4) == 0 {
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

/// A child's peak resident set, in bytes, from /proc (0 where /proc is not available).
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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

fn dry_run(bin: &Path, dir: &Path, snapshot: &Path, events: &Path) -> Result<Run> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["dry-run", "--format", "jsonl", "--instance"])
        .arg(dir.join("bench.yaml"))
        .arg("--against")
        .arg(format!("sim:{}", snapshot.display()))
        .arg(events)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start closeflow")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let lines = std::thread::spawn(move || {
        let mut first = None;
        let mut n = 0usize;
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            n += 1;
        }
        (first, n)
    });
    let mut peak = 0;
    loop {
        if let Some(h) = vm_hwm(pid) {
            peak = peak.max(h);
        }
        if let Some(status) = child.try_wait()? {
            // 0 (nothing would change) or 2 are fine; 1 is an error.
            if status.code() == Some(1) {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err)?;
                }
                bail!("closeflow dry-run failed: {err}");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    let (first, n) = lines.join().map_err(|_| anyhow::anyhow!("reader thread"))?;
    Ok(Run {
        load: first.unwrap_or(secs),
        secs,
        // The last line is the summary.
        planned: n.saturating_sub(1),
        peak,
    })
}

fn arg(args: &[&str], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| *a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .with_context(|| format!("{name} takes a number")),
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

pub fn run(args: &[&str]) -> Result<()> {
    let leads = arg(args, "--leads", 10_000)?;
    let events = arg(args, "--events", 10_000)?;
    let bin = crate::release_closeflow()?;
    let dir = std::env::temp_dir().join(format!("closeflow-bench-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench.yaml"), INSTANCE)?;
    let snap = |n: usize| dir.join(format!("snapshot-{n}.json"));
    let evs = |m: usize| dir.join(format!("events-{m}.jsonl"));
    let mut sizes = std::collections::BTreeMap::new();
    for n in [leads, leads * 10] {
        sizes.insert(n, write_snapshot(&snap(n), n)?);
    }
    for m in [events, events * 10] {
        write_events(&evs(m), m, leads)?;
    }
    println!(
        "dry-run benchmark: release `closeflow dry-run --against sim:` (JSON lines out, counted by the bench)"
    );
    let mut table = Vec::new();
    for (n, m) in [(leads, events), (leads, events * 10), (leads * 10, events)] {
        let r = dry_run(&bin, &dir, &snap(n), &evs(m))?;
        let file = sizes[&n];
        println!(
            "  {n:>8} leads ({:>6.1} MB) {m:>8} events: load {:>6.2} s, total {:>7.2} s, {:>9.0} events/s after loading, peak RSS {:>7.1} MB ({:.2}x the snapshot file)",
            mb(file),
            r.load,
            r.secs,
            r.per_sec(),
            mb(r.peak),
            r.peak as f64 / file as f64
        );
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
