//! The embedded queue: one SQLite file in WAL mode, written by one thread with group commit.
//!
//! Every operation is a job sent to the writer thread. The thread takes all jobs waiting, runs
//! them in one transaction (each inside its own savepoint, so one failing job does not undo the
//! others), commits once — one fsync for the whole group — and only then answers each caller.
//! So concurrent intake requests share a sync, and nothing is acknowledged before it is durable.
//!
//! Counters live in the same file and change in the same transaction as the event they count,
//! so the totals stay exact across crashes.

mod ops;
mod schema;

use crate::{Load, Millis, QueueError, now_ms};
use rusqlite::{Connection, params};
use schema::{
    Loads, init_depth, is_corruption, move_aside, open_conn, quarantine_bad_records, read_loads,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

/// Jobs taken into one transaction at most: bounds how long a commit makes callers wait.
const MAX_GROUP: usize = 512;

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
    /// How often an idle writer re-reads the depth, so that what another process (`closeflow
    /// dlq replay`) did to the file shows without waiting for this one's next write.
    pub refresh_every: std::time::Duration,
}

impl Options {
    pub fn in_dir(dir: &Path) -> Options {
        Options {
            path: dir.join("queue.db"),
            dedup_window_ms: crate::DEDUP_WINDOW.as_millis() as i64,
            retention_ms: crate::DEDUP_WINDOW.as_millis() as i64,
            repair: true,
            refresh_every: std::time::Duration::from_secs(1),
        }
    }
}

/// What the writer thread keeps between jobs.
struct Ctx {
    conn: Connection,
    /// Per instance, the highest `seq` handed out by `fetch` in this process.
    cursors: HashMap<String, i64>,
    opts: Options,
    /// Where the depth read after each commit is published.
    loads: Arc<RwLock<Loads>>,
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
    loads: Arc<RwLock<Loads>>,
    pub report: Arc<OpenReport>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteQueue")
    }
}

pub(super) fn sql_err(e: rusqlite::Error) -> QueueError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull};
    match e.sqlite_error_code() {
        Some(DiskFull) => QueueError::Full(e.to_string()),
        Some(DatabaseBusy | DatabaseLocked) => QueueError::Unavailable(e.to_string()),
        _ => QueueError::Unavailable(e.to_string()),
    }
}

fn publish_loads(ctx: &Ctx) {
    match read_loads(&ctx.conn) {
        Ok(l) => {
            *ctx.loads
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = l;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the queue's depth"),
    }
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
        init_depth(&conn).map_err(sql_err)?;
        let loads = Arc::new(RwLock::new(read_loads(&conn).map_err(sql_err)?));
        let (tx, rx) = mpsc::channel::<Job>();
        let mut ctx = Ctx {
            conn,
            cursors: HashMap::new(),
            opts,
            loads: loads.clone(),
            failed: None,
        };
        std::thread::Builder::new()
            .name("closeflow-queue".into())
            .spawn(move || writer_loop(&mut ctx, &rx))
            .map_err(|e| QueueError::Unavailable(format!("cannot start the queue thread: {e}")))?;
        Ok(SqliteQueue {
            jobs: tx,
            loads,
            report: Arc::new(report),
        })
    }

    /// What `instance` holds, as last read from the file (no I/O).
    pub fn load(&self, instance: &str) -> Load {
        let g = self
            .loads
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.by_instance.get(instance).copied().unwrap_or_default()
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
    loop {
        let first = match rx.recv_timeout(ctx.opts.refresh_every) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                publish_loads(ctx);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
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
    // Before anyone is answered: a caller that saw its enqueue or settle done sees its depth.
    publish_loads(ctx);
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
