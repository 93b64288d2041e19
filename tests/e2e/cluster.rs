//! Several `closeflow serve` nodes over one NATS JetStream cluster: real `nats-server`,
//! `closeflow serve` and simulator processes on loopback ports.

use crate::serve::{acme, acme_with, assert_balanced, identify, wait_dead_letters};
use closeflow_e2e::nats::NatsCluster;
use closeflow_e2e::procs::{
    ServerProc, SimProc, contacts, empty_org, leads, metric, post, wait_for,
};
use closeflow_e2e::{closeflow, text};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

/// A node of the cluster: its own config copy (the same instance file), its own logs.
pub(crate) async fn node(dir: &std::path::Path, nats: &str, id: &str, sim_api: &str) -> ServerProc {
    acme(dir, sim_api);
    ServerProc::start(
        dir,
        &[
            "--queue",
            nats,
            "--node-id",
            id,
            "--ack-wait",
            "2s",
            "--partitions",
            "4",
        ],
        &[("CLOSEFLOW_ADMIN_TOKEN", "admin-secret")],
    )
    .await
}

/// Posts until some node answers 200, starting with `first` and switching node after each
/// failure (a node may be down), as a client behind a load balancer would.
pub(crate) async fn send_until_accepted(bases: &[String], first: usize, ev: &Value) {
    let http = reqwest::Client::new();
    for i in first..first + 2_000 {
        let r = http
            .post(format!("{}/v1/identify", bases[i % bases.len()]))
            .basic_auth("wk", Some(""))
            .json(ev)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node accepted {ev} in 2,000 tries");
}

/// What node `base`'s admin route says of the cluster (`None`: it did not answer).
async fn cluster_view(base: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!("{base}/admin/cluster"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .ok()?;
    Some(r.json().await.unwrap_or_default())
}

/// The partitions of "acme" node `c` (its admin view) owns.
fn owned(c: &Value) -> Vec<u64> {
    c["instances"]["acme"]["owned"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

pub(crate) async fn drained(s: &ServerProc, want: usize) -> bool {
    let m = s.metrics().await;
    let l = "instance=\"acme\"";
    metric(&m, "closeflow_events_accepted_total", l) >= want as f64
        && metric(&m, "closeflow_queue_depth", l) == 0.0
        && metric(&m, "closeflow_events_applied_total", l) >= want as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_over_three_nats_servers_lose_nothing_and_double_nothing_through_kill_9_and_a_nats_restart()
 {
    let mut nats = NatsCluster::start(3).await;
    let sim = SimProc::start(&empty_org()).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let urls = nats.urls();
    let mut a = node(da.path(), &urls, "node-a", &sim.api()).await;
    let b = node(db.path(), &urls, "node-b", &sim.api()).await;
    let bases = vec![a.base(), b.base()];

    // 40 people in 10 companies (so leads are shared), each sending title updates one after
    // the other, alternating between the nodes, for as long as the failures go on (at least 6
    // updates each, at most 40): the load is under way whenever a node dies or comes back.
    let (people, at_least, at_most) = (40usize, 6usize, 40usize);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..people {
        let (bases, acked, stop) = (bases.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < at_most && (sent < at_least || !stop.load(Ordering::Relaxed)) {
                let ev = identify(
                    &format!("u{p}"),
                    &format!("p{p}@corp.io"),
                    &format!("c{}", p % 10),
                    &format!("title {sent}"),
                );
                send_until_accepted(&bases, p + sent, &ev).await;
                acked.fetch_add(1, Ordering::Relaxed);
                sent += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            sent
        }));
    }
    let sb = b.base();
    wait_for("node a delivering", LONG, || {
        let sb = sb.clone();
        async move {
            let m = reqwest::get(format!("{sb}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric(
                &m,
                "closeflow_node_events_total",
                "node=\"node-a\",outcome=\"applied\"",
            ) >= 5.0
        }
    })
    .await;
    // Mid-delivery: one closeflow node dies without a word, one NATS node stops; intake goes
    // on through node b and the remaining NATS quorum.
    a.kill9();
    nats.nodes[1].kill9();
    let before = acked.load(Ordering::Relaxed);
    wait_for("intake going on without them", LONG, || {
        let a = acked.clone();
        async move { a.load(Ordering::Relaxed) >= before + 40 }
    })
    .await;
    // Delivery goes on too, on node b with the remaining NATS quorum (node a's partitions
    // taken over once its leases lapse).
    let by_b = |m: &str| {
        metric(
            m,
            "closeflow_node_events_total",
            "node=\"node-b\",outcome=\"applied\"",
        )
    };
    let applied_b = by_b(&b.metrics().await);
    wait_for("delivery going on without them", LONG, || {
        let b = &b;
        async move { by_b(&b.metrics().await) >= applied_b + 20.0 }
    })
    .await;
    nats.restart(1).await;
    a.restart().await;
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for t in tasks {
        last.push(t.await.unwrap());
    }
    let total: usize = last.iter().sum();
    let start = std::time::Instant::now();
    while !drained(&b, total).await {
        assert!(
            start.elapsed() < LONG,
            "not drained within {LONG:?}\n--- metrics of b\n{}\n--- log of a\n{}\n--- log of b\n{}",
            b.metrics().await,
            tail(&a.log()),
            tail(&b.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The NATS node that was down caught up: it stores every stream, three replicas each, up to
    // the same last sequence as the other two (leases and locks, renewed all the time, aside).
    wait_for("the restarted NATS node caught up", LONG, || {
        let nats = &nats;
        async move {
            let mut all = [
                nats.streams(0).await,
                nats.streams(1).await,
                nats.streams(2).await,
            ];
            for s in &mut all {
                s.retain(|name, _| !name.ends_with("_LEASES") && !name.ends_with("_LOCKS"));
            }
            !all[0].is_empty()
                && all[0].values().all(|(replicas, _)| *replicas == 3)
                && all[1] == all[0]
                && all[2] == all[0]
        }
    })
    .await;

    let st = sim.state().await;
    assert_eq!(
        leads(&st).len(),
        10,
        "one lead per company, none doubled: {st}"
    );
    let cs = contacts(&st);
    assert_eq!(cs.len(), people, "one contact per person, none doubled");
    for c in &cs {
        let p: usize = c["custom.cf_user"]
            .as_str()
            .and_then(|u| u.strip_prefix('u'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a contact of ours: {c}"));
        assert_eq!(
            c["title"],
            format!("title {}", last[p] - 1),
            "each person's last title wins: {c}"
        );
    }
    // Both nodes' metrics show the cluster's durable counts, balanced, and say who did what.
    for s in [&a, &b] {
        let m = s.metrics().await;
        assert_balanced(&m, "acme");
        assert!(
            metric(&m, "closeflow_events_accepted_total", "instance=\"acme\"") >= total as f64,
            "every acknowledged event was stored:\n{m}"
        );
    }
    let m = b.metrics().await;
    let did = |node: &str| {
        metric(
            &m,
            "closeflow_node_events_total",
            &format!("node=\"{node}\",outcome=\"applied\""),
        )
    };
    assert!(
        did("node-a") > 0.0 && did("node-b") > 0.0,
        "both nodes delivered:\n{m}\n--- log of a\n{}\n--- log of b\n{}",
        tail(&a.log()),
        tail(&b.log())
    );
    assert_eq!(
        did("node-a") + did("node-b"),
        metric(&m, "closeflow_events_applied_total", "instance=\"acme\""),
        "per-node counts add up to the total"
    );
    assert!(metric(&m, "closeflow_node_info", "node=\"node-b\"") == 1.0);
    // The admin route says which node owns which partitions: once node a is back, the four
    // partitions are split two and two.
    let (ba, bb) = (a.base(), b.base());
    wait_for("the partitions split evenly again", LONG, || {
        let (ba, bb) = (ba.clone(), bb.clone());
        async move {
            let mut all = Vec::new();
            for base in [ba, bb] {
                let Some(c) = cluster_view(&base).await else {
                    return false;
                };
                if c["nodes"] != serde_json::json!(["node-a", "node-b"]) {
                    return false;
                }
                let mine = owned(&c);
                if mine.len() != 2 {
                    return false;
                }
                all.extend(mine);
            }
            all.sort_unstable();
            all == [0, 1, 2, 3]
        }
    })
    .await;
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn dlq_json(nats: &str) -> Value {
    let o = closeflow(&["dlq", "list", "--format", "json", "--queue", nats]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_in_the_cluster_are_listed_and_replayed_with_dlq_queue_nats() {
    let nats = NatsCluster::start(1).await;
    let sim = SimProc::start(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    acme_with(dir.path(), &sim.api(), &["wk"], "wrong_key");
    let s = ServerProc::start(
        dir.path(),
        &["--queue", &urls, "--node-id", "solo", "--ack-wait", "2s"],
        &[("CLOSEFLOW_ADMIN_TOKEN", "admin-secret")],
    )
    .await;
    let ev = identify("u1", "u1@x.io", "c1", "CTO");
    assert_eq!(
        post(&s.base(), "/v1/identify", Some("wk"), &ev).await.0,
        200
    );
    wait_dead_letters(&s, "acme", 1.0, "the event dead-lettered").await;
    let list = dlq_json(&urls);
    let dead = &list["dead_letters"][0];
    assert_eq!(dead["reason"], "unauthorized", "{list}");
    assert_eq!(dead["message_id"], "m-u1-CTO");
    assert_eq!(dead["body"]["traits"]["title"], "CTO");
    assert!(!list.to_string().contains("wrong_key"));
    let r: Value = reqwest::Client::new()
        .get(format!("{}/admin/dlq?instance=acme", s.base()))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["dead_letters"][0]["id"], dead["id"], "{r}");
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "closeflow_node_events_total",
            "node=\"solo\",outcome=\"dead_lettered\""
        ),
        1.0,
        "{m}"
    );
    assert_balanced(&m, "acme");

    // Fix the key, replay from the CLI against the cluster: applied once.
    acme(dir.path(), &sim.api());
    crate::serve::wait_loaded(&s, 2.0, "the fixed key loaded").await;
    let o = closeflow(&["dlq", "replay", "--all", "--queue", &urls]);
    assert!(o.status.success(), "{}", text(&o));
    crate::serve::wait_applied(&s, "acme", 1.0, "the replayed event applied").await;
    let st = sim.state().await;
    assert_eq!((leads(&st).len(), contacts(&st).len()), (1, 1));
    assert_eq!(contacts(&st)[0]["title"], "CTO");
    assert!(
        dlq_json(&urls)["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let o = closeflow(&["dlq", "replay", "--all", "--queue", &urls]);
    assert!(
        o.status.success(),
        "replaying nothing is fine: {}",
        text(&o)
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "closeflow_events_replayed_total", "instance=\"acme\""),
        1.0
    );
    assert_balanced(&m, "acme");
    // A replay of an event already applied plans nothing new.
    assert_eq!(sim.state().await, st);
    // capture reads the cluster's retained events: the event once (as replayed).
    let o = closeflow(&["capture", "--instance", "acme", "--queue", &urls]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(&o));
    assert_eq!(lines[0]["messageId"], "m-u1-CTO");
    assert_eq!(lines[0]["traits"]["title"], "CTO");
    // The event's journey, from the cluster's journey stream: refused, replayed by the CLI,
    // applied.
    let kinds = || {
        let o = closeflow(&["trace", "m-u1-CTO", "--queue", &urls, "--format", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let j = v["events"][0].clone();
        let kinds: Vec<String> = j["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        (kinds, j)
    };
    wait_for("the journey in the cluster", LONG, || async {
        kinds().0.len() >= 4
    })
    .await;
    let (k, j) = kinds();
    assert_eq!(k, ["received", "attempt", "replayed", "attempt"], "{j:#}");
    assert_eq!(j["stages"][1]["data"]["outcome"]["reason"], "unauthorized");
    assert_eq!(j["stages"][2]["data"]["by"], "cli");
    assert_eq!(j["stages"][3]["data"]["outcome"]["kind"], "applied");
    let o = closeflow(&["trace", "--user-id", "u1", "--queue", &urls]);
    assert!(text(&o).contains("): applied"), "{}", text(&o));

    // A node timed differently from the cluster refuses to start, and at once: not after the
    // minute a node waits for a cluster that does not answer yet.
    let other = tempfile::tempdir().unwrap();
    let (cfg, data) = (dir.path().join("config"), other.path().join("data"));
    let started = std::time::Instant::now();
    let o = closeflow(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--queue",
        &urls,
        "--node-id",
        "late",
        "--ack-wait",
        "7s",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("start every node with the same --ack-wait"),
        "{}",
        text(&o)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused at once, not retried: {:?}",
        started.elapsed()
    );
}

/// Issue 18's reorder without any fault: a person's identifies with a company and without one
/// (a browser before the company trait exists) in turn, sent to two nodes. Partitioned by the company
/// first, the two went to two partitions, often owned by two nodes, and the second could be
/// applied first: it created a lead and contact without the company, and the first then a
/// second contact under the company's lead. Partitioned by the person, one node applies both
/// in order.
#[tokio::test(flavor = "multi_thread")]
async fn one_persons_events_with_and_without_a_company_on_two_nodes_create_them_once() {
    let nats = NatsCluster::start(1).await;
    let sim = SimProc::start(&empty_org()).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let urls = nats.urls();
    let a = node(da.path(), &urls, "node-a", &sim.api()).await;
    let b = node(db.path(), &urls, "node-b", &sim.api()).await;
    // Both nodes own partitions before anything is sent, so that two partitions are often on
    // two nodes.
    let (ba, bb) = (a.base(), b.base());
    wait_for("the partitions split two and two", LONG, || {
        let (ba, bb) = (ba.clone(), bb.clone());
        async move {
            let mut n = Vec::new();
            for base in [ba, bb] {
                let Some(c) = cluster_view(&base).await else {
                    return false;
                };
                n.push(owned(&c).len());
            }
            n == [2, 2]
        }
    })
    .await;
    const UPDATES: usize = 6;
    let people = 20;
    let bases = vec![a.base(), b.base()];
    let mut tasks = Vec::new();
    for p in 0..people {
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            // Six updates, with and without the company in turn, each to the other node. One
            // company for all: by the company first, every event with it went to one partition
            // (one node, one after the other) while those without ran ahead on both.
            for k in 0..UPDATES {
                let title = format!("title {k}");
                let (user, email) = (format!("u{p}"), format!("p{p}@corp.io"));
                let mut ev = identify(&user, &email, "c0", &title);
                if k % 2 == 1 {
                    ev["traits"].as_object_mut().unwrap().remove("company");
                }
                send_until_accepted(&bases, p + k, &ev).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = UPDATES * people;
    wait_for("both nodes drained", LONG, || {
        let (a, b) = (&a, &b);
        async move { drained(a, total).await && drained(b, total).await }
    })
    .await;
    let st = sim.state().await;
    let ls = leads(&st);
    let cs = contacts(&st);
    assert_eq!(
        (ls.len(), cs.len()),
        (1, people),
        "one lead (the company's) and one contact per person, none doubled: {st}"
    );
    for c in &cs {
        assert_eq!(
            c["title"],
            format!("title {}", UPDATES - 1),
            "each person's last title wins: {c}"
        );
    }
    for l in &ls {
        assert!(
            l["custom.cf_company"] == "c0",
            "the lead is the company's (none created without it): {l}"
        );
    }
    for s in [&a, &b] {
        assert_balanced(&s.metrics().await, "acme");
    }
}

/// Issue 18: a node paused (SIGSTOP) past its partition leases under load, while people are
/// being created and Close answers 503 to some requests. The other node takes its partitions
/// over; on resume the paused node must not plan or write on its stale leases and locks (it
/// used to write old titles over new ones and create people a second time).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_while_creating_people_under_503s_doubles_nobody() {
    let nats = NatsCluster::start(1).await;
    let sim = SimProc::start(&empty_org()).await;
    sim.faults(serde_json::json!({"error_rate": 0.05})).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let urls = nats.urls();
    let a = node(da.path(), &urls, "node-a", &sim.api()).await;
    let b = node(db.path(), &urls, "node-b", &sim.api()).await;
    let bases = vec![a.base(), b.base()];
    // 30 people of 6 companies, 8 updates each, to the two nodes in turn: the first creates
    // the person (and the company's lead), the rest change the title.
    const UPDATES: usize = 8;
    let people = 30;
    let mut tasks = Vec::new();
    for p in 0..people {
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..UPDATES {
                let ev = identify(
                    &format!("u{p}"),
                    &format!("p{p}@corp.io"),
                    &format!("c{}", p % 6),
                    &format!("title {k}"),
                );
                send_until_accepted(&bases, p + k, &ev).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    let sb = b.base();
    wait_for("node a delivering", LONG, || {
        let sb = sb.clone();
        async move {
            let m = reqwest::get(format!("{sb}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric(
                &m,
                "closeflow_node_events_total",
                "node=\"node-a\",outcome=\"applied\"",
            ) >= 3.0
        }
    })
    .await;
    // Paused past its leases (2 × ack deadline + 2 s = 6 s), as a VM freeze or a long GC would.
    let pid = a.pid().expect("node a runs").to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(9)).await;
    signal("-CONT");
    for t in tasks {
        t.await.unwrap();
    }
    let total = UPDATES * people;
    let start = std::time::Instant::now();
    while !(drained(&a, total).await && drained(&b, total).await) {
        assert!(
            start.elapsed() < LONG,
            "not drained within {LONG:?}\n--- metrics of b\n{}\n--- log of a\n{}",
            b.metrics().await,
            tail(&a.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = sim.state().await;
    // Kept as test output: which node wrote what, when.
    let out = std::env::temp_dir().join("closeflow-e2e-paused-node");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("node-a.log"), a.log());
    let _ = std::fs::write(out.join("node-b.log"), b.log());
    let _ = std::fs::write(out.join("sim-state.json"), st.to_string());
    assert_eq!(
        leads(&st).len(),
        6,
        "one lead per company ({} holds the logs): {st}",
        out.display()
    );
    let cs = contacts(&st);
    assert_eq!(
        cs.len(),
        people,
        "one contact per person ({} holds the logs): {st}",
        out.display()
    );
    for c in &cs {
        assert_eq!(
            c["title"],
            format!("title {}", UPDATES - 1),
            "each person's last title wins, none overwritten by the paused node: {c}\n--- log of a\n{}",
            tail(&a.log())
        );
    }
    for s in [&a, &b] {
        assert_balanced(&s.metrics().await, "acme");
    }
}
