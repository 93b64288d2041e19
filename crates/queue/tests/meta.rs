//! How an event arrived (`NewEvent::meta`, for its journey) is stored with it and handed back
//! with it; a queue file written before events had it opens and delivers its events.

use closeflow_queue::sqlite::{Options, SqliteQueue};
use closeflow_queue::{Deliver, Intake, NewEvent, now_ms};

fn event(id: &str, meta: Option<&str>) -> NewEvent {
    NewEvent {
        message_id: id.into(),
        body: format!(r#"{{"type":"identify","messageId":"{id}"}}"#),
        received_at: now_ms(),
        meta: meta.map(str::to_string),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn meta_comes_back_with_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(Options::in_dir(dir.path())).unwrap();
    q.enqueue(
        "a",
        vec![
            event("m1", Some(r#"{"route":"/v1/identify"}"#)),
            event("m2", None),
        ],
    )
    .await
    .unwrap();
    let got = q.fetch("a", 10).await.unwrap();
    let metas: Vec<Option<&str>> = got.iter().map(|l| l.meta.as_deref()).collect();
    assert_eq!(metas, [Some(r#"{"route":"/v1/identify"}"#), None]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_from_before_meta_opens_and_delivers_its_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, instance TEXT NOT NULL,
                message_id TEXT NOT NULL, body TEXT NOT NULL, received_at INTEGER NOT NULL,
                state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
                not_before INTEGER NOT NULL DEFAULT 0, outcome TEXT, error TEXT,
                last_reply TEXT, settled_at INTEGER);
             INSERT INTO events(instance, message_id, body, received_at)
                VALUES ('a', 'old', '{\"type\":\"identify\",\"messageId\":\"old\"}', 1);",
        )
        .unwrap();
    }
    let q = SqliteQueue::open(Options::in_dir(dir.path())).unwrap();
    q.enqueue("a", vec![event("new", Some("{}"))])
        .await
        .unwrap();
    let got = q.fetch("a", 10).await.unwrap();
    let seen: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|l| (l.message_id.as_str(), l.meta.as_deref()))
        .collect();
    assert_eq!(seen, [("old", None), ("new", Some("{}"))]);
}
