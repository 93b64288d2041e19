//! The embedded queue when its file is damaged: what opening sets aside and counts; and what
//! each instance holds (its depth and waiting bytes, what intake's back-pressure reads), read
//! from the file itself.

use closeflow_queue::sqlite::{Options, SqliteQueue};
use closeflow_queue::{Deliver, Enqueued, Inspect, Intake, NewEvent, Outcome, now_ms};

fn ev(id: &str, pad: usize) -> NewEvent {
    NewEvent {
        message_id: id.to_string(),
        body: format!(
            r#"{{"type":"identify","messageId":"{id}","userId":"u_{id}","traits":{{"pad":"{}"}}}}"#,
            "x".repeat(pad)
        ),
        received_at: now_ms(),
        meta: None,
    }
}

fn open(dir: &std::path::Path) -> SqliteQueue {
    SqliteQueue::open(Options::in_dir(dir)).expect("the queue opens")
}

#[tokio::test]
async fn each_instances_depth_and_waiting_bytes_are_read_from_the_file_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    for i in 0..300 {
        q.enqueue("a", vec![ev(&format!("a{i}"), 900)])
            .await
            .unwrap();
    }
    for i in 0..10 {
        q.enqueue("b", vec![ev(&format!("b{i}"), 900)])
            .await
            .unwrap();
    }
    let (a, b) = (q.load("a"), q.load("b"));
    assert_eq!((a.queued, b.queued), (300, 10));
    assert!(a.bytes >= 300 * 900 && a.bytes < 300 * 1200, "{a:?}");
    assert!(a.bytes > 25 * b.bytes && b.bytes >= 10 * 900, "{a:?} {b:?}");
    // Settling never needs room intake could take: every event of `a` is recorded.
    let got = q.fetch("a", 1000).await.unwrap();
    let dead = got.iter().filter(|d| d.id % 10 == 0).count() as u64;
    for d in got {
        let outcome = if d.id % 10 == 0 {
            Outcome::Dead {
                reason: "rejected".into(),
                error: "HTTP 400".into(),
                last_reply: None,
            }
        } else {
            Outcome::Applied
        };
        d.settle(outcome).await.unwrap();
    }
    let settled = q.load("a");
    assert_eq!(settled.queued, 0);
    // Applied events kept for deduplication wait on nobody; dead letters still do.
    assert!(
        settled.bytes >= dead * 900 && settled.bytes < dead * 1200,
        "{settled:?} with {dead} dead letters"
    );
    let s = q.stats().await.unwrap();
    assert!(s.iter().all(|s| s.balanced()), "{s:?}");
    drop(q);
    let q = open(dir.path());
    assert_eq!((q.load("a").queued, q.load("b").queued), (0, 10));
    assert_eq!(q.load("nobody"), Default::default());
}

/// A file written before the depth table existed: opening fills it from the events.
#[tokio::test]
async fn a_file_without_the_depth_table_gets_it_filled_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.enqueue("a", vec![ev("one", 10), ev("two", 10)])
        .await
        .unwrap();
    let mut got = q.fetch("a", 1).await.unwrap();
    got.remove(0).settle(Outcome::Applied).await.unwrap();
    drop(q);
    wait_closed(dir.path());
    let c = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    c.execute_batch(
        "DROP TRIGGER depth_insert; DROP TRIGGER depth_delete; DROP TRIGGER depth_update; DROP TABLE depth;",
    )
    .unwrap();
    drop(c);
    let q = open(dir.path());
    assert_eq!(q.load("a").queued, 1);
    q.enqueue("a", vec![ev("three", 10)]).await.unwrap();
    assert_eq!(q.load("a").queued, 2);
}

fn wait_closed(dir: &std::path::Path) {
    // The writer thread closes the file on its own time; the WAL is folded in and removed then.
    let wal = dir.join("queue.db-wal");
    for _ in 0..200 {
        if !wal.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the queue file was not closed");
}

async fn filled(dir: &std::path::Path, n: usize) {
    let q = open(dir);
    for i in 0..n {
        q.enqueue("a", vec![ev(&format!("m{i}"), 200)])
            .await
            .unwrap();
    }
    drop(q);
    wait_closed(dir);
}

#[tokio::test]
async fn an_unreadable_record_is_quarantined_and_counted_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 5).await;
    let c = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    c.execute(
        "UPDATE events SET body = x'7b22747970ff' WHERE message_id = 'm2'",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE events SET body = '[1, 2]' WHERE message_id = 'm3'",
        [],
    )
    .unwrap();
    drop(c);
    let q = open(dir.path());
    assert_eq!(q.report.quarantined_records, 2);
    assert!(q.report.quarantined_file.is_none());
    let got: Vec<String> = q
        .fetch("a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message_id.clone())
        .collect();
    assert_eq!(got, ["m0", "m1", "m4"]);
    let s = &q.stats().await.unwrap()[0];
    assert_eq!(s.quarantined, 2);
    assert!(s.balanced(), "{s:?}");
}

#[tokio::test]
async fn a_garbage_or_truncated_file_is_moved_aside_and_a_new_queue_started() {
    for damage in ["garbage", "truncated", "zeroed header"] {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 300).await;
        let path = dir.path().join("queue.db");
        let bytes = std::fs::read(&path).unwrap();
        let damaged = match damage {
            "garbage" => b"this is not a database at all".repeat(200),
            "truncated" => bytes[..bytes.len() / 2].to_vec(),
            _ => {
                let mut b = bytes.clone();
                b[..100].fill(0);
                b
            }
        };
        std::fs::write(&path, damaged).unwrap();
        let q = open(dir.path());
        let aside = q
            .report
            .quarantined_file
            .clone()
            .unwrap_or_else(|| panic!("{damage}: the file was not set aside"));
        assert!(aside.exists(), "{damage}: {}", aside.display());
        // The new queue works.
        assert_eq!(
            q.enqueue("a", vec![ev("new", 10)]).await.unwrap(),
            [Enqueued::Accepted],
            "{damage}"
        );
    }
}

/// A `stats` read (each `/metrics` scrape) in the same group as a settle: the depth intake reads
/// must stay exact (it used to be resynchronised there and then decremented again, wrapping
/// below zero so that intake answered 503 `queue_full` on an empty queue). Whether the two jobs
/// share a group is up to the writer thread: over 100 rounds most do, but no single one must.
#[tokio::test]
async fn a_stats_read_beside_a_settle_keeps_the_depth_exact() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    for i in 0..100 {
        q.enqueue("a", vec![ev(&format!("d{i}"), 0)]).await.unwrap();
        let mut got = q.fetch("a", 10).await.unwrap();
        assert_eq!(got.len(), 1);
        // Both jobs are sent before the writer wakes, so they usually share a group.
        let (settled, stats) = tokio::join!(got.remove(0).settle(Outcome::Applied), q.stats());
        settled.unwrap();
        stats.unwrap();
        assert_eq!(q.load("a").queued, 0, "after event {i}");
    }
}
