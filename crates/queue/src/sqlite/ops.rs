//! The queue's operations on the file, one job each in the writer's group transaction (see
//! the parent module): each role of the queue, as SQL.

use super::schema::{DEAD, DONE, QUEUED, bump};
use super::{Options, SqliteQueue, sql_err};
use crate::{
    DeadLetter, DeadLetters, Deliver, Delivery, Enqueued, Inspect, InstanceStats, Intake, Lease,
    Load, Millis, NewEvent, Outcome, QueueError, Retained, SettleError, Settles, Upkeep, now_ms,
};
use rusqlite::{Connection, OptionalExtension, params};

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
        "INSERT INTO events(instance, message_id, body, received_at, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![instance, e.message_id, e.body, e.received_at, e.meta])?;
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

impl Intake for SqliteQueue {
    async fn enqueue(
        &self,
        instance: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let instance = instance.to_string();
        self.run(move |ctx| {
            events
                .iter()
                .map(|e| enqueue_one(&ctx.conn, &ctx.opts, &instance, e))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err)
        })
        .await
    }

    fn load(&self, instance: &str) -> Load {
        SqliteQueue::load(self, instance)
    }
}

impl Deliver for SqliteQueue {
    type Backend = SqliteQueue;

    async fn fetch(
        &self,
        instance: &str,
        max: usize,
    ) -> Result<Vec<Lease<SqliteQueue>>, QueueError> {
        let instance = instance.to_string();
        let got = self
            .run_then(
                move |ctx| {
                    let after = ctx.cursors.get(&instance).copied().unwrap_or(0);
                    let mut st = ctx
                    .conn
                    .prepare_cached(
                        "SELECT seq, message_id, body, received_at, attempts, not_before, meta FROM events
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
                                meta: r.get(6)?,
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
            .await?;
        Ok(got
            .into_iter()
            .map(|d| Lease::new(self.clone(), d))
            .collect())
    }
}

impl Settles for SqliteQueue {
    async fn settle(
        &self,
        mut lease: Lease<SqliteQueue>,
        outcome: Outcome,
    ) -> Result<Option<Lease<SqliteQueue>>, SettleError<SqliteQueue>> {
        let (id, instance) = (lease.id, lease.instance.clone());
        let retry_at = match &outcome {
            Outcome::Retry { not_before, .. } => Some(*not_before),
            _ => None,
        };
        let recorded = self.run(
            move |ctx| {
                let c = &ctx.conn;
                let now = now_ms();
                let changed = match &outcome {
                    Outcome::Applied => c.execute(
                        "UPDATE events SET state = 1, outcome = 'applied', settled_at = ?2 WHERE seq = ?1 AND state = 0",
                        params![id, now],
                    ),
                    Outcome::Skipped { reason } => c.execute(
                        "UPDATE events SET state = 1, outcome = ?2, settled_at = ?3 WHERE seq = ?1 AND state = 0",
                        params![id, format!("skipped: {reason}"), now],
                    ),
                    Outcome::Retry { not_before, error, .. } => c.execute(
                        "UPDATE events SET attempts = attempts + 1, not_before = ?2, error = ?3 WHERE seq = ?1 AND state = 0",
                        params![id, not_before, error],
                    ),
                    Outcome::Dead { reason, error, last_reply } => c.execute(
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
                    Outcome::Applied => ("applied", ""),
                    Outcome::Skipped { reason } => ("skipped", reason.as_str()),
                    Outcome::Retry { reason, .. } => ("retried", reason.as_str()),
                    Outcome::Dead { reason, .. } => ("dead_lettered", reason.as_str()),
                };
                bump(c, &instance, name, reason, 1).map_err(sql_err)
            },
        )
        .await;
        match (recorded, retry_at) {
            (Err(e), _) => Err(SettleError::kept(e, lease)),
            (Ok(()), None) => Ok(None),
            (Ok(()), Some(not_before)) => {
                let d = lease.event_mut();
                d.attempts += 1;
                d.not_before = not_before;
                Ok(Some(lease))
            }
        }
    }
}

impl DeadLetters for SqliteQueue {
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
        self.run(
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
}

impl Inspect for SqliteQueue {
    async fn stats(&self) -> Result<Vec<InstanceStats>, QueueError> {
        self.run(move |ctx| {
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
        })
        .await
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

impl Upkeep for SqliteQueue {
    async fn maintain(&self) {
        if let Err(e) = self.prune().await {
            tracing::warn!(error = %e, "pruning settled events failed");
        }
    }
}
