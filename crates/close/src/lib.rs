//! The Close action "Create or Update Contact and Lead", pure: payload normalisation, lookup
//! requests, the planner, the in-memory and snapshot views of Close, the dry-run overlay, and
//! the executor and run driver over two ports ([`port::ReadPort`], [`port::WritePort`]).
//!
//! Invariants this crate keeps by construction (it has no HTTP client and no network or timer
//! runtime among its dependencies; `closeflow-close-api` implements the ports over HTTP):
//! - **The planner never calls Close**: the decision is one pure function, [`plan::plan`]:
//!   (key settings, payload, the records the lookups returned) → [`plan::Plan`]. Lookups are
//!   plain data ([`lookup::LookupRequest`]), gathered before planning, so a dry-run, a live run
//!   and the tests share every line of planning code.
//! - **Dry-run cannot write**: [`exec::dry_run`] and [`run::dry_run`] take a read port only;
//!   only [`exec::apply`] and [`run::send`] take a write port.
#![forbid(unsafe_code)]

pub mod exec;
mod hash_index;
pub mod lookup;
pub mod model;
pub mod overlay;
pub mod payload;
pub mod plan;
pub mod port;
pub mod run;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod stored;

pub use model::{Contact, KeyConfig, Lead};
pub use payload::{Flags, Payload, PayloadError};
pub use plan::{Change, Plan, Step, StepKind, plan};
