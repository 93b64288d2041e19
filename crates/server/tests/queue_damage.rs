//! The embedded queue when its file is damaged or full: what opening sets aside and counts,
//! and that a full queue refuses new events without losing or blocking the queued ones.

use closeflow_server::queue::sqlite::{Options, SqliteQueue};
use closeflow_server::queue::{Enqueued, NewEvent, Queue, QueueError, Settle, now_ms};

fn ev(id: &str, pad: usize) -> NewEvent {
    NewEvent {
        message_id: id.to_string(),
        body: format!(
            r#"{{"type":"identify","messageId":"{id}","userId":"u_{id}","traits":{{"pad":"{}"}}}}"#,
            "x".repeat(pad)
        ),
        received_at: now_ms(),
    }
}

fn open(dir: &std::path::Path, max_bytes: Option<u64>) -> SqliteQueue {
    let mut o = Options::in_dir(dir);
    o.max_bytes = max_bytes;
    SqliteQueue::open(o).expect("the queue opens")
}

#[tokio::test]
async fn a_full_queue_refuses_intake_but_still_settles_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), Some(256 * 1024));
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..10_000 {
        match q.enqueue("a", vec![ev(&format!("m{i}"), 900)]).await {
            Ok(r) => {
                assert_eq!(r, [Enqueued::Accepted]);
                acked.push(format!("m{i}"));
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(QueueError::Full(_))),
        "{refused:?} after {} events",
        acked.len()
    );
    assert!(acked.len() > 50, "{} events fit in 256 KiB", acked.len());
    // Refused again, and nothing of the refused request was stored.
    assert!(matches!(
        q.enqueue("a", vec![ev("late", 10)]).await,
        Err(QueueError::Full(_))
    ));
    // Delivery goes on: every acknowledged event is there and can be settled in the headroom.
    let got = q.fetch("a", 100_000).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.message_id.clone()).collect::<Vec<_>>(),
        acked
    );
    // Most are applied, one in ten dead-lettered with a reason and the reply.
    for d in &got {
        let outcome = if d.id % 10 == 0 {
            Settle::Dead {
                reason: "rejected".into(),
                error: "HTTP 400 from POST lead/: the reply named a field error".into(),
                last_reply: Some("HTTP 400".into()),
            }
        } else {
            Settle::Applied
        };
        q.settle(d, outcome).await.unwrap_or_else(|e| {
            panic!(
                "settling {} of {} fits in the headroom: {e}",
                d.id,
                acked.len()
            )
        });
    }
    let s = &q.stats().await.unwrap()[0];
    let dead = got.iter().filter(|d| d.id % 10 == 0).count() as u64;
    assert_eq!(
        (s.accepted, s.applied, s.dead_lettered_total(), s.queued),
        (acked.len() as u64, acked.len() as u64 - dead, dead, 0)
    );
    // Intake stays closed while the settled events are retained; a restart with a larger
    // limit opens it.
    assert!(matches!(
        q.enqueue("a", vec![ev("still full", 10)]).await,
        Err(QueueError::Full(_))
    ));
    drop(q);
    // A larger limit after a restart takes effect.
    let q = open(dir.path(), Some(4 * 1024 * 1024));
    assert_eq!(
        q.enqueue("a", vec![ev("bigger", 900)]).await.unwrap(),
        [Enqueued::Accepted]
    );
}

async fn filled(dir: &std::path::Path, n: usize) {
    let q = open(dir, None);
    for i in 0..n {
        q.enqueue("a", vec![ev(&format!("m{i}"), 200)])
            .await
            .unwrap();
    }
    drop(q);
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
    let q = open(dir.path(), None);
    assert_eq!(q.report.quarantined_records, 2);
    assert!(q.report.quarantined_file.is_none());
    let got: Vec<String> = q
        .fetch("a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message_id)
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
        let q = open(dir.path(), None);
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

/// `stats` (each `/metrics` scrape) resynchronises the depth intake reads: a settle committed
/// in the same group just before it must not be subtracted a second time, or the depth wraps
/// below zero and intake answers 503 `queue_full` on an empty queue.
#[tokio::test]
async fn a_stats_read_beside_a_settle_keeps_the_depth_exact() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), None);
    for i in 0..100 {
        q.enqueue("a", vec![ev(&format!("d{i}"), 0)]).await.unwrap();
        let got = q.fetch("a", 10).await.unwrap();
        assert_eq!(got.len(), 1);
        // Both jobs are sent before the writer wakes, so they usually share a group.
        let (settled, stats) = tokio::join!(q.settle(&got[0], Settle::Applied), q.stats());
        settled.unwrap();
        stats.unwrap();
        assert_eq!(q.depth(), 0, "after event {i}");
    }
}
