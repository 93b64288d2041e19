//! The queue contract as executable checks: every backend runs [`check_all`] (see
//! `tests/contract.rs`).
//!
//! A backend provides a [`Harness`]: a fresh, empty store that can be opened again (a restart
//! of the process), with a short dedup window so that expiry can be observed.

use closeflow_queue::{
    DeadLetters, Deliver, Enqueued, Inspect, InstanceStats, Intake, Lease, NewEvent, Outcome,
    Queue, now_ms,
};
use std::future::Future;
use std::time::{Duration, Instant};

/// A fresh store for one check.
pub trait Harness: Send {
    type Q: Queue;
    /// Opens the store: the same storage each time (a second call is a restart).
    fn open(&mut self) -> impl Future<Output = Self::Q> + Send;
    /// The dedup window the store was made with (short: the checks wait it out once).
    fn dedup_window(&self) -> Duration;
    /// How long the events a process held stay leased after it went away: zero where leases
    /// die with the process (SQLite), the ack deadline and lease time of a shared log (NATS).
    fn lease_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// After a restart: what `fetch` hands out once the previous process's leases lapsed, polling
/// until `want` events came back or `limit` passed, then one more `fetch`, so that a
/// duplicate hand-out shows in the result. With a zero limit this is two `fetch`es back to
/// back: the one the check did before backends with time-bound leases existed, and that one.
async fn fetch_after_restart<Q: Queue>(
    q: &Q,
    instance: &str,
    want: usize,
    limit: Duration,
) -> Vec<Lease<<Q as Deliver>::Backend>> {
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        got.extend(q.fetch(instance, 10).await.unwrap());
        if got.len() >= want || start.elapsed() >= limit {
            // Nothing more may come: a second fetch would hand out a duplicate.
            got.extend(q.fetch(instance, 10).await.unwrap());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ev(id: &str) -> NewEvent {
    NewEvent {
        message_id: id.to_string(),
        body: format!(r#"{{"type":"identify","messageId":"{id}","userId":"u_{id}"}}"#),
        received_at: now_ms(),
        meta: None,
    }
}

fn evs(ids: &[&str]) -> Vec<NewEvent> {
    ids.iter().map(|i| ev(i)).collect()
}

/// Runs every check, each on a fresh store from `new`.
pub async fn check_all<H: Harness>(new: impl Fn() -> H) {
    fetch_hands_out_each_event_once_in_order(new()).await;
    duplicates_are_stored_once(new()).await;
    instances_are_separate(new()).await;
    unsettled_events_come_back_after_a_restart(new()).await;
    final_outcomes_are_final_and_counted_once(new()).await;
    a_retry_keeps_the_event_and_its_attempts(new()).await;
    dead_letters_list_show_replay_drop(new()).await;
    dedup_window_expires(new()).await;
    concurrent_enqueues_all_land(new()).await;
    retained_events_can_be_read_back(new()).await;
}

pub async fn fetch_hands_out_each_event_once_in_order<H: Harness>(mut h: H) {
    let q = h.open().await;
    let r = q.enqueue("a", evs(&["m1", "m2", "m3"])).await.unwrap();
    assert_eq!(r, vec![Enqueued::Accepted; 3]);
    let got = q.fetch("a", 2).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|d| d.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    assert!(got[0].id < got[1].id, "ids increase in queue order");
    assert!(got[0].body.contains("u_m1"));
    assert_eq!(got[0].attempts, 0);
    let rest = q.fetch("a", 10).await.unwrap();
    assert_eq!(rest.len(), 1, "events handed out are not handed out again");
    assert_eq!(rest[0].message_id, "m3");
    assert!(q.fetch("a", 10).await.unwrap().is_empty());
    q.enqueue("a", evs(&["m4"])).await.unwrap();
    let later = q.fetch("a", 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].message_id, "m4");
}

pub async fn duplicates_are_stored_once<H: Harness>(mut h: H) {
    let q = h.open().await;
    assert_eq!(
        q.enqueue("a", evs(&["m1", "m1"])).await.unwrap(),
        [Enqueued::Accepted, Enqueued::Duplicate]
    );
    assert_eq!(
        q.enqueue("a", evs(&["m1"])).await.unwrap(),
        [Enqueued::Duplicate]
    );
    let mut got = q.fetch("a", 10).await.unwrap();
    assert_eq!(got.len(), 1);
    // Still a duplicate once settled, within the window.
    got.remove(0).settle(Outcome::Applied).await.unwrap();
    assert_eq!(
        q.enqueue("a", evs(&["m1"])).await.unwrap(),
        [Enqueued::Duplicate]
    );
    let s = stats_of(&q, "a").await;
    assert_eq!((s.accepted, s.duplicates, s.applied), (1, 3, 1));
    assert!(s.balanced(), "{s:?}");
}

pub async fn instances_are_separate<H: Harness>(mut h: H) {
    let q = h.open().await;
    assert_eq!(
        q.enqueue("a", evs(&["m1"])).await.unwrap(),
        [Enqueued::Accepted]
    );
    assert_eq!(
        q.enqueue("b", evs(&["m1"])).await.unwrap(),
        [Enqueued::Accepted],
        "dedup is per instance"
    );
    let a = q.fetch("a", 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].instance, "a");
    assert_eq!(q.fetch("b", 10).await.unwrap()[0].instance, "b");
    assert!(q.fetch("c", 10).await.unwrap().is_empty());
}

pub async fn unsettled_events_come_back_after_a_restart<H: Harness>(mut h: H) {
    let q = h.open().await;
    q.enqueue("a", evs(&["m1", "m2"])).await.unwrap();
    let mut got = q.fetch("a", 10).await.unwrap().into_iter();
    first(&mut got).settle(Outcome::Applied).await.unwrap();
    // The process goes away with every lease it held.
    drop((got, q));
    let q = h.open().await;
    let again = fetch_after_restart(&q, "a", 1, h.lease_timeout()).await;
    assert_eq!(
        again
            .iter()
            .map(|d| d.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m2"],
        "the settled event stays settled; the leased one is handed out again"
    );
    assert_eq!(
        q.enqueue("a", evs(&["m1", "m2"])).await.unwrap(),
        [Enqueued::Duplicate, Enqueued::Duplicate],
        "deduplication survives a restart"
    );
}

pub async fn final_outcomes_are_final_and_counted_once<H: Harness>(mut h: H) {
    let q = h.open().await;
    q.enqueue("a", evs(&["m1", "m2", "m3", "m4"]))
        .await
        .unwrap();
    let mut got = q.fetch("a", 10).await.unwrap().into_iter();
    assert!(
        first(&mut got)
            .settle(Outcome::Applied)
            .await
            .unwrap()
            .is_none(),
        "a final outcome consumes the lease: an event is settled once (a second settle of \
         the same lease does not compile; see `Lease::settle`)"
    );
    first(&mut got)
        .settle(Outcome::Skipped {
            reason: "not_matched".into(),
        })
        .await
        .unwrap();
    first(&mut got)
        .settle(Outcome::Dead {
            reason: "rejected".into(),
            error: "HTTP 400".into(),
            last_reply: Some("{}".into()),
        })
        .await
        .unwrap();
    assert!(
        q.fetch("a", 10).await.unwrap().is_empty(),
        "settled events are not handed out again"
    );
    let s = stats_of(&q, "a").await;
    assert_eq!(s.accepted, 4);
    assert_eq!(s.applied, 1);
    assert_eq!(s.skipped, vec![("not_matched".to_string(), 1)]);
    assert_eq!(s.dead_lettered, vec![("rejected".to_string(), 1)]);
    assert_eq!(s.queued, 1);
    assert_eq!(s.dead_now, 1);
    assert!(s.oldest_queued_at.is_some());
    assert!(s.balanced(), "{s:?}");
    drop((got, q));
    let q = h.open().await;
    let s2 = stats_of(&q, "a").await;
    assert_eq!(
        (s2.accepted, s2.applied, s2.queued),
        (4, 1, 1),
        "counts are durable"
    );
    assert_eq!(
        fetch_after_restart(&q, "a", 1, h.lease_timeout())
            .await
            .len(),
        1
    );
}

pub async fn a_retry_keeps_the_event_and_its_attempts<H: Harness>(mut h: H) {
    let q = h.open().await;
    q.enqueue("a", evs(&["m1"])).await.unwrap();
    let mut d = q.fetch("a", 10).await.unwrap().remove(0);
    let later = now_ms() + 60_000;
    for n in 1..=2 {
        d = d
            .settle(Outcome::Retry {
                not_before: later,
                reason: "http_503".into(),
                error: "HTTP 503".into(),
            })
            .await
            .unwrap()
            .expect("a retry hands the lease back");
        assert_eq!((d.attempts, d.not_before), (n, later), "as recorded");
    }
    let s = stats_of(&q, "a").await;
    assert_eq!(s.retried, vec![("http_503".to_string(), 2)]);
    assert_eq!(s.queued, 1, "a retried event is still queued");
    assert!(s.balanced(), "{s:?}");
    drop((d, q));
    let q = h.open().await;
    let mut back = fetch_after_restart(&q, "a", 1, h.lease_timeout()).await;
    assert_eq!(back.len(), 1, "the retried event comes back once");
    let d = back.remove(0);
    assert_eq!(d.attempts, 2, "attempts are durable");
    assert_eq!(d.not_before, later, "the backoff is durable");
    d.settle(Outcome::Applied).await.unwrap();
    assert!(stats_of(&q, "a").await.balanced());
}

pub async fn dead_letters_list_show_replay_drop<H: Harness>(mut h: H) {
    let q = h.open().await;
    q.enqueue("a", evs(&["m1", "m2"])).await.unwrap();
    q.enqueue("b", evs(&["m3"])).await.unwrap();
    let mut got = q.fetch("a", 10).await.unwrap().into_iter();
    let dead = |why: &str| Outcome::Dead {
        reason: why.into(),
        error: format!("{why} happened"),
        last_reply: Some(r#"{"error":"nope"}"#.into()),
    };
    first(&mut got).settle(dead("rejected")).await.unwrap();
    first(&mut got).settle(dead("unauthorized")).await.unwrap();
    let b = q.fetch("b", 10).await.unwrap().remove(0);
    b.settle(dead("rejected")).await.unwrap();

    assert_eq!(q.dead_letters(None).await.unwrap().len(), 3);
    let list = q.dead_letters(Some("a")).await.unwrap();
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert_eq!(
        (first.message_id.as_str(), first.reason.as_str()),
        ("m1", "rejected")
    );
    assert_eq!(first.error, "rejected happened");
    assert_eq!(first.last_reply.as_deref(), Some(r#"{"error":"nope"}"#));
    assert_eq!(first.attempts, 1);
    assert!(first.body.contains("u_m1"));
    let shown = q.dead_letter(first.id).await.unwrap().unwrap();
    assert_eq!(&shown, first);

    assert!(q.replay(first.id).await.unwrap());
    assert!(
        !q.replay(first.id).await.unwrap(),
        "a replayed event is no longer a dead letter"
    );
    assert!(q.dead_letter(first.id).await.unwrap().is_none());
    let mut again = q.fetch("a", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, "m1");
    assert_eq!(again[0].attempts, 0, "a replay starts afresh");
    again.remove(0).settle(Outcome::Applied).await.unwrap();
    assert_eq!(
        q.enqueue("a", evs(&["m1"])).await.unwrap(),
        [Enqueued::Duplicate]
    );

    let second = q.dead_letters(Some("a")).await.unwrap().remove(0);
    assert!(q.drop_dead(second.id).await.unwrap());
    assert!(!q.drop_dead(second.id).await.unwrap());
    assert!(q.dead_letters(Some("a")).await.unwrap().is_empty());
    assert!(!q.replay(second.id).await.unwrap());

    let s = stats_of(&q, "a").await;
    assert_eq!(s.replayed, 1);
    assert_eq!(s.dead_now, 0);
    assert_eq!(s.dead_lettered_total(), 2, "dead-lettering stays counted");
    assert!(s.balanced(), "{s:?}");
}

pub async fn dedup_window_expires<H: Harness>(mut h: H) {
    let q = h.open().await;
    q.enqueue("a", evs(&["m1"])).await.unwrap();
    let d = q.fetch("a", 10).await.unwrap().remove(0);
    d.settle(Outcome::Applied).await.unwrap();
    tokio::time::sleep(h.dedup_window() + Duration::from_millis(300)).await;
    assert_eq!(
        q.enqueue("a", evs(&["m1"])).await.unwrap(),
        [Enqueued::Accepted],
        "after the window, the same messageId is a new event"
    );
    assert_eq!(q.fetch("a", 10).await.unwrap().len(), 1);
}

pub async fn concurrent_enqueues_all_land<H: Harness>(mut h: H) {
    let q = std::sync::Arc::new(h.open().await);
    let mut tasks = Vec::new();
    for t in 0..40 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let ids: Vec<String> = (0..5).map(|i| format!("t{t}-{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            q.enqueue("a", evs(&refs)).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|r| *r == Enqueued::Accepted));
    }
    let all = q.fetch("a", 1000).await.unwrap();
    assert_eq!(all.len(), 200);
    let s = stats_of(q.as_ref(), "a").await;
    assert_eq!((s.accepted, s.queued), (200, 200));
}

pub async fn retained_events_can_be_read_back<H: Harness>(mut h: H) {
    let q = h.open().await;
    let t0 = now_ms();
    q.enqueue("a", evs(&["m1", "m2"])).await.unwrap();
    q.enqueue("b", evs(&["m3"])).await.unwrap();
    let d = q.fetch("a", 10).await.unwrap().remove(0);
    d.settle(Outcome::Applied).await.unwrap();
    let r = q.retained("a", t0, 0, 10).await.unwrap();
    assert_eq!(
        r.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(),
        ["m1", "m2"],
        "settled and queued events alike, oldest first"
    );
    assert!(r[0].body.contains("u_m1"));
    let first = q.retained("a", t0, 0, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let next = q.retained("a", t0, first[0].id, 10).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|e| e.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m2"],
        "pages continue after the last id"
    );
    let later = q.retained("a", now_ms() + 60_000, 0, 10).await.unwrap();
    assert!(later.is_empty());
}

/// The next lease of a fetch.
fn first<L>(leases: &mut impl Iterator<Item = Lease<L>>) -> Lease<L> {
    leases.next().expect("one more event was fetched")
}

async fn stats_of<Q: Inspect>(q: &Q, instance: &str) -> InstanceStats {
    q.stats()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.instance == instance)
        .unwrap_or_default()
}
