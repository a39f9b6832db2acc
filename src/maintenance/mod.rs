//! Maintenance jobs as plain async functions returning reports. `synckit cleanup`
//! and the built-in scheduler call the same functions.

pub mod cleanup;

pub use cleanup::{run_cleanup, CleanupReport};
