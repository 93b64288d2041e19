//! `cargo xtask bench delivery`: the real binary (`send`, then `serve`) against the simulator
//! with the recorded rate-limit profile (search 16 per 8 s, others 240 per 8 s, per key), over
//! an organisation of 1,000 leads, on a fixed-seed mix: 70% repeated unchanged identifies, 20%
//! identifies that change a field, 10% new people. The naive baseline is the same binary with
//! `--naive` (a search per key per event, no coalescing, no cache), run side by side.
//!
//! Close calls are counted by the simulator (`GET /_sim/stats`), so nothing is taken on the
//! client's word.

use crate::args;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LEADS: usize = 1_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One person of the organisation: who they are, as the snapshot and an unchanged identify
/// say it alike.
#[derive(Clone)]
struct Person {
    user: String,
    email: String,
    name: String,
    title: String,
    company: usize,
}

fn company_id(c: usize) -> String {
    format!("c_{c:04}")
}

fn org(people: &[Person], keys: &[String]) -> Value {
    let leads: Vec<Value> = (0..LEADS)
        .map(|c| {
            let contacts: Vec<Value> = people
                .iter()
                .filter(|p| p.company == c)
                .map(|p| {
                    json!({"id": format!("cont_{}", p.user), "lead_id": format!("lead_{c:04}"), "name": p.name, "title": p.title,
                           "date_created": "2026-01-01T00:00:00+00:00",
                           "emails": [{"email": p.email, "type": "office"}], "custom.cf_user": p.user})
                })
                .collect();
            json!({"id": format!("lead_{c:04}"), "name": format!("Company {c}"), "status_id": "stat_potential",
                   "date_created": "2026-01-01T00:00:00+00:00", "custom.cf_company": company_id(c), "contacts": contacts})
        })
        .collect();
    json!({"api_keys": keys,
           "custom_fields": {"lead": [{"id": "cf_company", "name": "Company ID", "type": "text"}],
                             "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]},
           "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
           "leads": leads})
}

fn identify(p: &Person, n: usize) -> Value {
    json!({"type": "identify", "messageId": format!("m{n}"), "userId": p.user,
           "traits": {"email": p.email, "name": p.name, "title": p.title,
                      "company": {"id": company_id(p.company), "name": format!("Company {}", p.company)}}})
}

/// The standard mix over `people`, `n` events; returns the events and which are repeated
/// unchanged identifies.
fn mix(people: &mut Vec<Person>, n: usize, seed: u64) -> (Vec<Value>, Vec<bool>) {
    let mut rng = Rng(seed.max(1));
    let mut seen: Vec<usize> = Vec::new();
    let (mut out, mut repeated) = (Vec::new(), Vec::new());
    for i in 0..n {
        let roll = rng.below(100);
        if roll < 70 && !seen.is_empty() {
            let p = &people[seen[rng.below(seen.len())]];
            out.push(identify(p, i));
            repeated.push(true);
        } else if roll < 90 {
            let k = rng.below(people.len());
            people[k].title = format!("Title {i}");
            out.push(identify(&people[k], i));
            seen.push(k);
            repeated.push(false);
        } else {
            let company = rng.below(LEADS + LEADS / 10);
            people.push(Person {
                user: format!("new_{i}"),
                email: format!("new{i}@example.com"),
                name: format!("New Person {i}"),
                title: "Newcomer".into(),
                company,
            });
            out.push(identify(people.last().expect("pushed"), i));
            seen.push(people.len() - 1);
            repeated.push(false);
        }
    }
    (out, repeated)
}

fn base_people(seed: u64) -> Vec<Person> {
    let mut rng = Rng(seed.max(1) ^ 0x9e37_79b9);
    (0..LEADS * 3 / 2)
        .map(|i| Person {
            user: format!("u_{i:05}"),
            email: format!("person{i}@company{}.com", i % LEADS),
            name: format!("Person {i}"),
            title: ["Engineer", "CTO", "Sales", "Founder"][rng.below(4)].to_string(),
            company: i % LEADS,
        })
        .collect()
}

const INSTANCE: &str = r#"name: NAME
endpoint: URL
write_key: WRITE_KEY
settings:
  api_key: API_KEY
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: Identify → contact and lead
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
"#;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn get(url: &str) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async { Ok(reqwest::get(url).await?.json::<Value>().await?) })
}

fn wait_up(url: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if rt
            .block_on(reqwest::get(url))
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} did not come up")
}

struct Sim {
    _p: Proc,
    port: u16,
}

fn sim(bin: &Path, dir: &Path, snapshot: &Value) -> Result<Sim> {
    let state = dir.join("state.json");
    std::fs::write(&state, snapshot.to_string())?;
    let port = free_port()?;
    let p = Command::new(bin)
        .args(["sim", "--port", &port.to_string(), "--state"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_up(&format!("http://127.0.0.1:{port}/_sim/stats"))?;
    Ok(Sim { _p: Proc(p), port })
}

#[derive(Debug, Clone, Default)]
struct Figures {
    events: usize,
    secs: f64,
    search: u64,
    other: u64,
    throttled: u64,
}

impl Figures {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

fn sim_counts(port: u16) -> Result<(u64, u64, u64)> {
    let s = get(&format!("http://127.0.0.1:{port}/_sim/stats"))?;
    let n = |g: &str, k: &str| s[g][k].as_u64().unwrap_or(0);
    Ok((
        n("search", "requests"),
        n("other", "requests"),
        n("search", "throttled") + n("other", "throttled"),
    ))
}

fn write_instance(dir: &Path, name: &str, url: &str, key: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.yaml"));
    let text = INSTANCE
        .replace("NAME", name)
        .replace("URL", url)
        .replace("WRITE_KEY", &format!("wk_{name}"))
        .replace("API_KEY", key);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `closeflow send` of `events` against a fresh simulator.
fn send(bin: &Path, people: &[Person], events: &[Value], naive: bool) -> Result<Figures> {
    let dir = tempdir()?;
    let s = sim(bin, &dir, &org(people, &["key_1".into()]))?;
    let inst = write_instance(
        &dir,
        "bench",
        &format!("http://127.0.0.1:{}/api/v1/", s.port),
        "key_1",
    )?;
    let file = dir.join("events.jsonl");
    std::fs::write(
        &file,
        events
            .iter()
            .map(|e| e.to_string() + "\n")
            .collect::<String>(),
    )?;
    let (s0, o0, _) = sim_counts(s.port)?;
    let mut cmd = Command::new(bin);
    cmd.arg("send")
        .arg("--instance")
        .arg(&inst)
        .args(["--format", "jsonl", "--resume-file"])
        .arg(dir.join("done"))
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if naive {
        cmd.arg("--naive");
    }
    let t = Instant::now();
    let status = cmd.status()?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("closeflow send failed ({status})");
    }
    let (s1, o1, th) = sim_counts(s.port)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        events: events.len(),
        secs,
        search: s1 - s0,
        other: o1 - o0,
        throttled: th,
    })
}

fn tempdir() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "closeflow-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// `closeflow serve` with `instances` instances (one Close key each), every one sent its share
/// of `events`; the time from the first post until every queue is empty.
fn serve(bin: &Path, people: &[Person], events: &[Value], instances: usize) -> Result<Figures> {
    let dir = tempdir()?;
    let keys: Vec<String> = (1..=instances).map(|i| format!("key_{i}")).collect();
    let s = sim(bin, &dir, &org(people, &keys))?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    for (i, k) in keys.iter().enumerate() {
        write_instance(
            &config,
            &format!("inst{}", i + 1),
            &format!("http://127.0.0.1:{}/api/v1/", s.port),
            k,
        )?;
    }
    let port = free_port()?;
    let server = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--concurrency",
            "16",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _server = Proc(server);
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&format!("{base}/readyz"))?;
    let (s0, o0, _) = sim_counts(s.port)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    // Each person's events go to one instance (by User ID), so instances never race each
    // other over a record: the stream shared out as k sources would.
    let mut shares: Vec<Vec<Value>> = vec![Vec::new(); instances];
    for e in events {
        let user = e["userId"].as_str().unwrap_or_default();
        let h = user
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        shares[h % instances].push(e.clone());
    }
    rt.block_on(async {
        let http = reqwest::Client::new();
        for (i, share) in shares.iter().enumerate() {
            for chunk in share.chunks(100) {
                let r = http
                    .post(format!("{base}/v1/batch"))
                    .basic_auth(format!("wk_inst{}", i + 1), Some(""))
                    .json(&json!({"batch": chunk}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("intake refused a batch: {}", r.status());
                }
            }
        }
        loop {
            let m = http
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let sum = |name: &str| -> f64 {
                m.lines()
                    .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum()
            };
            let settled = sum("closeflow_events_applied_total")
                + sum("closeflow_events_skipped_total")
                + sum("closeflow_events_dead_lettered_total");
            if settled as usize >= events.len() && sum("closeflow_queue_depth{") == 0.0 {
                if sum("closeflow_events_dead_lettered_total") > 0.0 {
                    bail!("events were dead-lettered during the benchmark");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let (s1, o1, th) = sim_counts(s.port)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        events: events.len(),
        secs,
        search: s1 - s0,
        other: o1 - o0,
        throttled: th,
    })
}

// (`--events N`, `--baseline-events M`, `--scale-events K`, `--seed S`)
pub fn run(args: &[&str]) -> Result<()> {
    let n = args::number(args, "--events", 1_000)?;
    let n_base = args::number(args, "--baseline-events", 60)?;
    let n_scale = args::number(args, "--scale-events", 4_000)?;
    let seed = args::number(args, "--seed", 7)? as u64;
    let bin = crate::release_closeflow()?;
    let people = base_people(seed);
    let mut after = people.clone();
    let (events, repeated) = mix(&mut after, n, seed);
    let n_repeated = repeated.iter().filter(|r| **r).count();
    println!(
        "delivery benchmark: {n} events (seed {seed}: {n_repeated} repeated unchanged identifies, the rest changes and new people) over {LEADS} leads;"
    );
    println!(
        "simulator with the recorded limits (search 16 / 8 s, other 240 / 8 s per key); release build\n"
    );

    let base = send(&bin, &people, &events[..n_base.min(n)], true)?;
    let ours = send(&bin, &people, &events, false)?;
    // Calls a repeated unchanged identify costs: the same stream without them, the difference.
    let without: Vec<Value> = events
        .iter()
        .zip(&repeated)
        .filter(|(_, r)| !**r)
        .map(|(e, _)| e.clone())
        .collect();
    let lean = send(&bin, &people, &without, false)?;
    let per_repeat = ((ours.search + ours.other) as f64 - (lean.search + lean.other) as f64)
        .max(0.0)
        / n_repeated.max(1) as f64;
    let served = serve(&bin, &people, &events, 1)?;

    let row = |name: &str, f: &Figures, ratio: Option<f64>| {
        println!(
            "{name:<26} {:>6} {:>9.2} {:>11.3} {:>10.3} {:>6} {:>8}",
            f.events,
            f.per_sec(),
            f.search as f64 / f.events as f64,
            f.other as f64 / f.events as f64,
            f.throttled,
            ratio.map_or_else(|| "1.0×".to_string(), |r| format!("{r:.1}×"))
        );
    };
    println!(
        "{:<26} {:>6} {:>9} {:>11} {:>10} {:>6} {:>8}",
        "run", "events", "events/s", "search/ev", "other/ev", "429s", "vs naive"
    );
    row("send --naive (baseline)", &base, None);
    row("send", &ours, Some(ours.per_sec() / base.per_sec()));
    row(
        "serve (1 key)",
        &served,
        Some(served.per_sec() / base.per_sec()),
    );
    println!("\ncalls per repeated unchanged identify (send): {per_repeat:.3}");

    // Long enough that every key spends several rate-limit windows: steady state, not a burst.
    let mut scaled = base_people(seed);
    let (scale_events, _) = mix(&mut scaled, n_scale, seed ^ 0x5ca1e);
    println!(
        "\nserve with more API keys ({n_scale} events, one instance per key, each person's events to one of them):"
    );
    println!(
        "{:<6} {:>9} {:>8} {:>6} {:>9}",
        "keys", "events/s", "per key", "429s", "vs 1 key"
    );
    let mut one = 0.0;
    for k in 1..=4 {
        let f = serve(&bin, &people, &scale_events, k)?;
        if k == 1 {
            one = f.per_sec();
        }
        println!(
            "{k:<6} {:>9.2} {:>8.2} {:>6} {:>8.1}×",
            f.per_sec(),
            f.per_sec() / k as f64,
            f.throttled,
            f.per_sec() / one
        );
    }
    Ok(())
}
