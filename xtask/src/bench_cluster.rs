//! `cargo xtask bench cluster`: intake and delivery events/s with 1, 2 and 3 `closeflow serve`
//! nodes over a 3-node NATS JetStream cluster, all on this machine (release build, the
//! simulator with its rate limits lifted so that Close is not what is measured).
//! Figures are printed with their ratios to one node; nothing here is a pass/fail test.

use anyhow::{Result, bail};
use closeflow_e2e::nats::NatsCluster;
use closeflow_e2e::procs::{ServerProc, SimProc, empty_org, metric};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const EVENTS: usize = 2_000;
const BATCH: usize = 25;
const SENDERS: usize = 8;
/// Divisible by 1, 2 and 3, so every node count gets an even share.
const PARTITIONS: u32 = 12;

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
"#
    )
}

fn event(i: usize, run: usize) -> Value {
    json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("r{run}-m{i}"),
           "traits": {"email": format!("p{i}@c{}.io", i % 200), "name": format!("Person {i}"),
                      "title": "Engineer", "company": {"id": format!("c{}", i % 200), "name": format!("Company {}", i % 200)}}})
}

struct Figures {
    intake: f64,
    delivery: f64,
    /// CPU seconds used during the run by the nats-servers, the closeflow nodes, the
    /// simulator, and the whole machine (every process, other work included); wall seconds.
    cpu: [f64; 4],
    wall: f64,
}

/// CPU seconds a process has used (user + system), from `/proc`.
fn cpu_of(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks()
}

fn ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds the whole machine spent busy (all cores), from `/proc/stat`.
fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle) / ticks()
}

async fn owned(base: &str) -> usize {
    let Ok(r) = reqwest::Client::new()
        .get(format!("{base}/admin/cluster"))
        .bearer_auth("bench")
        .send()
        .await
    else {
        return 0;
    };
    let v: Value = r.json().await.unwrap_or_default();
    v["instances"]["bench"]["owned"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `nodes` closeflow nodes over 3 nats-servers; 0: one node on the embedded SQLite queue.
async fn one(nodes: usize, run: usize) -> Result<Figures> {
    let sqlite = nodes == 0;
    let nodes = nodes.max(1);
    let nats = if sqlite {
        None
    } else {
        Some(NatsCluster::start(3).await)
    };
    let urls = nats.as_ref().map(NatsCluster::urls).unwrap_or_default();
    let mut org = empty_org();
    org["limits"] =
        json!({"search": 1_000_000, "other": 1_000_000, "delete_lead": 1_000, "window_secs": 1});
    let sim = SimProc::start(&org).await;
    let dirs: Vec<tempfile::TempDir> = (0..nodes)
        .map(|_| tempfile::tempdir())
        .collect::<std::io::Result<_>>()?;
    let mut procs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let c = d.path().join("config");
        std::fs::create_dir_all(&c)?;
        std::fs::write(c.join("bench.yaml"), instance(&sim.api()))?;
        let id = format!("node-{}", i + 1);
        let parts = PARTITIONS.to_string();
        let mut args = vec!["--concurrency", "16"];
        if !sqlite {
            args.extend([
                "--queue",
                &urls,
                "--node-id",
                &id,
                "--ack-wait",
                "10s",
                "--partitions",
                &parts,
            ]);
        }
        procs.push(ServerProc::start(d.path(), &args, &[("CLOSEFLOW_ADMIN_TOKEN", "bench")]).await);
    }
    // The first event opens the instance's queue; then wait until the partitions are spread.
    let bases: Vec<String> = procs.iter().map(ServerProc::base).collect();
    let http = reqwest::Client::new();
    post(&http, &bases[0], &[event(usize::MAX, run)]).await?;
    let share = PARTITIONS as usize / nodes;
    let start = Instant::now();
    if !sqlite {
        loop {
            let mut ok = true;
            for b in &bases {
                ok &= owned(b).await == share;
            }
            if ok {
                break;
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("the partitions were not spread over {nodes} nodes within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wait_applied(&bases[0], 1).await?;

    let cpu = |procs: &[ServerProc]| {
        [
            nats.as_ref()
                .map_or(0.0, |n| n.nodes.iter().map(|x| cpu_of(x.pid())).sum()),
            procs.iter().map(|p| cpu_of(p.pid())).sum(),
            cpu_of(sim.pid()),
            machine_busy(),
        ]
    };
    let before = cpu(&procs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (http, bases) = (http.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let per = EVENTS / SENDERS;
            let ids: Vec<usize> = (s * per..(s + 1) * per).collect();
            for (k, chunk) in (s..).zip(ids.chunks(BATCH)) {
                let evs: Vec<Value> = chunk.iter().map(|i| event(*i, run)).collect();
                post(&http, &bases[k % bases.len()], &evs).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let intake = t0.elapsed().as_secs_f64();
    wait_applied(&bases[0], EVENTS + 1).await?;
    let delivery = t0.elapsed().as_secs_f64();
    let after = cpu(&procs);
    drop(procs);
    drop(sim);
    drop(nats);
    Ok(Figures {
        intake: EVENTS as f64 / intake,
        delivery: EVENTS as f64 / delivery,
        cpu: std::array::from_fn(|i| after[i] - before[i]),
        wall: delivery,
    })
}

/// Posts a batch with write key `wk`, again until it is taken (a node may still be starting).
pub(crate) async fn post(http: &reqwest::Client, base: &str, evs: &[Value]) -> Result<()> {
    for _ in 0..100 {
        let r = http
            .post(format!("{base}/v1/batch"))
            .basic_auth("wk", Some(""))
            .json(&json!({"batch": evs}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} refused a batch 100 times")
}

/// Waits until instance `bench` has `n` final outcomes, as `/metrics` reports them.
pub(crate) async fn wait_applied(base: &str, n: usize) -> Result<()> {
    let start = Instant::now();
    loop {
        let m = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        let done = metric(&m, "closeflow_events_applied_total", "instance=\"bench\"")
            + metric(&m, "closeflow_events_skipped_total", "instance=\"bench\"")
            + metric(
                &m,
                "closeflow_events_dead_lettered_total",
                "instance=\"bench\"",
            );
        if done >= n as f64 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {n} events delivered within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn run() -> Result<()> {
    closeflow_e2e::set_closeflow_bin(crate::release_closeflow()?);
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for (run, nodes) in [0usize, 1, 2, 3].into_iter().enumerate() {
        let f = rt.block_on(one(nodes, run))?;
        println!(
            "{nodes} node(s): intake {:.0} events/s, delivery {:.0} events/s; CPU s over {:.1} s: nats {:.1}, closeflow {:.1}, simulator {:.1}, whole machine {:.1} (of {:.1} available)",
            f.intake,
            f.delivery,
            f.wall,
            f.cpu[0],
            f.cpu[1],
            f.cpu[2],
            f.cpu[3],
            f.wall * 2.0
        );
        rows.push((nodes, f));
    }
    let (i1, d1) = (rows[1].1.intake, rows[1].1.delivery);
    println!(
        "\n{EVENTS} identify events in batches of {BATCH} from {SENDERS} senders, round-robin over the nodes; 3 nats-servers (R3), {PARTITIONS} partitions\n"
    );
    println!(
        "| closeflow nodes | intake events/s | × 1 node | delivery events/s | × 1 node | CPU s: nats / closeflow / simulator / machine busy of 2 cores × wall |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (n, f) in &rows {
        let n = if *n == 0 {
            "1 (SQLite queue, for reference)".to_string()
        } else {
            n.to_string()
        };
        println!(
            "| {n} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} / {:.0} / {:.0} / {:.0} of {:.0} |",
            f.intake,
            f.intake / i1,
            f.delivery,
            f.delivery / d1,
            f.cpu[0],
            f.cpu[1],
            f.cpu[2],
            f.cpu[3],
            f.wall * 2.0
        );
    }
    Ok(())
}
