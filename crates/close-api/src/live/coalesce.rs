//! Coalescing: lookups that arrive within a short window (the server's workers, `send`'s
//! look-ahead) go out as one search, and each event gets back exactly what its own keys match.
//! One event's key that Close refuses does not fail its neighbours.

use super::LiveSource;
use crate::client::CloseError;
use crate::search::EventLookup;
use closeflow_close::lookup::LookupResults;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A lookup waiting for the coalescer's next search.
pub(super) struct Waiting {
    pub(super) want: EventLookup,
    pub(super) reply: oneshot::Sender<Result<LookupResults, CloseError>>,
}

impl LiveSource {
    pub(super) fn bump_batches(&self, events: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.stats.batches.fetch_add(1, Relaxed);
        self.shared
            .stats
            .batched_events
            .fetch_add(events as u64, Relaxed);
    }

    /// The coalescer: takes the first waiting lookup, waits the window for more, searches once.
    pub(super) fn queue(&self) -> &mpsc::UnboundedSender<Waiting> {
        self.shared.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Waiting>();
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    let deadline = tokio::time::Instant::now() + me.shared.opts.coalesce_window;
                    while batch.len() < me.shared.opts.coalesce_max {
                        tokio::select! {
                            Some(w) = rx.recv() => batch.push(w),
                            () = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    me.serve(batch).await;
                }
            });
            tx
        })
    }

    async fn serve(&self, batch: Vec<Waiting>) {
        let wants: Vec<EventLookup> = batch.iter().map(|w| w.want.clone()).collect();
        self.bump_batches(wants.len());
        let asked = Instant::now();
        match self.shared.searcher.find_many(&wants).await {
            Ok(found) => {
                self.remember(&wants, &found, asked);
                for (w, f) in batch.into_iter().zip(found) {
                    let _ = w.reply.send(Ok(f));
                }
            }
            // One event's key that Close refuses must not fail its neighbours: alone, each
            // meets only its own answer.
            Err(CloseError::Rejected { .. }) if batch.len() > 1 => {
                for w in batch {
                    let asked = Instant::now();
                    let r = self
                        .shared
                        .searcher
                        .find_many(std::slice::from_ref(&w.want))
                        .await;
                    if let Ok(f) = &r {
                        self.remember(std::slice::from_ref(&w.want), f, asked);
                    }
                    let _ = w.reply.send(r.map(|mut v| v.pop().unwrap_or_default()));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
