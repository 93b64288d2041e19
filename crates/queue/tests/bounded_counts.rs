//! The JetStream backend's durable counters stay bounded: one message per counter (its running
//! total), not one per event counted (issue 18: the counts stream grew by a message per event
//! for ever). A real nats-server on loopback.

#[path = "jetstream_common/mod.rs"]
mod common;

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::{Deliver, Intake, Outcome};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn counting_many_events_keeps_one_message_per_counter() {
    let nats = NatsCluster::start(1).await;
    let url = nats.nodes[0].url();
    let q = common::started(&url, "BC", Duration::from_secs(2), 1).await;
    let n = 60;
    let evs = (0..n).map(|i| common::event(&format!("m{i}"))).collect();
    q.enqueue("a", evs).await.unwrap();
    let (mut done, start) = (0, Instant::now());
    while done < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{done} of {n} settled"
        );
        for d in q.fetch("a", 100).await.unwrap() {
            d.settle(Outcome::Applied)
                .await
                .map_err(|e| e.error)
                .unwrap();
            done += 1;
        }
    }
    let s = common::stats_of(&q, "a").await;
    assert_eq!(
        (s.accepted, s.applied, s.queued),
        (n as u64, n as u64, 0),
        "{s:?}"
    );
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut counts = js.get_stream("BC_COUNTS").await.unwrap();
    let info = counts.info().await.unwrap();
    assert!(
        info.state.messages <= 4,
        "one message per counter (accepted, applied …), not per event: {} messages over {} subjects",
        info.state.messages,
        info.state.subjects_count
    );
}
