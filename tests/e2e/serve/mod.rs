//! `closeflow serve` end to end: the real server process and the real simulator process on
//! loopback ports, real HTTP, the real SQLite queue file.
//!
//! This module holds the setup the topic modules below (and other test modules) share.

mod dead_letters;
mod durability;
mod instances;
mod intake;
mod journeys;
mod libraries;

use closeflow_e2e::procs::{
    ServerProc, SimProc, contacts, empty_org, leads, metric, post, wait_for,
};
use closeflow_e2e::{closeflow, text};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

pub(crate) use closeflow_e2e::soak::workload::instance;

/// The usual one-instance setup: "acme" over `sim_api`, write key `wk`, API key `test_key`.
pub(crate) fn acme(dir: &Path, sim_api: &str) {
    acme_with(dir, sim_api, &["wk"], "test_key");
}

/// "acme" with other write keys or another Close API key (`wrong_key`: every call is 401).
pub(crate) fn acme_with(dir: &Path, sim_api: &str, write_keys: &[&str], api_key: &str) {
    write_config(
        dir,
        "acme.yaml",
        &instance("acme", sim_api, write_keys, api_key, "$.traits.title"),
    );
}

pub(crate) fn write_config(dir: &Path, file: &str, text: &str) {
    let c = dir.join("config");
    std::fs::create_dir_all(&c).unwrap();
    // Write then rename, as editors and deploy tools do, so a reload never sees half a file.
    let tmp = c.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, c.join(file)).unwrap();
}

/// Two instances: "acme" over `a` (write key `wk_a`) and "globex" over `b` (`wk_b`).
pub(crate) fn two_instances(dir: &Path, a: &SimProc, b: &SimProc) {
    for (file, name, sim, key) in [
        ("a.yaml", "acme", a, "wk_a"),
        ("b.yaml", "globex", b, "wk_b"),
    ] {
        write_config(
            dir,
            file,
            &instance(name, &sim.api(), &[key], "test_key", "$.traits.title"),
        );
    }
}

pub(crate) fn identify(user: &str, email: &str, company: &str, title: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("m-{user}-{title}"),
           "traits": {"email": email, "name": format!("Person {user}"), "title": title,
                      "company": {"id": company, "name": format!("Company {company}")}}})
}

async fn queue_drained(s: &ServerProc, instance: &str) -> bool {
    let m = s.metrics().await;
    let label = format!("instance=\"{instance}\"");
    metric(&m, "closeflow_events_accepted_total", &label) > 0.0
        && metric(&m, "closeflow_queue_depth", &label) == 0.0
}

/// Waits until `instance`'s dead-letter store holds `n` events, as `/metrics` reports it.
pub(crate) async fn wait_dead_letters(s: &ServerProc, instance: &str, n: f64, what: &str) {
    let label = format!("instance=\"{instance}\"");
    wait_for(what, LONG, || async {
        metric(&s.metrics().await, "closeflow_dead_letters", &label) == n
    })
    .await;
}

/// Waits until the server has loaded instance files `n` times (the start counts as one): an
/// edited file is running.
pub(crate) async fn wait_loaded(s: &ServerProc, n: f64, what: &str) {
    wait_for(what, LONG, || async {
        metric(
            &s.metrics().await,
            "closeflow_config_reloads_total",
            "result=\"loaded\"",
        ) >= n
    })
    .await;
}

/// Waits until `instance` has applied exactly `n` events, as `/metrics` reports it.
pub(crate) async fn wait_applied(s: &ServerProc, instance: &str, n: f64, what: &str) {
    let label = format!("instance=\"{instance}\"");
    wait_for(what, LONG, || async {
        metric(&s.metrics().await, "closeflow_events_applied_total", &label) == n
    })
    .await;
}

/// accepted + replayed = applied + skipped + dead-lettered + queued, from the metrics alone.
pub(crate) fn assert_balanced(m: &str, instance: &str) {
    let l = format!("instance=\"{instance}\"");
    let accepted = metric(m, "closeflow_events_accepted_total", &l);
    let replayed = metric(m, "closeflow_events_replayed_total", &l);
    let outcomes = metric(m, "closeflow_events_applied_total", &l)
        + metric(m, "closeflow_events_skipped_total", &l)
        + metric(m, "closeflow_events_dead_lettered_total", &l)
        + metric(m, "closeflow_queue_depth", &l);
    assert_eq!(
        accepted + replayed,
        outcomes,
        "the metrics must balance:\n{m}"
    );
}
