//! The two ports the executor runs over: reading records ([`ReadPort`]) and writing them
//! ([`WritePort`]). They are traits here, implemented by `closeflow-close-api` over HTTP (and by
//! [`crate::state::State`] and [`crate::snapshot::Snapshot`] for reads), so that this crate never
//! names a transport: a dry-run is handed a read port only, and only [`crate::exec::apply`]
//! takes a write port, so "dry-run cannot write" is a type error, not a convention.
//!
//! Their error, [`PortError`], is this crate's own: what went wrong in words, how the executor
//! and its callers must treat it ([`PortErrorKind`]), and Close's last reply when there was one.

use crate::lookup::{LookupRequest, LookupResults};
use crate::model::KeyConfig;
use crate::payload::Payload;
use serde_json::{Map, Value};
use std::future::Future;

/// How a failed read or write must be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// Close refused the API key: nothing succeeds until the instance's settings change.
    Unauthorized,
    /// Close refused this request with this status: sending it again changes nothing (a 404
    /// may mean a record went between the lookup and the write).
    Rejected { status: u16 },
    /// Still failing after the client's own retries (throttled, 5xx, timeouts): may pass later.
    Unavailable,
    /// A write whose outcome is unknown (the reply was lost): the executor plans the event
    /// again instead of sending it again.
    Interrupted,
    /// Close answered something that makes no sense here.
    BadReply,
    /// The configured Close URL cannot be used at all.
    BadUrl,
    /// Nothing answers at the URL: the next event would fail the same way.
    Unreachable,
}

/// A read or write that failed, as the executor and the frontends need to know it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub kind: PortErrorKind,
    /// The whole story in words (what was sent, where, what came back), for reports and logs.
    pub message: String,
    /// Close's reply when it refused (`HTTP 400: …`), for a dead letter to show.
    pub last_reply: Option<String>,
}

impl PortError {
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> PortError {
        PortError {
            kind,
            message: message.into(),
            last_reply: None,
        }
    }
}

/// Something Close records can be read from: the live API, a snapshot, an in-memory state.
///
/// What a dry-run holds is only ever one of these, and nothing that can only read is a
/// [`WritePort`]: a snapshot (or a state) handed to the one function that writes does not
/// compile, so "a dry-run cannot write" is checked by the compiler:
///
/// ```compile_fail,E0277
/// # async fn f(s: &closeflow_close::snapshot::Snapshot, cfg: &closeflow_close::KeyConfig, p: &closeflow_close::Payload) {
/// closeflow_close::exec::apply(s, s, cfg, p).await;
/// # }
/// ```
///
/// ```compile_fail,E0277
/// # async fn f(s: &closeflow_close::state::State, cfg: &closeflow_close::KeyConfig, p: &closeflow_close::Payload) {
/// closeflow_close::exec::apply(s, s, cfg, p).await;
/// # }
/// ```
///
/// The same call with a write port compiles (so the two above fail for the reason given):
///
/// ```
/// # use closeflow_close::port::WritePort;
/// # async fn f<W: WritePort + Sync>(s: &closeflow_close::state::State, w: &W, cfg: &closeflow_close::KeyConfig, p: &closeflow_close::Payload) {
/// let _ = closeflow_close::exec::apply(s, w, cfg, p).await;
/// # }
/// ```
pub trait ReadPort {
    fn find(
        &self,
        cfg: &KeyConfig,
        p: &Payload,
        reqs: &[LookupRequest],
    ) -> impl Future<Output = Result<LookupResults, PortError>> + Send;

    /// A live run wrote and Close replied with this record (a port that caches refreshes it).
    fn written(&self, _reply: &Value) {}

    /// A live run failed for an event with these lookups, which had found these records (a
    /// port that caches forgets both).
    fn forget(&self, _reqs: &[LookupRequest], _found: &[String]) {}

    /// A counter that moves whenever an event releases records it held (see
    /// [`ReadPort::hold`]).
    fn epoch(&self) -> u64 {
        0
    }

    /// For live runs that share a port concurrently (the server's workers): waits until no
    /// other event holds any of these records, then holds them until the [`RecordHold`] is
    /// dropped, so two events that reach one record through different keys never write it at
    /// once. `stale` says another event released one of them after `since`: look up again.
    fn hold(&self, _ids: Vec<String>, _since: u64) -> impl Future<Output = RecordHold> + Send {
        std::future::ready(RecordHold::default())
    }
}

/// Writing to Close: the four writes a plan can make. Each returns the record as Close
/// replied with it (a created lead with its nested contacts).
pub trait WritePort {
    fn create_lead(
        &self,
        body: &Map<String, Value>,
    ) -> impl Future<Output = Result<Value, PortError>> + Send;
    fn create_contact(
        &self,
        body: &Map<String, Value>,
    ) -> impl Future<Output = Result<Value, PortError>> + Send;
    fn update_lead(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> impl Future<Output = Result<Value, PortError>> + Send;
    fn update_contact(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> impl Future<Output = Result<Value, PortError>> + Send;
}

/// Lets go of held records, given the ids among them the event wrote.
pub type Release = Box<dyn FnOnce(&[String]) + Send>;

/// Records held by one event, released on drop with the ids it wrote.
#[derive(Default)]
pub struct RecordHold {
    /// Not held: another event wrote one of the records since the lookup; look up again.
    pub stale: bool,
    written: Vec<String>,
    release: Option<Release>,
}

impl RecordHold {
    pub fn new(release: Release) -> RecordHold {
        RecordHold {
            stale: false,
            written: Vec::new(),
            release: Some(release),
        }
    }
    pub fn stale() -> RecordHold {
        RecordHold {
            stale: true,
            written: Vec::new(),
            release: None,
        }
    }
    /// Close changed this record (so others that read it before must look again).
    pub fn wrote(&mut self, id: &str) {
        self.written.push(id.to_string());
    }
}

impl Drop for RecordHold {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f(&self.written);
        }
    }
}

impl ReadPort for crate::state::State {
    async fn find(
        &self,
        _: &KeyConfig,
        _: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<LookupResults, PortError> {
        Ok(self.lookup(reqs))
    }
}

impl ReadPort for crate::snapshot::Snapshot {
    async fn find(
        &self,
        _: &KeyConfig,
        _: &Payload,
        reqs: &[LookupRequest],
    ) -> Result<LookupResults, PortError> {
        Ok(self.lookup(reqs))
    }
}
