//! Retention cleanup (docs/storage.md §4): old sessions, deltas and snapshots, deleted in
//! bounded batches by the storage adapter so the sync path never waits on it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::storage::{CleanupCounts, CleanupOptions, StorageAdapter, StorageError};

/// What one cleanup run did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CleanupReport {
    #[serde(flatten)]
    pub(crate) counts: CleanupCounts,
    pub(crate) dry_run: bool,
    #[serde(serialize_with = "millis")]
    #[serde(rename = "durationMs")]
    pub(crate) duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl std::fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        write!(
            f,
            "{verb} {} sessions, {} deltas, {} snapshots in {:.2}s",
            self.counts.sessions_deleted,
            self.counts.deltas_deleted,
            self.counts.snapshots_deleted,
            self.duration.as_secs_f64()
        )
    }
}

/// Run one cleanup and log it.
pub(crate) async fn run_cleanup(
    storage: &dyn StorageAdapter,
    options: &CleanupOptions,
) -> Result<CleanupReport, StorageError> {
    let started = Instant::now();
    let counts = storage.cleanup(options).await?;
    let report = CleanupReport {
        counts,
        dry_run: options.dry_run,
        duration: started.elapsed(),
    };
    tracing::info!(
        backend = storage.kind(),
        sessions = counts.sessions_deleted,
        deltas = counts.deltas_deleted,
        snapshots = counts.snapshots_deleted,
        dry_run = options.dry_run,
        duration_ms = report.duration.as_millis() as u64,
        "cleanup finished"
    );
    Ok(report)
}
