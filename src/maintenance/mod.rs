//! Maintenance jobs as plain async functions returning reports. `synckit cleanup`
//! and the built-in scheduler call the same functions.

pub(crate) mod awareness;
pub(crate) mod cleanup;
pub mod compaction;
pub mod scheduler;

pub(crate) use cleanup::{run_cleanup, CleanupReport};
pub use scheduler::{run_recorded, run_recorded_until, JobConfig, JobKind, Schedule, Scheduler};
