//! Close over HTTP: the action core's ports (`closeflow-close`) implemented against the Close
//! API (or the simulator).
//!
//! - [`client`]: the transport. [`client::Reader`] reads, [`client::Writer`] also writes; a
//!   dry-run is only ever given a reader. Pacing per endpoint group ([`ratelimit`]) and retries
//!   ([`retry`]: a create whose outcome is unknown is never re-sent blindly).
//! - [`search`]: lookups as `/data/search/` queries, owned by a [`search::Searcher`] (the read
//!   port); [`live`]: the live runs' read port (coalescing, a per-key cache, record holds).
//! - [`connect`]: the one place an instance's settings become a client (key, base URL).
//! - [`lookahead`]: `send`'s read-ahead of upcoming events' lookups.
//! - [`metadata`]: an organisation's lead statuses and custom fields, read-only.
//!
//! Invariants: every error leaves this crate for the core as a `PortError` classified once
//! ([`ports`]); secrets travel in headers and are never in an error's text; the client knows
//! calls, never lookups (the searcher builds on the client, not the other way round).
#![forbid(unsafe_code)]

pub mod calls;
pub mod client;
pub mod connect;
mod errors;
pub mod live;
pub mod lookahead;
pub mod metadata;
pub mod ports;
pub mod ratelimit;
pub mod retry;
pub mod search;
