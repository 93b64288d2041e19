//! closeflow's mapping engine: instance files → validated, compiled configuration → evaluation
//! of events into action payloads.
//!
//! The crate is pure: no I/O, no async runtime. Whatever it needs from the outside world (file
//! contents, environment variables, the destination's field schema) is handed to it.
//! The pipeline follows load → compile → run-many-times:
//! [`instance::load`] parses and validates a file, collecting every problem as a
//! [`diag::Diagnostic`]; the result evaluates events with [`instance::Instance::evaluate`].
#![forbid(unsafe_code)]

pub mod diag;
pub mod env;
pub mod events;
pub mod instance;
pub mod js;
pub mod jsonschema;
pub mod path;
pub mod redact;
pub mod schema;
pub mod suggest;
pub mod template;
pub mod trigger;
pub mod value;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use instance::{Instance, Mapping, MappingOutcome};
pub use schema::{ActionSchema, DestinationSchema, FieldKind, FieldSpec, SettingSpec};
pub use trigger::Trigger;
pub use value::{EvalError, Program};
