//! Journeys in `<data-dir>/journey.db`: a file of its own beside `queue.db`, so that writing
//! them never takes the queue's write lock, and with `synchronous=NORMAL` (no fsync per
//! commit): a journey is diagnostics, and the queue's outcome is already durable when its
//! stage is written.

use super::{Find, Journal, Journey, Query, Record, journeys};
use crate::{Millis, QueueError, now_ms};
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    message_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    written INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stages_by_message ON stages(message_id, instance);
CREATE TABLE IF NOT EXISTS keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    instance TEXT NOT NULL,
    message_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    written INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_value ON keys(kind, value);
";

/// Rows are appended in the order they are written, and `written` is when (a stage's own `at`
/// can be days older: an event's received stage is written with its first attempt), so the
/// rows written before a time are those before a `seq`, found by bisection over the table's
/// own key: no index on time to keep up at every write. Retention counts from `written`.
fn cutoff(c: &Connection, table: &str, before: Millis) -> rusqlite::Result<Option<i64>> {
    let bounds: (Option<i64>, Option<i64>) = c.query_row(
        &format!("SELECT min(seq), max(seq) FROM {table}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(mut lo), Some(mut hi)) = bounds else {
        return Ok(None);
    };
    let at_or_after = |s: i64| -> rusqlite::Result<Option<(i64, i64)>> {
        c.query_row(
            &format!("SELECT seq, written FROM {table} WHERE seq >= ?1 ORDER BY seq LIMIT 1"),
            [s],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
    };
    // The first seq whose row is not older than `before` (or one past the end).
    hi += 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at_or_after(mid)? {
            Some((s, at)) if at < before => lo = s + 1,
            _ => hi = mid,
        }
    }
    Ok(Some(lo))
}

/// The journal of a data directory.
#[derive(Clone)]
pub struct SqliteJournal {
    conn: Arc<Mutex<Connection>>,
    retention_ms: Millis,
    pub path: PathBuf,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteJournal({})", self.path.display())
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("journeys: {what}: {e}"))
}

impl SqliteJournal {
    /// Opens (creating) `dir/journey.db` for the server.
    pub fn open(dir: &Path, retention: std::time::Duration) -> Result<SqliteJournal, QueueError> {
        let path = dir.join("journey.db");
        let conn = Connection::open(&path).map_err(|e| failed("opening", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| failed("opening", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| failed("opening", e))?;
        Ok(SqliteJournal {
            conn: Arc::new(Mutex::new(conn)),
            retention_ms: retention.as_millis() as Millis,
            path,
        })
    }

    /// Opens an existing journal to read it (`closeflow trace` beside a running server).
    pub fn open_read_only(dir: &Path) -> Result<SqliteJournal, QueueError> {
        let path = dir.join("journey.db");
        if !path.exists() {
            return Err(QueueError::Unavailable(format!(
                "{} does not exist: no server has kept journeys in this data directory",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| failed("opening", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| failed("opening", e))?;
        Ok(SqliteJournal {
            conn: Arc::new(Mutex::new(conn)),
            retention_ms: 0,
            path,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut c)
        })
        .await
        .map_err(|e| failed("a worker failed", e))?
        .map_err(|e| failed("the file", e))
    }
}

impl Journal for SqliteJournal {
    async fn write(&self, records: Vec<Record>) -> Result<(), QueueError> {
        let written = now_ms();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO stages(instance, message_id, at, kind, data, written) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let mut kt = tx.prepare_cached(
                    "INSERT INTO keys(kind, value, instance, message_id, at, written) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                // A key one event's stages name twice is kept once per batch.
                let mut named = std::collections::HashSet::new();
                for r in &records {
                    let s = &r.stage;
                    st.execute(params![s.instance, s.message_id, s.at, s.kind, s.data.to_string(), written])?;
                    for k in &r.keys {
                        if named.insert((&s.instance, &s.message_id, &k.kind, &k.value)) {
                            kt.execute(params![k.kind, k.value, s.instance, s.message_id, s.at, written])?;
                        }
                    }
                }
            }
            tx.commit()
        })
        .await
    }

    async fn find(&self, q: &Query) -> Result<Vec<Journey>, QueueError> {
        let q = q.clone();
        self.with(move |c| {
            let ids: Vec<(String, String)> = match &q.find {
                Find::MessageId(m) => {
                    let mut st = c.prepare_cached(
                        "SELECT DISTINCT instance FROM stages WHERE message_id = ?1 AND at >= ?2",
                    )?;
                    st.query_map(params![m, q.since], |r| r.get::<_, String>(0))?
                        .map(|i| i.map(|i| (i, m.clone())))
                        .collect::<rusqlite::Result<_>>()?
                }
                Find::Key(k) => {
                    let mut st = c.prepare_cached(
                        "SELECT instance, message_id FROM keys
                         WHERE kind = ?1 AND value = ?2 AND at >= ?3 AND (?5 IS NULL OR instance = ?5)
                         GROUP BY instance, message_id ORDER BY max(at) DESC LIMIT ?4",
                    )?;
                    st.query_map(
                        params![k.kind, k.value, q.since, q.limit.max(1) as i64, q.instance],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?
                    .collect::<rusqlite::Result<_>>()?
                }
            };
            let mut stages = Vec::new();
            let mut st = c.prepare_cached(
                "SELECT at, kind, data FROM stages WHERE message_id = ?1 AND instance = ?2 ORDER BY seq",
            )?;
            for (instance, message_id) in ids {
                if q.instance.as_ref().is_some_and(|i| *i != instance) {
                    continue;
                }
                let rows = st.query_map(params![message_id, instance], |r| {
                    Ok(super::Stage {
                        instance: instance.clone(),
                        message_id: message_id.clone(),
                        at: r.get(0)?,
                        kind: r.get(1)?,
                        data: serde_json::from_str(&r.get::<_, String>(2)?)
                            .unwrap_or(serde_json::Value::Null),
                    })
                })?;
                for s in rows {
                    stages.push(s?);
                }
            }
            Ok(journeys(stages, q.limit))
        })
        .await
    }

    async fn prune(&self) {
        if self.retention_ms <= 0 {
            return;
        }
        let before = now_ms() - self.retention_ms;
        let r = self
            .with(move |c| {
                let tx = c.transaction()?;
                for table in ["stages", "keys"] {
                    if let Some(seq) = cutoff(&tx, table, before)? {
                        tx.execute(&format!("DELETE FROM {table} WHERE seq < ?1"), [seq])?;
                    }
                }
                tx.commit()
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot prune old journeys");
        }
    }
}
