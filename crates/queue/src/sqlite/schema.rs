//! The queue file's schema and what opening it checks and repairs: tables, the depth
//! triggers, the quick check, moving an unreadable file aside, setting bad records aside.
//! Kept apart from the operations so that the layout existing data dirs depend on is in one
//! place.

use crate::{Load, now_ms};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(super) const QUEUED: i64 = 0;
pub(super) const DONE: i64 = 1;
pub(super) const DEAD: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    error TEXT,
    last_reply TEXT,
    settled_at INTEGER,
    meta TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_message ON events(instance, message_id);
CREATE INDEX IF NOT EXISTS events_by_state ON events(instance, state, seq);
CREATE TABLE IF NOT EXISTS counters (
    instance TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    n INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, name, reason)
);
-- Per instance: events queued (state 0), and the bytes of the events waiting on someone
-- (queued, or dead letters: state 0 or 2), kept by triggers in the same transaction as the
-- change, so that no code path (this process's, or `closeflow dlq` in another) can forget to
-- count one. The one source of a queue's depth.
CREATE TABLE IF NOT EXISTS depth (
    instance TEXT PRIMARY KEY,
    queued INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS depth_insert AFTER INSERT ON events BEGIN
    INSERT INTO depth(instance, queued, bytes)
    VALUES (new.instance, new.state = 0, (new.state IN (0, 2)) * length(CAST(new.body AS BLOB)))
    ON CONFLICT(instance) DO UPDATE SET queued = queued + excluded.queued, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS depth_delete AFTER DELETE ON events BEGIN
    UPDATE depth SET queued = queued - (old.state = 0),
        bytes = bytes - (old.state IN (0, 2)) * length(CAST(old.body AS BLOB))
    WHERE instance = old.instance;
END;
CREATE TRIGGER IF NOT EXISTS depth_update AFTER UPDATE OF state ON events WHEN old.state <> new.state BEGIN
    UPDATE depth SET queued = queued + (new.state = 0) - (old.state = 0),
        bytes = bytes + ((new.state IN (0, 2)) - (old.state IN (0, 2))) * length(CAST(new.body AS BLOB))
    WHERE instance = old.instance;
END;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT,
    seq INTEGER,
    body BLOB,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

pub(super) fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: readers (`sqlite3`, `closeflow dlq`) never block the server; FULL: the WAL is
    // fsynced at every commit, so an acknowledged event survives a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    // A file written before events had `meta` (how they arrived, for journeys).
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        conn.execute_batch("ALTER TABLE events ADD COLUMN meta TEXT")?;
    }
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(ok),
        ));
    }
    Ok(conn)
}

/// Moves an unreadable queue file (and its WAL) aside so that the server can start afresh.
pub(super) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = now_ms();
    let aside = path.with_extension(format!("db.corrupt-{stamp}"));
    std::fs::rename(path, &aside)?;
    for ext in ["db-wal", "db-shm"] {
        let side = path.with_extension(ext);
        if side.exists() {
            std::fs::rename(
                &side,
                aside.with_extension(format!("{ext}.corrupt-{stamp}")),
            )?;
        }
    }
    Ok(aside)
}

/// Sets aside queued records that are not a JSON object (a damaged or hand-edited file).
pub(super) fn quarantine_bad_records(conn: &Connection) -> rusqlite::Result<u64> {
    let mut bad = Vec::new();
    {
        let mut st = conn.prepare("SELECT seq, instance, body FROM events WHERE state = 0")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let instance: Option<String> = r.get(1).ok();
            let body = r.get_ref(2)?;
            let bytes = match body {
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b,
                _ => &[][..],
            };
            let ok =
                serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_object());
            if !ok {
                bad.push((seq, instance, bytes.to_vec()));
            }
        }
    }
    let tx = conn.unchecked_transaction()?;
    for (seq, instance, body) in &bad {
        tx.execute(
            "INSERT INTO quarantine(instance, seq, body, reason, at) VALUES (?1, ?2, ?3, 'unreadable record', ?4)",
            params![instance, seq, body, now_ms()],
        )?;
        tx.execute("DELETE FROM events WHERE seq = ?1", [seq])?;
        let inst = instance.clone().unwrap_or_default();
        // The record was accepted and is now out of the queue: count it, so the totals balance.
        bump(&tx, &inst, "dead_lettered", "quarantined", 1)?;
    }
    tx.commit()?;
    Ok(bad.len() as u64)
}

pub(super) fn bump(
    conn: &Connection,
    instance: &str,
    name: &str,
    reason: &str,
    n: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO counters(instance, name, reason, n) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(instance, name, reason) DO UPDATE SET n = n + excluded.n",
    )?
    .execute(params![instance, name, reason, n as i64])?;
    Ok(())
}

/// What every instance holds, as last read from the `depth` table.
#[derive(Debug, Default)]
pub(super) struct Loads {
    pub(super) by_instance: HashMap<String, Load>,
}

/// Fills the `depth` table of a file written before it existed (its triggers keep it from then on).
pub(super) fn init_depth(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let filled: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM depth)", [], |r| r.get(0))?;
    let any: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?;
    if !filled && any {
        tx.execute_batch(
            "INSERT INTO depth(instance, queued, bytes)
             SELECT instance, sum(state = 0), sum((state IN (0, 2)) * length(CAST(body AS BLOB)))
             FROM events GROUP BY instance",
        )?;
    }
    tx.commit()
}

/// Each instance's queued events and waiting bytes, as the `depth` table holds them.
pub(super) fn read_loads(conn: &Connection) -> rusqlite::Result<Loads> {
    let mut st = conn.prepare_cached("SELECT instance, queued, bytes FROM depth")?;
    let by_instance = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Load {
                    queued: r.get::<_, i64>(1)?.try_into().unwrap_or(u64::MAX),
                    bytes: r.get::<_, i64>(2)?.try_into().unwrap_or(u64::MAX),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Loads { by_instance })
}

pub(super) fn is_corruption(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
}
