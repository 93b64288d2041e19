//! The fuzz targets' checks (in `checks.rs`, which the project's test suite also compiles to
//! run every corpus file on stable).
#![forbid(unsafe_code)]

pub mod checks;
