//! `cargo xtask bench engine`: our engine against the reference engine (through its own npm
//! packages, `bench/oracle`), on the same realistic ~1 KB identify events. Figures are
//! printed side by side with their ratios; nothing here is a pass/fail test.

use anyhow::{Context, Result, bail};
use closeflow_close::schema;
use closeflow_mapping::instance;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const EVENTS: usize = 2_000;
const ROUNDS: usize = 25;

fn events() -> Vec<Value> {
    crate::traffic::identify_events(EVENTS)
}

const INSTANCE: &str = r#"
name: bench
settings:
  api_key: bench
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: default
    action: create_or_update_contact_and_lead
"#;

fn per_sec(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        ["engine"] => engine(),
        ["diff", rest @ ..] => crate::bench_diff::run(rest),
        ["dry-run", rest @ ..] => crate::bench_dry_run::run(rest),
        ["delivery", rest @ ..] => crate::bench_delivery::run(rest),
        ["cluster"] => crate::bench_cluster::run(),
        ["journey", rest @ ..] => crate::bench_journey::run(rest),
        _ => bail!(
            "usage: cargo xtask bench engine|diff [--events N] [--planned-events M] [--generate DIR]|dry-run [--leads N] [--events M] [--generate DIR]|delivery [--seed S] [--warm N] [--events N] [--max-secs S] [--half-new N] [--backfill N] [--naive-secs S] [--repeats N]|cluster|journey [--events N] [--sqlite-only]"
        ),
    }
}

fn engine() -> Result<()> {
    let env = |_: &str| None;
    let (inst, diags) = instance::load("bench.yaml", INSTANCE, &schema::destination(), &env);
    let inst = inst.with_context(|| format!("bench instance invalid: {diags:?}"))?;
    let evs = events();
    let texts: Vec<String> = evs.iter().map(|e| e.to_string()).collect();
    let avg = texts.iter().map(String::len).sum::<usize>() / texts.len();
    println!(
        "engine benchmark: {EVENTS} identify events (~{avg} bytes each), default Close mapping, trigger type = \"identify\""
    );

    let mut sink = 0usize;
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for e in &evs {
            for m in inst.mappings.iter().filter(|m| m.enabled) {
                if m.trigger.matches(e) {
                    m.program.evaluate_into(e, &mut buf)?;
                    sink += buf.len();
                }
            }
        }
    }
    let eval = per_sec(EVENTS * ROUNDS, t.elapsed().as_secs_f64());

    let t = Instant::now();
    for _ in 0..ROUNDS {
        for e in &evs {
            for o in inst.evaluate(e) {
                sink += o.payload.map_or(0, |p| p.map_or(0, |m| m.len()));
            }
        }
    }
    let eval_owned = per_sec(EVENTS * ROUNDS, t.elapsed().as_secs_f64());

    let t = Instant::now();
    for _ in 0..ROUNDS {
        for s in &texts {
            let e: Value = serde_json::from_str(s)?;
            for o in inst.evaluate(&e) {
                sink += o.payload.map_or(0, |p| p.map_or(0, |m| m.len()));
            }
        }
    }
    let parse_eval = per_sec(EVENTS * ROUNDS, t.elapsed().as_secs_f64());

    let t = Instant::now();
    for _ in 0..ROUNDS {
        for s in &texts {
            let e: Value = serde_json::from_str(s)?;
            sink += usize::from(e.is_object());
        }
    }
    let parse = per_sec(EVENTS * ROUNDS, t.elapsed().as_secs_f64());

    println!(
        "  closeflow, evaluation on parsed events : {eval:>12.0} events/s   (payload borrowed from the event)"
    );
    println!("  closeflow, evaluation to owned payloads : {eval_owned:>12.0} events/s");
    println!("  closeflow, JSON parse + evaluation      : {parse_eval:>12.0} events/s");
    println!("  JSON parsing alone (serde_json)         : {parse:>12.0} events/s");
    match reference(&texts)? {
        Some(r) => {
            println!("  reference engine (Node, in-process)     : {r:>12.0} events/s");
            println!(
                "  ratio evaluation / reference            : {:>12.1}x",
                eval / r
            );
            println!(
                "  ratio parse+evaluation / reference      : {:>12.1}x",
                parse_eval / r
            );
        }
        None => println!(
            "  reference engine: skipped (run `npm ci` in bench/oracle with Node 20 to compare)"
        ),
    }
    std::hint::black_box(sink);
    Ok(())
}

/// Runs the reference product's trigger + mapping engine on the same events in one Node
/// process and reports its own in-process throughput.
fn reference(texts: &[String]) -> Result<Option<f64>> {
    let dir = super::root().join("bench/oracle");
    if !dir.join("node_modules/@segment/actions-core").exists() {
        return Ok(None);
    }
    let mut child = match Command::new("node")
        .arg("bench.js")
        .arg(ROUNDS.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    {
        let mut stdin = child.stdin.take().context("node stdin")?;
        for t in texts {
            writeln!(stdin, "{t}")?;
        }
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).context("reference bench output")?;
    Ok(v.get("events_per_sec").and_then(Value::as_f64))
}
