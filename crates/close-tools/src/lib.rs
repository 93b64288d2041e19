//! Developer tooling over the Close action: what a person changing a mapping asks before it
//! goes live. [`diff`] compares two versions of a set of instances event by event (each
//! version's plans from its own dry-run); [`testing`] reads and runs mapping test files;
//! [`org_check`] checks an instance's literal ids and values against a Close organisation;
//! [`plan_view`] renders plans as `dry-run` prints them (the CLI, and the server's console).
//!
//! Invariants: a tool decides nothing about Close records itself. Every plan it shows comes
//! from `closeflow_close::run` (the code `dry-run` and `send` run), so a diff is exactly the
//! difference of two dry-runs and a mapping test passes exactly when a dry-run would agree.
#![forbid(unsafe_code)]

pub mod diff;
pub mod org_check;
pub mod plan_view;
pub mod testing;
