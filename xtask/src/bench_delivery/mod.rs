//! `cargo xtask bench delivery`: the release `closeflow`, run with default flags as a new user
//! runs it, against the simulator with Close's recorded rate limits (per API key: search 16
//! requests per 8 s, other requests 240 per 8 s), one API key, over an organisation of 1,000
//! leads and 1,500 contacts; every run on a fresh simulator and a fresh process.
//!
//! - `send`: `closeflow send --instance bench.yaml events.jsonl` in a fresh directory (the
//!   resume file is the default one there); a run in parts (a warm-up first) reads standard
//!   input instead, `send --instance bench.yaml`, each settled part followed by padding events
//!   no mapping matches (see [`procs::SendRun`]).
//! - `serve`: `closeflow serve --config config --listen 127.0.0.1:PORT` in a fresh directory
//!   (the data directory the default one there), events posted to `/v1/batch` 100 at a time.
//!
//! Mixes (fixed seed): (a) the standard mix — 70% repeated unchanged identifies, 20% a change
//! of title of a person of the organisation, 10% new people — measured after a warm-up of the
//! same mix settled in the same process; (b) the standard mix from a cold start; (c) half new:
//! 50% changes of people of the organisation not touched before, 50% new people; (d) a
//! backfill of new people. (a)–(d) for `send` and `serve`; the naive baseline (`send --naive`:
//! a search per key per event, no coalescing, no cache) on (b)–(d), stopped after a fixed time.
//!
//! Rates are steady state: progress is read over time (`send`: its resume file, one line per
//! finished event, written and flushed after each; `serve`: `/metrics` applied + skipped +
//! dead-lettered) and the first 8 s of each measured part — the first rate window, whose
//! budget a short run spends as a burst — are left out: the rate is taken over the last k
//! whole 8 s windows before the part's end, k = ⌊(end − 8 s) / 8 s⌋, so that the span holds as
//! many rate-window resets as windows (see [`procs::Phase::steady`]). A measured part still
//! running after `--max-secs` (150 s) is stopped there and measured over what it did.
//!
//! The limit of a mix is what the recorded budget allows for the calls it needs: writes per
//! event as `closeflow dry-run --against sim:` the same starting snapshot plans them, and the
//! fewest searches its lookup keys need at 50 keys a search; limit = min(30 / writes per
//! event, 2 / searches per event) (see [`limit`]). Close calls are counted by the simulator
//! (`GET /_sim/stats`), never taken on the client's word.
//!
//! Calls per repeated unchanged identify are measured directly: a warm-up of the standard mix
//! settled, then only repeated unchanged identifies of people of the warm-up, in the same
//! process; the simulator's counts over that second part / its events.
//!
//! Options: `--mixes a,c` runs only those mixes; `--naive-secs 0` leaves the naive baseline out
//! and `--repeats 0` the repeated identifies (for a quick look at one mix; the README's table is
//! the full run). `--keys-only` runs instead one instance over 1, 2 and 3 API keys of one
//! organisation (`--keys-events`, 4,000 new people) — see [`keys_table`].

mod limit;
mod mix;
mod procs;

use crate::args;
use anyhow::Result;
use limit::Need;
use mix::World;
use procs::{Phase, SendRun};
use serde_json::Value;
use std::time::Duration;

/// The first rate window, left out of every rate.
const SKIP_SECS: f64 = 8.0;

/// One line of the table.
struct Row {
    run: String,
    mix: &'static str,
    phase: Phase,
    need: Need,
    /// 429s over the whole run (a warm-up included).
    throttled: u64,
}

impl Row {
    fn rate(&self) -> Option<f64> {
        self.phase.steady(SKIP_SECS).map(|r| r.0)
    }
    fn per_event(&self, n: u64) -> f64 {
        n as f64 / self.phase.done().max(1) as f64
    }
    fn cells(&self) -> Vec<String> {
        let rate = self.rate();
        let limit = self.need.limit();
        vec![
            self.run.clone(),
            self.mix.to_string(),
            format!("{}", self.phase.done()),
            format!("{:.1}", self.phase.end()),
            self.phase.steady(SKIP_SECS).map_or_else(
                || "ended < 16 s".into(),
                |(r, span)| format!("{r:.1} (over {span:.0} s)"),
            ),
            format!("{limit:.1}"),
            rate.map_or_else(|| "—".into(), |r| format!("{:.0}%", 100.0 * r / limit)),
            format!("{:.3}", self.need.writes_per_event()),
            format!("{:.4}", self.need.searches_per_event()),
            format!("{:.4}", self.per_event(self.phase.calls.search)),
            format!("{:.3}", self.per_event(self.phase.calls.other)),
            format!("{}", self.throttled),
            self.phase.note.clone().unwrap_or_default(),
        ]
    }
}

const HEADERS: [&str; 13] = [
    "run",
    "mix",
    "events measured",
    "wall s",
    "events/s (steady)",
    "limit events/s",
    "measured / limit",
    "planned writes/event",
    "fewest searches/event",
    "searches/event",
    "other calls/event",
    "429s",
    "note",
];

fn print_row(r: &Row) {
    let c = r.cells();
    println!(
        "  {:<30} {:<2} {:>5} ev {:>6} s {:>20} ev/s  limit {:>6} {:>5}  writes/ev {} min searches/ev {}  searches/ev {} other/ev {}  429s {} {}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12]
    );
}

/// The events of each mix, and what they need.
struct Mixes {
    warm: Vec<Value>,
    standard_warm: Vec<Value>,
    standard: Vec<Value>,
    half_new: Vec<Value>,
    backfill: Vec<Value>,
    repeat_warm: Vec<Value>,
    repeats: Vec<Value>,
}

// (`--seed S`, `--warm N`, `--events N`, `--max-secs S`, `--half-new N`, `--backfill N`, `--naive-secs S`,
// `--repeats N`)
pub fn run(args: &[&str]) -> Result<()> {
    let seed = args::number(args, "--seed", 7)? as u64;
    let n_warm = args::number(args, "--warm", 1_000)?;
    let n = args::number(args, "--events", 3_000)?;
    let max_secs = args::number(args, "--max-secs", 150)?;
    let n_half = args::number(args, "--half-new", 1_200)?;
    let n_back = args::number(args, "--backfill", 5_000)?;
    let naive_secs = args::number(args, "--naive-secs", 48)?;
    let n_rep = args::number(args, "--repeats", 1_000)?;
    let n_keys = args::number(args, "--keys-events", 4_000)?;
    let mixes = args::value(args, "--mixes")?.unwrap_or("a,b,c,d");
    if let Some(m) = mixes.split(',').find(|m| !["a", "b", "c", "d"].contains(m)) {
        anyhow::bail!("--mixes takes a comma-separated list of a, b, c, d (not {m:?})");
    }
    let bin = crate::release_closeflow()?;
    if args.contains(&"--keys-only") {
        return keys_table(&bin, seed, n_keys, args::number(args, "--max-secs", 150)?);
    }
    let org = World::new(seed).org(&["key_1"]);
    let m = {
        let mut a = World::new(seed);
        let (warm, standard_warm) = (a.standard(n_warm), a.standard(n));
        let mut r = World::new(seed);
        let repeat_warm = r.standard(500);
        Mixes {
            warm,
            standard_warm,
            standard: World::new(seed).standard(n),
            half_new: World::new(seed).half_new(n_half),
            backfill: World::new(seed).backfill(n_back),
            repeats: r.repeated(n_rep),
            repeat_warm,
        }
    };
    let scratch = procs::TempDir::new()?;
    let need = |before: &[Value], measured: &[Value]| {
        limit::need(&bin, &scratch.0, &org, before, measured)
    };
    let repeats_in = |before: &[Value], ev: &[Value]| {
        let all: Vec<Value> = before.iter().chain(ev).cloned().collect();
        mix::unchanged_repeats(&all) - mix::unchanged_repeats(before)
    };

    println!(
        "delivery benchmark (seed {seed}), release binary {}",
        bin.display()
    );
    println!(
        "  default flags: `closeflow send --instance bench.yaml events.jsonl` (standard input for runs in parts),"
    );
    println!(
        "  `closeflow serve --config config --listen 127.0.0.1:PORT` (events posted to /v1/batch, 100 a batch)"
    );
    println!(
        "  against `closeflow sim --state org.json`: recorded limits per key, search 16 / 8 s, other 240 / 8 s; one API key;"
    );
    println!(
        "  organisation of {} leads, {} contacts; a fresh simulator and process per run",
        mix::LEADS,
        mix::LEADS * 3 / 2
    );
    println!("mixes:");
    println!(
        "  (a) standard, warm: {n_warm} events of the standard mix settled first (same process), then {n} measured ({} repeated unchanged identifies)",
        repeats_in(&m.warm, &m.standard_warm)
    );
    println!(
        "      standard mix: 70% repeated unchanged identifies of people seen earlier, 20% a person of the org with a new title, 10% new people"
    );
    println!(
        "  (b) standard, cold: {n} events of the standard mix from a fresh start ({} repeated unchanged identifies)",
        repeats_in(&[], &m.standard)
    );
    println!(
        "  (c) half new: {n_half} events, 50% people of the org not touched before with a new title, 50% new people"
    );
    println!("  (d) backfill: {n_back} new people");
    println!(
        "events/s: steady state, the measured part's first {SKIP_SECS} s (the first rate window, its burst budget) left out: over the last k whole {SKIP_SECS} s windows before its end,"
    );
    println!(
        "  k = floor((end − {SKIP_SECS}) / {SKIP_SECS}); end = when its last event was done; done = lines of send's resume file (one per finished event) / serve's applied + skipped + dead-lettered, read every 50 ms"
    );
    println!(
        "limit = min({} / planned writes per event, {} / fewest searches per event), the recorded budget per key per second;",
        limit::WRITES_PER_SEC,
        limit::SEARCHES_PER_SEC
    );
    println!(
        "  planned writes: `closeflow dry-run --against sim:org.json --format jsonl` of the run's events (a warm-up planned first, not counted);"
    );
    println!(
        "  fewest searches: ceil(distinct lookup keys / {}) (keys a warm-up already looked up not counted)",
        limit::KEYS_PER_SEARCH
    );
    println!(
        "a measured part still running after {max_secs} s is stopped there (its note says so) and measured over what it did;"
    );
    println!(
        "calls/event: the simulator's counts during the measured part (its first 8 s included), 429s included; 429s: the whole run\n"
    );

    let max = Duration::from_secs(max_secs as u64);
    let mut rows = Vec::new();
    let mut add = |r: Row| {
        print_row(&r);
        rows.push(r);
    };
    let total = |p: &[Phase]| p.iter().map(|x| x.calls.throttled).sum::<u64>();
    let one = |bin: &std::path::Path, parts: &[&[Value]], naive: bool, cap: Option<Duration>| {
        procs::send(bin, &org, &SendRun { parts, naive, cap })
    };
    let cases: [(&'static str, &[Value], &[Value]); 4] = [
        ("a", &m.warm, &m.standard_warm),
        ("b", &[], &m.standard),
        ("c", &[], &m.half_new),
        ("d", &[], &m.backfill),
    ];
    for (mix, before, measured) in cases {
        if !mixes.split(',').any(|m| m == mix) {
            continue;
        }
        // Planned only for the mixes that run (a dry-run of every event).
        let need = need(before, measured)?;
        let parts: Vec<&[Value]> = if before.is_empty() {
            vec![measured]
        } else {
            vec![before, measured]
        };
        let warm = if before.is_empty() {
            String::new()
        } else {
            format!(" after {} warm-up", before.len())
        };
        let mut p = one(&bin, &parts, false, Some(max))?;
        let throttled = total(&p);
        add(Row {
            run: format!("send{warm}"),
            mix,
            phase: p.pop().expect("a phase"),
            need,
            throttled,
        });
        let mut p = procs::serve(&bin, &org, &parts, Some(max))?;
        let throttled = total(&p);
        add(Row {
            run: format!("serve{warm}"),
            mix,
            phase: p.pop().expect("a phase"),
            need,
            throttled,
        });
        if before.is_empty() && naive_secs > 0 {
            let cap = Duration::from_secs(naive_secs as u64);
            let mut p = one(&bin, &parts, true, Some(cap))?;
            let throttled = total(&p);
            add(Row {
                run: format!("send --naive, stopped at {naive_secs} s"),
                mix,
                phase: p.pop().expect("a phase"),
                need,
                throttled,
            });
        }
    }

    println!("\n{}", markdown(&rows));
    if n_rep == 0 {
        return Ok(());
    }
    let parts: [&[Value]; 2] = [&m.repeat_warm, &m.repeats];
    let s = one(&bin, &parts, false, None)?;
    let v = procs::serve(&bin, &org, &parts, None)?;
    println!(
        "calls per repeated unchanged identify, measured directly: {} events of the standard mix settled, then {n_rep} repeated unchanged identifies of people of the warm-up in the same process; the simulator's calls during that second part / {n_rep}",
        m.repeat_warm.len()
    );
    for (name, p) in [
        (
            "send (standard input; the part handed over once the resume file holds the warm-up)",
            &s[1],
        ),
        ("serve (between drained states)", &v[1]),
    ] {
        println!(
            "  {name}: {:.4} ({} searches + {} other over {} events; 429s {}{})",
            (p.calls.search + p.calls.other) as f64 / p.events as f64,
            p.calls.search,
            p.calls.other,
            p.events,
            p.calls.throttled,
            p.note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// One instance over 1, 2 and 3 API keys of one organisation (the simulator's organisation limit
/// is 3 keys' worth), `serve` with default flags on a backfill of new people: the write budget
/// is the ceiling, and it grows with the keys.
fn keys_table(bin: &std::path::Path, seed: u64, n: usize, max_secs: usize) -> Result<()> {
    let org = World::new(seed).org(&["key_1", "key_2", "key_3"]);
    let events = World::new(seed).backfill(n);
    println!(
        "serve with several API keys: one instance, `settings.api_key: [key_1 … key_k]`, default flags; {n} new people (backfill mix);"
    );
    println!(
        "  simulator: recorded limits per key (other 240 / 8 s), organisation 3 keys' worth; events/s steady state as above; stopped after {max_secs} s\n"
    );
    println!("| API keys | events/s (steady) | vs 1 key | other calls/event | 429s | note |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut one = None;
    for k in 1..=3 {
        let mut p = procs::serve_keys(
            bin,
            &org,
            &[&events],
            Some(Duration::from_secs(max_secs as u64)),
            k,
        )?;
        let phase = p.pop().expect("a phase");
        let rate = phase.steady(SKIP_SECS).map_or(0.0, |(r, _)| r);
        let base = *one.get_or_insert(rate);
        println!(
            "| {k} | {rate:.1} | {:.2}× | {:.3} | {} | {} |",
            rate / base.max(f64::MIN_POSITIVE),
            phase.calls.other as f64 / phase.events.max(1) as f64,
            phase.calls.throttled,
            phase.note.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn markdown(rows: &[Row]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADERS.join(" | "),
        " --- |".repeat(HEADERS.len())
    );
    for r in rows {
        out += &format!("| {} |\n", r.cells().join(" | "));
    }
    out
}
