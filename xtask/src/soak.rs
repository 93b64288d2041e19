//! `cargo xtask soak [--events N] [--seed S] [--kills K]`: the real server and simulator
//! under injected faults (and, with `--kills`, `kill -9` at random moments), then the
//! reconciliation table; exits non-zero unless nothing was lost or duplicated.

use anyhow::{Context, Result, bail};
use closeflow_e2e::soak;

fn value<T: std::str::FromStr>(args: &[&str], flag: &str, default: T) -> Result<T> {
    match args.iter().position(|a| *a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{flag} takes a number")),
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && ["--events", "--seed", "--kills"].contains(&args[i - 1]);
        if !is_value && !["--events", "--seed", "--kills"].contains(a) {
            bail!(
                "unknown argument {a:?}; usage: cargo xtask soak [--events N] [--seed S] [--kills K]"
            );
        }
    }
    let mut cfg = soak::Config::new(value(args, "--events", 3_000)?, value(args, "--seed", 1)?);
    cfg.kills = value(args, "--kills", 0)?;
    println!(
        "soak: {} events, seed {}, {} kill -9, faults: 20% 5xx, 429 storms, latency, 3% dropped connections, 5% lost replies",
        cfg.events, cfg.seed, cfg.kills
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(soak::run(&cfg));
    print!("{}", r.table.render());
    println!("took {:.0} s", r.elapsed.as_secs_f64());
    if !r.table.ok() {
        if let Some(d) = &r.dir {
            println!(
                "the server's config, data and logs are kept in {}",
                d.display()
            );
        }
        bail!("the soak failed");
    }
    Ok(())
}
