//! The Close action "Create or Update Contact and Lead": payload normalisation, the pure
//! planner, the executor, and the Close API client with rate-limit pacing and retries.
//!
//! The decision lives in one pure function, [`plan::plan`]: (key settings, payload, the records
//! the lookups returned) → [`plan::Plan`]. Lookups are plain data ([`lookup::LookupRequest`]),
//! gathered before planning, so a dry-run, a live run and the tests all share every line of
//! planning code.
#![forbid(unsafe_code)]

pub mod client;
pub mod diff;
pub mod exec;
mod hash_index;
pub mod live;
pub mod lookup;
pub mod metadata;
pub mod model;
pub mod overlay;
pub mod payload;
pub mod plan;
pub mod ratelimit;
pub mod retry;
pub mod run;
pub mod schema;
pub mod search;
pub mod snapshot;
pub mod state;
pub mod stored;
pub mod testing;

pub use model::{Contact, KeyConfig, Lead};
pub use payload::{Flags, Payload, PayloadError};
pub use plan::{Change, Plan, Step, StepKind, plan};
