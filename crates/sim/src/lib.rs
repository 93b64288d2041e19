//! A local stand-in for the subset of the Close API that closeflow uses: same paths, auth,
//! JSON shapes, defaults, list-replacing `PUT`, id formats, `date_created` order, the search
//! node types we send, per-group rate limits per key and per organisation with headers, and
//! fault injection.
//!
//! It is written from the API's documented and recorded shapes and shares no types with the
//! client, so that it cannot agree with the client's mistakes.
#![forbid(unsafe_code)]

mod api;
mod records;
mod search;
mod store;

pub use api::{router, serve};
pub use store::{Faults, Limits, ORG_KEYS, Sim};
