//! Maintenance jobs as plain async functions returning reports. `synckit cleanup`
//! and the built-in scheduler call the same functions.

pub(crate) mod awareness;
pub(crate) mod cleanup;
pub(crate) mod compaction;
pub(crate) mod scheduler;

pub(crate) use cleanup::{run_cleanup, CleanupReport};
pub(crate) use scheduler::{run_recorded, run_recorded_until};
pub use scheduler::{JobConfig, JobKind, Schedule, Scheduler};
