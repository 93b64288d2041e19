//! The Close calls made on behalf of one piece of work (one event's delivery attempt), as its
//! journey shows them: which endpoint group, what came back, how long it took, whether it was a
//! retry and how long pacing and backoff held it first. The caller wraps its work in
//! [`recorded`]; the client adds every HTTP attempt it makes inside it. Outside, nothing is
//! recorded (and nothing costs).
//!
//! A call made by work shared between events (the read-ahead's search for many events, a
//! lookup another event's attempt started and this one joined) is recorded by whoever made it.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// One HTTP attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The rate-limit group (`POST /data/search/`, `POST`, …).
    pub group: String,
    pub method: String,
    /// The path, without its query.
    pub path: String,
    /// `None`: no reply arrived (a network error, a timeout, a lost connection).
    pub status: Option<u16>,
    pub ms: u64,
    /// 1 for the first attempt of a call, 2 for its first retry, … (left out when 1)
    #[serde(skip_serializing_if = "is_first", default = "first")]
    pub attempt: u32,
    /// How long this attempt waited before it went out: the pacer holding it for the rate
    /// limit, and a retry's backoff. (Left out when none.)
    #[serde(skip_serializing_if = "is_zero", default)]
    pub waited_ms: u64,
    /// Made for several events at once (a read-ahead's shared search): how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_by: Option<usize>,
}

fn is_first(n: &u32) -> bool {
    *n == 1
}
fn first() -> u32 {
    1
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Call>>>);

tokio::task_local! {
    static LOG: Log;
}

/// Runs `f`, returning what it returned and every Close call made inside it.
pub async fn recorded<F: Future>(f: F) -> (F::Output, Vec<Call>) {
    let log = Log::default();
    let out = LOG.scope(log.clone(), f).await;
    let calls = std::mem::take(
        &mut *log
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (out, calls)
}

pub(crate) fn record(call: impl FnOnce() -> Call) {
    let _ = LOG.try_with(|l| {
        l.0.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call());
    });
}
