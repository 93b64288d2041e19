//! A panic inside one event's delivery: no Close reply or event body in this code base is
//! known to cause one, so it is provoked by a queue that panics when asked to hold one event's
//! keys. The event must be dead-lettered with its reason (not left in flight, holding its keys
//! and a worker until a restart), and the next event for the same person delivered.

use closeflow_e2e::procs::{contacts, empty_org, sim_in_process};
use closeflow_queue::sqlite::{Options, SqliteQueue};
use closeflow_queue::{
    DeadLetters, Deliver, Delivery, Enqueued, Inspect, Intake, KeyHold, Lease, NewEvent,
    QueueError, now_ms,
};
use closeflow_server::delivery::{Deliverer, Policy, Wakers};
use closeflow_server::registry::{ClientPolicy, Registry};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The embedded queue's delivery role, except that holding the keys of message `boom` panics.
struct Panicky(SqliteQueue);

impl Deliver for Panicky {
    type Backend = SqliteQueue;
    async fn fetch(
        &self,
        instance: &str,
        max: usize,
    ) -> Result<Vec<Lease<SqliteQueue>>, QueueError> {
        self.0.fetch(instance, max).await
    }
    async fn hold_keys(
        &self,
        d: &Delivery,
        keys: &[String],
    ) -> Result<Option<KeyHold>, QueueError> {
        assert!(d.message_id != "boom", "provoked panic in delivery");
        self.0.hold_keys(d, keys).await
    }
}

fn identify(message_id: &str, title: &str) -> NewEvent {
    NewEvent {
        message_id: message_id.into(),
        body: serde_json::json!({
            "type": "identify", "messageId": message_id, "userId": "u1",
            "traits": {"email": "ada@corp.io", "title": title},
            "context": {"traits": {}}, "timestamp": "2026-11-30T10:00:00Z"
        })
        .to_string(),
        received_at: now_ms(),
        meta: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_one_delivery_dead_letters_that_event_and_the_key_goes_on() {
    let (sim, api) = sim_in_process(&empty_org()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("acme.yaml"),
        format!(
            "name: acme\nendpoint: {api}\nsettings:\n  api_key: test_key\n  contact_custom_field_id_for_user_id: cf_user\nmappings:\n  - name: People\n    trigger: type = \"identify\"\n    action: create_or_update_contact_and_lead\n    fields:\n      contact_title: $.traits.title\n"
        ),
    )
    .unwrap();
    let registry = Arc::new(Registry::new(&config, ClientPolicy::default()));
    let reports = registry.scan().unwrap();
    assert!(registry.get("acme").is_some(), "{reports:?}");

    let queue = SqliteQueue::open(Options::in_dir(&dir.path().join("data"))).unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let wakers = Arc::new(Wakers::default());
    let deliverer = Arc::new(Deliverer {
        queue: Arc::new(Panicky(queue.clone())),
        registry,
        wakers: wakers.clone(),
        policy: Policy::default(),
        stop,
        recorder: closeflow_server::journey::Recorder::off(),
    });
    let _schedulers = deliverer.start_new(&mut HashSet::new());
    let got = queue
        .enqueue(
            "acme",
            vec![identify("boom", "CEO"), identify("next", "CTO")],
        )
        .await
        .unwrap();
    assert_eq!(got, [Enqueued::Accepted, Enqueued::Accepted]);
    wakers.wake("acme");

    let start = Instant::now();
    let stats = loop {
        let s = queue.stats().await.unwrap();
        let acme = s.into_iter().find(|s| s.instance == "acme").unwrap();
        if acme.queued == 0 {
            break acme;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still queued: {acme:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats.applied, 1, "{stats:?}");
    assert_eq!(
        stats.dead_lettered,
        [("internal_error".to_string(), 1)],
        "{stats:?}"
    );
    let dead = queue.dead_letters(Some("acme")).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "boom");
    assert_eq!(dead[0].reason, "internal_error");
    assert!(dead[0].error.contains("panicked"), "{}", dead[0].error);
    // The person's later event went through on the same key.
    let st = sim.snapshot();
    let cs = contacts(&st);
    assert_eq!(cs.len(), 1, "{st}");
    assert_eq!(cs[0]["title"], "CTO");
    let _ = stop_tx.send(true);
}
