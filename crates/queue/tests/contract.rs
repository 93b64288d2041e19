//! The queue contract against both backends: the embedded SQLite file (in a temporary dir) and
//! NATS JetStream (a real nats-server on loopback).

#[path = "contract/checks.rs"]
mod checks;

use checks::Harness;
use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::jetstream::{self, JetStreamQueue};
use closeflow_queue::sqlite::{Options, SqliteQueue};
use std::time::Duration;

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Harness for Sqlite {
    type Q = SqliteQueue;
    async fn open(&mut self) -> SqliteQueue {
        let mut o = Options::in_dir(self.dir.path());
        o.dedup_window_ms = self.dedup_window().as_millis() as i64;
        SqliteQueue::open(o).expect("the queue opens")
    }
    fn dedup_window(&self) -> Duration {
        Duration::from_millis(300)
    }
}

#[tokio::test]
async fn sqlite_backend_passes_the_queue_contract() {
    checks::check_all(|| Sqlite {
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
}

/// A lease cannot be settled twice (the type consumes it), but a process can still hold a lease
/// on an event another handle settled meanwhile (`closeflow dlq` beside a server, a takeover):
/// settling it must be refused as `NotFound`, without the lease back, and count nothing.
#[tokio::test]
async fn a_stale_lease_on_an_event_settled_elsewhere_settles_nothing() {
    use closeflow_queue::{Deliver, Inspect, Intake, NewEvent, Outcome, QueueError, now_ms};
    let mut h = Sqlite {
        dir: tempfile::tempdir().unwrap(),
    };
    let first = h.open().await;
    let ev = NewEvent {
        message_id: "m1".into(),
        body: r#"{"type":"identify","userId":"u1"}"#.into(),
        received_at: now_ms(),
        meta: None,
    };
    first.enqueue("a", vec![ev]).await.unwrap();
    let stale = first
        .fetch("a", 1)
        .await
        .unwrap()
        .pop()
        .expect("m1 handed out");
    // A second handle on the same file hands the unsettled event out again and settles it.
    let second = h.open().await;
    let fresh = second
        .fetch("a", 1)
        .await
        .unwrap()
        .pop()
        .expect("m1 handed out again");
    assert!(fresh.settle(Outcome::Applied).await.unwrap().is_none());
    let refused = stale
        .settle(Outcome::Applied)
        .await
        .expect_err("the event was settled elsewhere");
    assert!(
        matches!(refused.error, QueueError::NotFound(_)),
        "{:?}",
        refused.error
    );
    assert!(refused.lease.is_none(), "nothing to try again with");
    let stats = first.stats().await.unwrap();
    let a = stats.iter().find(|s| s.instance == "a").unwrap();
    assert_eq!((a.accepted, a.applied, a.queued), (1, 1, 0), "counted once");
    assert!(a.balanced());
}

/// The JetStream backend against a real `nats-server` (one JetStream server on loopback, one
/// prefix per check so the checks never see each other's streams).
struct Nats {
    url: String,
    prefix: String,
}

impl Harness for Nats {
    type Q = JetStreamQueue;
    async fn open(&mut self) -> JetStreamQueue {
        let mut o = jetstream::Options::new(vec![self.url.clone()], "contract-node".into());
        o.prefix = self.prefix.clone();
        o.partitions = 2;
        o.ack_wait = Duration::from_secs(1);
        o.dedup_window = self.dedup_window();
        o.retention = Duration::from_secs(600);
        o.replicas = Some(1);
        let q = JetStreamQueue::connect(o, None, None)
            .await
            .expect("the queue connects");
        q.start();
        q
    }
    fn dedup_window(&self) -> Duration {
        // Longer than a restart takes here (the old lease must lapse), so that deduplication
        // across a restart is checked within the window.
        Duration::from_secs(8)
    }
    fn lease_timeout(&self) -> Duration {
        // A restarted node waits out its old lease (2 × ack deadline + 2 s), then redelivery.
        Duration::from_secs(15)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_backend_passes_the_queue_contract() {
    let nats = NatsCluster::start(1).await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    let url = nats.nodes[0].url();
    checks::check_all(|| Nats {
        url: url.clone(),
        prefix: format!("T{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
    })
    .await;
}
