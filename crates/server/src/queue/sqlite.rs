//! The embedded queue: one SQLite file in WAL mode, written by one thread with group commit.
//!
//! Every operation is a job sent to the writer thread. The thread takes all jobs waiting, runs
//! them in one transaction (each inside its own savepoint, so one failing job does not undo the
//! others), commits once — one fsync for the whole group — and only then answers each caller.
//! So concurrent intake requests share a sync, and nothing is acknowledged before it is durable.
//!
//! Counters live in the same file and change in the same transaction as the event they count,
//! so the totals stay exact across crashes.

use super::{
    DeadLetter, Delivery, Enqueued, InstanceStats, Millis, NewEvent, Queue, QueueError, Retained,
    Settle, now_ms,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

const QUEUED: i64 = 0;
const DONE: i64 = 1;
const DEAD: i64 = 2;

/// Jobs taken into one transaction at most: bounds how long a commit makes callers wait.
const MAX_GROUP: usize = 512;

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
    settled_at INTEGER
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
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT,
    seq INTEGER,
    body BLOB,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

#[derive(Debug, Clone)]
pub struct Options {
    /// The queue file (`<data-dir>/queue.db`).
    pub path: PathBuf,
    /// A `messageId` seen within this window is a duplicate.
    pub dedup_window_ms: Millis,
    /// Settled events are kept this long (for `capture` and deduplication), then pruned.
    pub retention_ms: Millis,
    /// Set aside an unreadable file or records at open (the server does; a second process
    /// such as `closeflow dlq` must not pull a file from under a running server).
    pub repair: bool,
    /// The most the queue file may hold (SQLite's `max_page_count`). Intake is refused at
    /// [`INTAKE_SHARE`] of it, so that delivery can always record outcomes and drain.
    pub max_bytes: Option<u64>,
}

/// The share of `max_bytes` intake may fill; the rest is kept for settling what is queued.
pub const INTAKE_SHARE: f64 = 0.75;

impl Options {
    pub fn in_dir(dir: &Path) -> Options {
        Options {
            path: dir.join("queue.db"),
            dedup_window_ms: 24 * 3600 * 1000,
            retention_ms: 24 * 3600 * 1000,
            repair: true,
            max_bytes: None,
        }
    }
}

/// What the writer thread keeps between jobs.
struct Ctx {
    conn: Connection,
    /// Per instance, the highest `seq` handed out by `fetch` in this process.
    cursors: HashMap<String, i64>,
    opts: Options,
    /// Pages intake may fill (from `max_bytes`).
    intake_pages: Option<i64>,
    /// The error of the last job that failed in this group.
    failed: Option<QueueError>,
}

type Completer = Box<dyn FnOnce(Result<(), QueueError>, &mut Ctx) + Send>;
/// A job runs inside the group's transaction, or not at all (`None`: the group could not start).
type Job = Box<dyn FnOnce(Option<&mut Ctx>) -> Completer + Send>;

/// What opening the queue found and set aside.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Records that could not be read (set aside in the `quarantine` table).
    pub quarantined_records: u64,
    /// The file itself was unreadable and was moved aside to this path; a new one was started.
    pub quarantined_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct SqliteQueue {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicU64>,
    pub report: Arc<OpenReport>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteQueue")
    }
}

fn sql_err(e: rusqlite::Error) -> QueueError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull};
    match e.sqlite_error_code() {
        Some(DiskFull) => QueueError::Full(e.to_string()),
        Some(DatabaseBusy | DatabaseLocked) => QueueError::Unavailable(e.to_string()),
        _ => QueueError::Unavailable(e.to_string()),
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: readers (`sqlite3`, `closeflow dlq`) never block the server; FULL: the WAL is
    // fsynced at every commit, so an acknowledged event survives a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
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
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
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
fn quarantine_bad_records(conn: &Connection) -> rusqlite::Result<u64> {
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

fn bump(
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

impl SqliteQueue {
    /// Opens (or creates) the queue file. An unreadable file is moved aside and a new one
    /// started; unreadable records are set aside; both are reported in [`SqliteQueue::report`].
    pub fn open(opts: Options) -> Result<SqliteQueue, QueueError> {
        if let Some(dir) = opts.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                QueueError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut report = OpenReport::default();
        let conn = match open_conn(&opts.path) {
            Ok(c) => c,
            Err(e) if opts.repair && is_corruption(&e) => {
                let aside = move_aside(&opts.path).map_err(|io| {
                    QueueError::Unavailable(format!(
                        "{} is damaged ({e}) and cannot be moved aside: {io}",
                        opts.path.display()
                    ))
                })?;
                let conn = open_conn(&opts.path).map_err(sql_err)?;
                // Counted in the new file, so /metrics shows it after any number of restarts.
                conn.execute(
                    "INSERT INTO quarantine(instance, seq, body, reason, at) VALUES (NULL, NULL, NULL, ?1, ?2)",
                    params![format!("unreadable queue file moved to {}", aside.display()), now_ms()],
                )
                .map_err(sql_err)?;
                report.quarantined_file = Some(aside);
                conn
            }
            Err(e) => return Err(sql_err(e)),
        };
        if opts.repair {
            report.quarantined_records = quarantine_bad_records(&conn).map_err(sql_err)?;
        }
        let queued: i64 = conn
            .query_row("SELECT count(*) FROM events WHERE state = 0", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        let intake_pages = match opts.max_bytes {
            Some(max) => {
                let page: i64 = conn
                    .query_row("PRAGMA page_size", [], |r| r.get(0))
                    .map_err(sql_err)?;
                let pages = (max as i64 / page.max(512)).max(1);
                // A full file answers SQLITE_FULL, as a full disk does: the same path.
                conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                    .map_err(sql_err)?;
                Some((pages as f64 * INTAKE_SHARE) as i64)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let mut ctx = Ctx {
            conn,
            cursors: HashMap::new(),
            opts,
            intake_pages,
            failed: None,
        };
        std::thread::Builder::new()
            .name("closeflow-queue".into())
            .spawn(move || writer_loop(&mut ctx, &rx))
            .map_err(|e| QueueError::Unavailable(format!("cannot start the queue thread: {e}")))?;
        Ok(SqliteQueue {
            jobs: tx,
            queued: Arc::new(AtomicU64::new(queued as u64)),
            report: Arc::new(report),
        })
    }

    /// Events waiting or in flight, all instances (kept in memory for back-pressure).
    pub fn depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Deletes settled events older than the retention window.
    pub async fn prune(&self) -> Result<u64, QueueError> {
        self.run(|ctx| {
            let cutoff = now_ms() - ctx.opts.retention_ms;
            let n = ctx
                .conn
                .execute(
                    "DELETE FROM events WHERE state = 1 AND received_at < ?1",
                    [cutoff],
                )
                .map_err(sql_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ctx) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.run_then(f, |_, _| {}).await
    }

    /// Runs `f` in the next group; `after` runs once the group's commit succeeded.
    async fn run_then<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ctx) -> Result<T, QueueError> + Send + 'static,
        after: impl FnOnce(&T, &mut Ctx) + Send + 'static,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ctx: Option<&mut Ctx>| {
            let r = match ctx {
                Some(ctx) => savepoint(ctx, f),
                None => Err(QueueError::Unavailable("not run".into())),
            };
            Box::new(move |commit: Result<(), QueueError>, ctx: &mut Ctx| {
                let r = commit.and(r);
                if let Ok(v) = &r {
                    after(v, ctx);
                }
                let _ = reply.send(r);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| QueueError::Unavailable("the queue thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| QueueError::Unavailable("the queue thread has stopped".into()))?
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
}

fn savepoint<T>(
    ctx: &mut Ctx,
    f: impl FnOnce(&mut Ctx) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    ctx.conn.execute_batch("SAVEPOINT job").map_err(sql_err)?;
    let r = f(ctx);
    let end = if r.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    match (r, ctx.conn.execute_batch(end).map_err(sql_err)) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) | (Ok(_), Err(e)) => {
            ctx.failed = Some(clone_err(&e));
            Err(e)
        }
    }
}

fn writer_loop(ctx: &mut Ctx, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = std::collections::VecDeque::from([first]);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push_back(j),
                Err(_) => break,
            }
        }
        run_group(ctx, jobs);
    }
}

/// Runs a group of jobs in one transaction and answers each once the commit is known.
fn run_group(ctx: &mut Ctx, mut jobs: std::collections::VecDeque<Job>) {
    let mut completers: Vec<Completer> = Vec::new();
    'group: loop {
        if let Err(e) = ctx.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = sql_err(e);
            for j in jobs {
                j(None)(Err(clone_err(&e)), ctx);
            }
            return;
        }
        while let Some(j) = jobs.pop_front() {
            let c = j(Some(&mut *ctx));
            if ctx.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (it may, on SQLITE_FULL or an I/O
                // error): every job of the group so far is undone, so none may be answered
                // as done. The rest of the group starts a new transaction.
                let e = ctx.failed.take().unwrap_or_else(|| {
                    QueueError::Unavailable("the transaction was rolled back".into())
                });
                for done in completers.drain(..) {
                    done(Err(clone_err(&e)), ctx);
                }
                c(Err(e), ctx);
                continue 'group;
            }
            completers.push(c);
        }
        break;
    }
    ctx.failed = None;
    let commit = ctx.conn.execute_batch("COMMIT").map_err(sql_err);
    if commit.is_err() {
        let _ = ctx.conn.execute_batch("ROLLBACK");
    }
    for c in completers {
        c(commit.as_ref().map(|_| ()).map_err(clone_err), ctx);
    }
}

fn clone_err(e: &QueueError) -> QueueError {
    match e {
        QueueError::Full(m) => QueueError::Full(m.clone()),
        QueueError::Unavailable(m) => QueueError::Unavailable(m.clone()),
        QueueError::NotFound(id) => QueueError::NotFound(*id),
    }
}

fn enqueue_one(
    conn: &Connection,
    opts: &Options,
    instance: &str,
    e: &NewEvent,
) -> rusqlite::Result<Enqueued> {
    let existing: Option<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT seq, state, received_at FROM events WHERE instance = ?1 AND message_id = ?2",
        )?
        .query_row(params![instance, e.message_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((seq, state, at)) = existing {
        // A settled event from before the window is forgotten: this one is new.
        if state == DONE && e.received_at - at > opts.dedup_window_ms {
            conn.execute("DELETE FROM events WHERE seq = ?1", [seq])?;
        } else {
            bump(conn, instance, "duplicates", "", 1)?;
            return Ok(Enqueued::Duplicate);
        }
    }
    conn.prepare_cached(
        "INSERT INTO events(instance, message_id, body, received_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![instance, e.message_id, e.body, e.received_at])?;
    bump(conn, instance, "accepted", "", 1)?;
    Ok(Enqueued::Accepted)
}

fn dead_letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        instance: r.get(1)?,
        message_id: r.get(2)?,
        reason: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        error: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        last_reply: r.get(5)?,
        attempts: r.get(6)?,
        received_at: r.get(7)?,
        dead_at: r.get::<_, Option<i64>>(8)?.unwrap_or_default(),
        body: r.get(9)?,
    })
}

const DEAD_COLUMNS: &str = "seq, instance, message_id, outcome, error, last_reply, attempts, received_at, settled_at, body";

impl Queue for SqliteQueue {
    async fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let instance = instance.to_string();
        let queued = self.queued.clone();
        self.run_then(
            move |ctx| {
                if let Some(limit) = ctx.intake_pages {
                    let used: i64 = ctx
                        .conn
                        .query_row(
                            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
                            [],
                            |r| r.get(0),
                        )
                        .map_err(sql_err)?;
                    if used >= limit {
                        return Err(QueueError::Full(format!(
                            "the queue file has reached its size limit ({used} of {limit} pages for intake)"
                        )));
                    }
                }
                events
                    .iter()
                    .map(|e| enqueue_one(&ctx.conn, &ctx.opts, &instance, e))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql_err)
            },
            move |res: &Vec<Enqueued>, _| {
                let n = res.iter().filter(|r| **r == Enqueued::Accepted).count();
                queued.fetch_add(n as u64, Ordering::Relaxed);
            },
        )
        .await
    }

    async fn fetch(&self, instance: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let instance = instance.to_string();
        self.run_then(
            move |ctx| {
                let after = ctx.cursors.get(&instance).copied().unwrap_or(0);
                let mut st = ctx
                    .conn
                    .prepare_cached(
                        "SELECT seq, message_id, body, received_at, attempts, not_before FROM events
                         WHERE instance = ?1 AND state = 0 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let rows = st
                    .query_map(params![instance, after, max as i64], |r| {
                        Ok(Delivery {
                            id: r.get(0)?,
                            instance: instance.clone(),
                            message_id: r.get(1)?,
                            body: r.get(2)?,
                            received_at: r.get(3)?,
                            attempts: r.get(4)?,
                            not_before: r.get(5)?,
                        })
                    })
                    .map_err(sql_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
            },
            |got: &Vec<Delivery>, ctx| {
                if let Some(last) = got.last() {
                    ctx.cursors.insert(last.instance.clone(), last.id);
                }
            },
        )
        .await
    }

    async fn settle(&self, d: &Delivery, outcome: Settle) -> Result<(), QueueError> {
        let (id, instance) = (d.id, d.instance.clone());
        let final_ = !matches!(outcome, Settle::Retry { .. });
        let queued = self.queued.clone();
        self.run_then(
            move |ctx| {
                let c = &ctx.conn;
                let now = now_ms();
                let changed = match &outcome {
                    Settle::Applied => c.execute(
                        "UPDATE events SET state = 1, outcome = 'applied', settled_at = ?2 WHERE seq = ?1 AND state = 0",
                        params![id, now],
                    ),
                    Settle::Skipped { reason } => c.execute(
                        "UPDATE events SET state = 1, outcome = ?2, settled_at = ?3 WHERE seq = ?1 AND state = 0",
                        params![id, format!("skipped: {reason}"), now],
                    ),
                    Settle::Retry { not_before, error, .. } => c.execute(
                        "UPDATE events SET attempts = attempts + 1, not_before = ?2, error = ?3 WHERE seq = ?1 AND state = 0",
                        params![id, not_before, error],
                    ),
                    Settle::Dead { reason, error, last_reply } => c.execute(
                        "UPDATE events SET state = 2, attempts = attempts + 1, outcome = ?2, error = ?3, last_reply = ?4, settled_at = ?5
                         WHERE seq = ?1 AND state = 0",
                        params![id, reason, error, last_reply, now],
                    ),
                }
                .map_err(sql_err)?;
                if changed == 0 {
                    // Settled already (e.g. by a replay race) or gone: nothing to count twice.
                    return Err(QueueError::NotFound(id));
                }
                let (name, reason) = match &outcome {
                    Settle::Applied => ("applied", ""),
                    Settle::Skipped { reason } => ("skipped", reason.as_str()),
                    Settle::Retry { reason, .. } => ("retried", reason.as_str()),
                    Settle::Dead { reason, .. } => ("dead_lettered", reason.as_str()),
                };
                bump(c, &instance, name, reason, 1).map_err(sql_err)
            },
            move |_, _| {
                if final_ {
                    queued.fetch_sub(1, Ordering::Relaxed);
                }
            },
        )
        .await
    }

    async fn dead_letters(&self, instance: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let instance = instance.map(str::to_string);
        self.run(move |ctx| {
            let sql = format!(
                "SELECT {DEAD_COLUMNS} FROM events WHERE state = 2 AND (?1 IS NULL OR instance = ?1) ORDER BY seq"
            );
            let mut st = ctx.conn.prepare(&sql).map_err(sql_err)?;
            let rows = st
                .query_map([instance], dead_letter_row)
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, QueueError> {
        self.run(move |ctx| {
            let sql = format!("SELECT {DEAD_COLUMNS} FROM events WHERE state = 2 AND seq = ?1");
            ctx.conn
                .query_row(&sql, [id], dead_letter_row)
                .optional()
                .map_err(sql_err)
        })
        .await
    }

    async fn replay(&self, id: i64) -> Result<bool, QueueError> {
        let queued = self.queued.clone();
        self.run_then(
            move |ctx| {
                let c = &ctx.conn;
                let row: Option<(String, String, String, i64)> = c
                    .query_row(
                        "SELECT instance, message_id, body, received_at FROM events WHERE seq = ?1 AND state = 2",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()
                    .map_err(sql_err)?;
                let Some((instance, message_id, body, received_at)) = row else {
                    return Ok(false);
                };
                // A new row at the back of the queue: fetch cursors only move forward.
                c.execute("DELETE FROM events WHERE seq = ?1", [id])
                    .map_err(sql_err)?;
                c.execute(
                    "INSERT INTO events(instance, message_id, body, received_at) VALUES (?1, ?2, ?3, ?4)",
                    params![instance, message_id, body, received_at],
                )
                .map_err(sql_err)?;
                bump(c, &instance, "replayed", "", 1).map_err(sql_err)?;
                Ok(true)
            },
            move |done: &bool, _| {
                if *done {
                    queued.fetch_add(1, Ordering::Relaxed);
                }
            },
        )
        .await
    }

    async fn drop_dead(&self, id: i64) -> Result<bool, QueueError> {
        self.run(move |ctx| {
            let n = ctx
                .conn
                .execute("DELETE FROM events WHERE seq = ?1 AND state = 2", [id])
                .map_err(sql_err)?;
            Ok(n > 0)
        })
        .await
    }

    fn depth(&self) -> u64 {
        SqliteQueue::depth(self)
    }

    async fn stats(&self) -> Result<Vec<InstanceStats>, QueueError> {
        let queued_total = self.queued.clone();
        self.run_then(move |ctx| {
            let c = &ctx.conn;
            let mut by: std::collections::BTreeMap<String, InstanceStats> = Default::default();
            let entry = |by: &mut std::collections::BTreeMap<String, InstanceStats>, i: &str| {
                by.entry(i.to_string())
                    .or_insert_with(|| InstanceStats {
                        instance: i.to_string(),
                        ..InstanceStats::default()
                    })
                    .instance
                    .clone()
            };
            {
                let mut st = c
                    .prepare("SELECT instance, name, reason, n FROM counters ORDER BY instance, name, reason")
                    .map_err(sql_err)?;
                let rows = st
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                    })
                    .map_err(sql_err)?;
                for row in rows {
                    let (i, name, reason, n) = row.map_err(sql_err)?;
                    entry(&mut by, &i);
                    let s = by.get_mut(&i).expect("inserted above");
                    let n = n as u64;
                    match name.as_str() {
                        "accepted" => s.accepted += n,
                        "duplicates" => s.duplicates += n,
                        "applied" => s.applied += n,
                        "replayed" => s.replayed += n,
                        "skipped" => s.skipped.push((reason, n)),
                        "dead_lettered" => s.dead_lettered.push((reason, n)),
                        "retried" => s.retried.push((reason, n)),
                        _ => {}
                    }
                }
            }
            {
                let mut st = c
                    .prepare("SELECT instance, state, count(*), min(received_at) FROM events WHERE state IN (0, 2) GROUP BY instance, state")
                    .map_err(sql_err)?;
                let rows = st
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?))
                    })
                    .map_err(sql_err)?;
                for row in rows {
                    let (i, state, n, oldest) = row.map_err(sql_err)?;
                    entry(&mut by, &i);
                    let s = by.get_mut(&i).expect("inserted above");
                    if state == QUEUED {
                        s.queued = n as u64;
                        s.oldest_queued_at = oldest;
                    } else if state == DEAD {
                        s.dead_now = n as u64;
                    }
                }
            }
            {
                let mut st = c
                    .prepare("SELECT coalesce(instance, ''), count(*) FROM quarantine GROUP BY 1")
                    .map_err(sql_err)?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(sql_err)?;
                for row in rows {
                    let (i, n) = row.map_err(sql_err)?;
                    entry(&mut by, &i);
                    by.get_mut(&i).expect("inserted above").quarantined = n as u64;
                }
            }
            Ok(by.into_values().collect())
        }, move |stats: &Vec<InstanceStats>, _| {
            // Another process (`closeflow dlq replay`) may have changed the file: resync, once
            // the group committed, when the jobs before this one in the group have counted
            // their changes (a settle's change read above and subtracted again would wrap
            // the depth below zero, and intake would answer 503 on an empty queue).
            queued_total.store(stats.iter().map(|s| s.queued).sum(), Ordering::Relaxed);
        })
        .await
    }

    async fn maintain(&self) {
        if let Err(e) = self.prune().await {
            tracing::warn!(error = %e, "pruning settled events failed");
        }
    }

    async fn retained(
        &self,
        instance: &str,
        since: Millis,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Retained>, QueueError> {
        let instance = instance.to_string();
        self.run(move |ctx| {
            let mut st = ctx
                .conn
                .prepare(
                    "SELECT seq, message_id, received_at, body FROM events
                     WHERE instance = ?1 AND received_at >= ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                )
                .map_err(sql_err)?;
            let rows = st
                .query_map(params![instance, since, after, limit as i64], |r| {
                    Ok(Retained {
                        id: r.get(0)?,
                        message_id: r.get(1)?,
                        received_at: r.get(2)?,
                        body: r.get(3)?,
                    })
                })
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
        })
        .await
    }
}
