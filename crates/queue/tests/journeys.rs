//! The journal's contract, run against both stores (the SQLite file and a real nats-server on
//! loopback): stages come back grouped by event in time order, found by messageId (across
//! instances, or one) and by key (emails in any case), within `since`, the most recently active
//! event first, at most `limit`; a long messageId or key works.

use closeflow_e2e::nats::NatsCluster;
use closeflow_queue::journey::{Find, Journal, Key, Query, Record, SqliteJournal, Stage};
use serde_json::json;

fn stage(instance: &str, message_id: &str, at: i64, kind: &str, keys: &[(&str, &str)]) -> Record {
    Record {
        stage: Stage {
            instance: instance.into(),
            message_id: message_id.into(),
            at,
            kind: kind.into(),
            data: json!({"n": at}),
        },
        keys: keys.iter().map(|(k, v)| Key::new(k, v)).collect(),
    }
}

fn q(find: Find, instance: Option<&str>, since: i64, limit: usize) -> Query {
    Query {
        find,
        instance: instance.map(str::to_string),
        since,
        limit,
    }
}

async fn contract<J: Journal>(j: &J) {
    let long = "m".repeat(600);
    j.write(vec![
        stage(
            "a",
            "m1",
            100,
            "received",
            &[("user_id", "u1"), ("email", "Ada@X.io")],
        ),
        stage("b", "m1", 101, "received", &[("user_id", "u1")]),
        stage("a", "m2", 200, "received", &[("user_id", "u1")]),
        stage("a", &long, 250, "received", &[("company_id", "c1")]),
    ])
    .await
    .unwrap();
    j.write(vec![
        stage("a", "m1", 300, "attempt", &[("company_id", "c1")]),
        stage("a", "m3", 50, "received", &[("user_id", "u2")]),
    ])
    .await
    .unwrap();

    // By messageId: every instance's journey, or one instance's; stages in time order.
    let all = j
        .find(&q(Find::MessageId("m1".into()), None, 0, 10))
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let a = all.iter().find(|x| x.instance == "a").unwrap();
    let kinds: Vec<&str> = a.stages.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["received", "attempt"]);
    assert_eq!(a.stages[1].data, json!({"n": 300}));
    let only_b = j
        .find(&q(Find::MessageId("m1".into()), Some("b"), 0, 10))
        .await
        .unwrap();
    assert_eq!((only_b.len(), only_b[0].stages.len()), (1, 1));

    // By key: the person's events, most recently active first; an email in any case.
    let u1 = j
        .find(&q(Find::Key(Key::new("user_id", "u1")), Some("a"), 0, 10))
        .await
        .unwrap();
    let ids: Vec<&str> = u1.iter().map(|x| x.message_id.as_str()).collect();
    assert_eq!(
        ids,
        ["m1", "m2"],
        "m1's last stage (300) is after m2's (200)"
    );
    let by_email = j
        .find(&q(Find::Key(Key::new("email", "ADA@x.IO")), None, 0, 10))
        .await
        .unwrap();
    assert_eq!(by_email.len(), 1);
    assert_eq!(
        by_email[0].stages.len(),
        2,
        "the whole journey, not only the stage that named the key"
    );
    // A key named by a later stage (the Company ID, known once a mapping ran).
    let c1 = j
        .find(&q(Find::Key(Key::new("company_id", "c1")), None, 0, 10))
        .await
        .unwrap();
    let mut ids: Vec<&str> = c1.iter().map(|x| x.message_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["m1", long.as_str()]);
    // Limit and since.
    assert_eq!(
        j.find(&q(Find::Key(Key::new("user_id", "u1")), None, 0, 1))
            .await
            .unwrap()
            .len(),
        1
    );
    let recent = j
        .find(&q(Find::Key(Key::new("user_id", "u2")), None, 60, 10))
        .await
        .unwrap();
    assert!(recent.is_empty(), "m3 was last active at 50: {recent:?}");
    assert!(
        j.find(&q(Find::MessageId("nope".into()), None, 0, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_journal_keeps_and_finds_journeys() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(dir.path(), std::time::Duration::from_secs(3600)).unwrap();
    contract(&j).await;
    // A second process reads the same file.
    let r = SqliteJournal::open_read_only(dir.path()).unwrap();
    assert_eq!(
        r.find(&q(Find::MessageId("m2".into()), None, 0, 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jetstream_journal_keeps_and_finds_journeys() {
    let nats = NatsCluster::start(1).await;
    let client = async_nats::connect(nats.nodes[0].url()).await.unwrap();
    let j = closeflow_queue::journey::JetStreamJournal::open(
        client,
        "JT",
        1,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    contract(&j).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_journal_forgets_what_was_written_before_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(dir.path(), std::time::Duration::from_secs(1)).unwrap();
    let now = closeflow_queue::now_ms();
    let old: Vec<Record> = (0..50)
        .map(|i| {
            stage(
                "a",
                &format!("old{i}"),
                now + i,
                "received",
                &[("user_id", "u")],
            )
        })
        .collect();
    j.write(old).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Written now, about events from long ago (a received stage is written with the event's
    // first attempt, which can come days later): kept, retention counts from the writing.
    j.write(vec![
        stage(
            "a",
            "late",
            now - 30 * 24 * 3_600_000,
            "received",
            &[("user_id", "u")],
        ),
        stage(
            "a",
            "new",
            closeflow_queue::now_ms(),
            "received",
            &[("user_id", "u")],
        ),
    ])
    .await
    .unwrap();
    j.prune().await;
    let left = j
        .find(&q(Find::Key(Key::new("user_id", "u")), None, 0, 100))
        .await
        .unwrap();
    let mut ids: Vec<&str> = left.iter().map(|x| x.message_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["late", "new"]);
    assert!(
        j.find(&q(Find::MessageId("old3".into()), None, 0, 10))
            .await
            .unwrap()
            .is_empty()
    );
    // The instance filter applies before the limit.
    j.write(vec![stage(
        "b",
        "other",
        closeflow_queue::now_ms() + 5,
        "received",
        &[("user_id", "u")],
    )])
    .await
    .unwrap();
    let only_a = j
        .find(&q(Find::Key(Key::new("user_id", "u")), Some("a"), 0, 1))
        .await
        .unwrap();
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0].instance, "a");
}
