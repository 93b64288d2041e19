//! `cargo xtask bench journey`: what keeping journeys costs. The release `closeflow serve`
//! with journeys on (the default, `--journey-retention 7d`) beside the same binary with them
//! off (`--journey-retention 0`), on the same workload, runs alternated: intake events/s,
//! delivery events/s, and the bytes journeys take per event. On the SQLite queue, and on a
//! one-server NATS JetStream queue. The simulator's rate limits are lifted so that Close is not
//! what is measured (at Close's real limits, 30–100 events/s, delivery waits on Close, not on
//! this). Nothing here is a pass/fail test.

use crate::bench_cluster::{post, wait_applied};
use anyhow::{Result, bail};
use closeflow_e2e::nats::NatsCluster;
use closeflow_e2e::procs::{ServerProc, SimProc, empty_org};
use serde_json::{Value, json};
use std::time::Instant;

const EVENTS: usize = 20_000;
const BATCH: usize = 25;
const SENDERS: usize = 8;
const REPEATS: usize = 3;

fn instance(sim_api: &str) -> String {
    format!(
        r#"name: bench
endpoint: {sim_api}
write_key: wk
settings:
  api_key: test_key
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: People
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: $.traits.title
  - name: Sign-ups
    trigger: type = "track" and event = "Signed Up"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: Signed up
"#
    )
}

/// Identify events of 300 people in 60 companies: creates first, then updates.
fn event(i: usize, run: usize) -> Value {
    let p = i % 300;
    json!({"type": "identify", "userId": format!("u{p}"), "messageId": format!("r{run}-m{i}"),
           "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
           "traits": {"email": format!("p{p}@c{}.io", p % 60), "name": format!("Person {p}"),
                      "title": format!("Title {}", i / 300), "company": {"id": format!("c{}", p % 60), "name": format!("Company {}", p % 60)}}})
}

struct Figures {
    intake: f64,
    delivery: f64,
    /// Journey bytes on disk (SQLite file and WAL) or in the stream, per event.
    bytes: f64,
}

async fn one(journeys: bool, nats: bool, run: usize, events: usize) -> Result<Figures> {
    let cluster = if nats {
        Some(NatsCluster::start(1).await)
    } else {
        None
    };
    let urls = cluster.as_ref().map(NatsCluster::urls).unwrap_or_default();
    let mut org = empty_org();
    org["limits"] =
        json!({"search": 1_000_000, "other": 1_000_000, "delete_lead": 1_000, "window_secs": 1});
    let sim = SimProc::start(&org).await;
    let dir = tempfile::tempdir()?;
    let c = dir.path().join("config");
    std::fs::create_dir_all(&c)?;
    std::fs::write(c.join("bench.yaml"), instance(&sim.api()))?;
    let mut args = vec!["--concurrency", "16"];
    if !journeys {
        args.extend(["--journey-retention", "0"]);
    }
    if nats {
        args.extend(["--queue", &urls, "--node-id", "bench-1", "--replicas", "1"]);
    }
    let mut s = ServerProc::start(dir.path(), &args, &[]).await;
    let base = s.base();
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..SENDERS {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let per = events / SENDERS;
            let ids: Vec<usize> = (k * per..(k + 1) * per).collect();
            for chunk in ids.chunks(BATCH) {
                let evs: Vec<Value> = chunk.iter().map(|i| event(*i, run)).collect();
                post(&http, &base, &evs).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let intake = t0.elapsed().as_secs_f64();
    wait_applied(&base, events).await?;
    let delivery = t0.elapsed().as_secs_f64();
    // SIGTERM: the server writes its last stages before it exits.
    s.terminate();
    let bytes = if !journeys {
        0
    } else if let Some(n) = &cluster {
        n.stream_bytes(0, "CLOSEFLOW_JOURNEY").await.unwrap_or(0)
    } else {
        ["journey.db", "journey.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join("data").join(f)).ok())
            .map(|m| m.len())
            .sum()
    };
    drop(sim);
    drop(cluster);
    Ok(Figures {
        intake: events as f64 / intake,
        delivery: events as f64 / delivery,
        bytes: bytes as f64 / events as f64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &[&str]) -> Result<()> {
    let mut events = EVENTS;
    let mut queues = vec![false, true];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--events" => events = it.next().and_then(|n| n.parse().ok()).unwrap_or(EVENTS),
            "--sqlite-only" => queues = vec![false],
            other => bail!("bench journey: unknown option {other} (--events N, --sqlite-only)"),
        }
    }
    let events = events - events % SENDERS;
    closeflow_e2e::set_closeflow_bin(crate::release_closeflow()?);
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "{events} identify events (300 people, 60 companies; creates, then updates) in batches of {BATCH} from {SENDERS} senders; the release closeflow serve --concurrency 16; the simulator without rate limits; {REPEATS} runs each, alternated, medians\n"
    );
    println!(
        "| queue | journeys | intake events/s | × off | delivery events/s | × off | journey bytes per event |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut run = 0;
    for nats in queues {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            for journeys in [false, true] {
                run += 1;
                let f = rt.block_on(one(journeys, nats, run, events))?;
                eprintln!(
                    "run {run}: {} journeys {}: intake {:.0}/s, delivery {:.0}/s, {:.0} bytes/event",
                    if nats { "nats" } else { "sqlite" },
                    if journeys { "on" } else { "off" },
                    f.intake,
                    f.delivery,
                    f.bytes
                );
                if journeys { &mut on } else { &mut off }.push(f);
            }
        }
        let m = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
        let (i0, d0) = (m(&off, |f| f.intake), m(&off, |f| f.delivery));
        let queue = if nats {
            "NATS JetStream (1 server, R1)"
        } else {
            "SQLite"
        };
        println!(
            "| {queue} | off (`--journey-retention 0`) | {i0:.0} | 1.00 | {d0:.0} | 1.00 | — |"
        );
        let (i1, d1, b1) = (
            m(&on, |f| f.intake),
            m(&on, |f| f.delivery),
            m(&on, |f| f.bytes),
        );
        println!(
            "| {queue} | on (default, 7d) | {i1:.0} | {:.2} | {d1:.0} | {:.2} | {b1:.0} |",
            i1 / i0,
            d1 / d0
        );
    }
    Ok(())
}
