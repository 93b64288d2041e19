//! `closeflow sim`: the Close simulator for local trials.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// Shown by `closeflow sim --help`; the README says the same.
pub const HELP: &str = "\
Fault injection at run time: POST /_sim/faults with a JSON object (every key optional; the
body replaces the faults in force, so {} switches them all off):
  error_rate       share of requests answered 503, 0.0-1.0
  storm            the next this-many requests are answered 429
  latency_ms       milliseconds added to every reply
  drop_rate        share of requests whose connection is cut before it is processed
  lost_reply_rate  share of requests processed whose reply is then lost
  lose_reply_to    [\"METHOD path-prefix\", ...], e.g. [\"POST lead/\"]: the next matching
                   request of each is processed and its reply lost, once
  e.g. curl -X POST localhost:9000/_sim/faults -d '{\"error_rate\": 0.2, \"latency_ms\": 50}'

Rate limits, per key and endpoint group, from the snapshot's `limits` (any subset; the rest
keep the recorded profile, and a non-default profile is saved back by --save); the snapshot's
keys together (the organisation) get 3 keys' worth per group, however many there are:
  \"limits\": {\"search\": 16, \"other\": 240, \"delete_lead\": 80, \"window_secs\": 8.0,
              \"search_conditions\": 0}
  (search_conditions: the most conditions one search may hold before it is answered 400;
  0 is no bound)

GET /_sim/state returns the state in the snapshot format.";

pub fn run(state: Option<&Path>, port: u16, save: Option<&Path>) -> Result<ExitCode> {
    let snapshot = match state {
        Some(p) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
            )
            .with_context(|| format!("{} is not valid JSON", p.display()))?,
        ),
        None => None,
    };
    let sim = closeflow_sim::Sim::from_snapshot(snapshot.as_ref()).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        // With --port 0 the system picks a free port; say which one it picked.
        let port = listener.local_addr()?.port();
        eprintln!(
            "Close simulator on http://127.0.0.1:{port}/api/v1/ (keys: {}); state at /_sim/state",
            sim.key_hint()
        );
        let server = closeflow_sim::serve(listener, sim.clone());
        // SIGTERM (how service managers and `kill` stop a process) ends the simulator as
        // Ctrl-C does, so that `--save` still saves.
        tokio::select! {
            r = server => r?,
            () = closeflow_server::terminated() => {}
        }
        if let Some(path) = save {
            std::fs::write(path, serde_json::to_string_pretty(&sim.snapshot())?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("state saved to {}", path.display());
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
