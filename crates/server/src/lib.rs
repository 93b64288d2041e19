//! closeflow's ingestion server: Segment-compatible intake → durable queue → per-key delivery
//! through the Close action core.
#![forbid(unsafe_code)]

pub mod queue;
