//! `validate --against`: an instance checked against the Close organisation it will write to,
//! a simulator snapshot (`sim:STATE.json`) or live Close (`close`, read-only).

use crate::input::Loaded;
use anyhow::{Context, Result, bail};
use closeflow_close_api::client::Reader;
use closeflow_close_api::metadata::Metadata;
use closeflow_close_tools::org_check;

pub fn check(loaded: &mut [Loaded], against: &str, close_url: Option<&str>) -> Result<()> {
    if let Some(path) = against.strip_prefix("sim:") {
        let snap: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
        )
        .with_context(|| format!("{path} is not valid JSON"))?;
        // Read as the simulator reads it (its defaults filled in), then seen as the API shows it.
        let sim = closeflow_sim::Sim::from_snapshot(Some(&snap))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{path} is not a simulator snapshot"))?;
        let meta = Metadata::from_snapshot(&format!("the snapshot {path}"), &sim.snapshot());
        for l in loaded.iter_mut() {
            if let Some(inst) = &l.instance {
                let found = org_check::check(inst, &l.raw, &meta);
                l.diagnostics.extend(located(found, &l.file));
            }
        }
        return Ok(());
    }
    if against != "close" {
        bail!(
            "--against takes sim:STATE.json (a simulator snapshot) or close (live Close, read-only), got {against}"
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    for l in loaded.iter_mut() {
        let Some(inst) = &l.instance else { continue };
        let cfg = closeflow_close_api::connect::client_config(inst, close_url)?;
        let url = cfg.base_url.clone();
        let reader = Reader::new(cfg)?;
        let meta = rt
            .block_on(Metadata::fetch(&reader, &url))
            .with_context(|| {
                format!(
                    "cannot read the organisation of instance {} at {url}",
                    inst.name
                )
            })?;
        let found = org_check::check(inst, &l.raw, &meta);
        l.diagnostics.extend(located(found, &l.file));
    }
    Ok(())
}

fn located(
    diags: Vec<closeflow_mapping::Diagnostic>,
    file: &str,
) -> impl Iterator<Item = closeflow_mapping::Diagnostic> {
    diags.into_iter().map(move |mut d| {
        d.file = file.to_string();
        d
    })
}
