//! `closeflow sim`: the Close simulator for local trials.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

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
        eprintln!(
            "Close simulator on http://127.0.0.1:{port}/api/v1/ (keys: {}); state at /_sim/state",
            sim.key_hint()
        );
        let server = closeflow_sim::serve(listener, sim.clone());
        tokio::select! {
            r = server => r?,
            _ = tokio::signal::ctrl_c() => {}
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
