//! Delivery: one scheduler per instance takes events from the queue and runs them through the
//! Close action core (`close::run::send`, the same path as `closeflow send`).
//!
//! Ordering: events are concurrent across lookup keys and strictly serial per key. The
//! scheduler keeps the events it has fetched in queue order; walking them oldest first, an
//! event may start only when none of its keys belongs to an event before it that has not
//! finished — in flight, or waiting out a retry's backoff. So a failing key holds back only
//! its own later events, and two events for one new person never both create it.
//!
//! Isolation: each instance has its own scheduler, worker limit and Close client (its own
//! rate-limit pacing), so one instance's failing or throttled Close key never slows another.

mod ahead;
mod attempt;
mod fenced;
pub mod keys;
pub mod order;
pub mod outcome;
mod scheduler;

use crate::config::defaults;
use crate::registry::Registry;
use closeflow_queue::Deliver;
use outcome::RetryPolicy;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

#[derive(Debug, Clone)]
pub struct Policy {
    /// Events in flight at once, per instance.
    pub concurrency: usize,
    /// Events a scheduler holds in memory (fetched, not finished).
    pub window: usize,
    pub retry: RetryPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            concurrency: defaults::CONCURRENCY,
            window: defaults::WINDOW,
            retry: RetryPolicy::default(),
        }
    }
}

/// Wakes an instance's scheduler when something arrives (intake, a replay).
#[derive(Debug, Default)]
pub struct Wakers {
    by_instance: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    pub fn get(&self, instance: &str) -> Arc<Notify> {
        self.by_instance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(instance.to_string())
            .or_default()
            .clone()
    }
    pub fn wake(&self, instance: &str) {
        self.get(instance).notify_one();
    }
    pub fn wake_all(&self) {
        for n in self
            .by_instance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            n.notify_one();
        }
    }
}

/// Runs every instance's scheduler until `stop` turns true, then lets in-flight work finish.
pub struct Deliverer<Q: Deliver> {
    pub queue: Arc<Q>,
    pub registry: Arc<Registry>,
    pub wakers: Arc<Wakers>,
    pub policy: Policy,
    pub stop: watch::Receiver<bool>,
    /// Each attempt's journey stage goes here.
    pub recorder: Arc<crate::journey::Recorder>,
}

impl<Q: Deliver> Deliverer<Q> {
    /// Starts a scheduler for every instance it does not serve yet. Called at start and after
    /// each reload; returns the handles of the new schedulers.
    pub fn start_new(
        self: &Arc<Self>,
        running: &mut HashSet<String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut out = Vec::new();
        for name in self.registry.all_names() {
            if running.insert(name.clone()) {
                let me = self.clone();
                out.push(tokio::spawn(scheduler::Scheduler::new(me, name).run()));
            }
        }
        out
    }
}
