//! `synckit cleanup`: one-shot retention cleanup with the TS defaults; the same
//! function the scheduler runs.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::database::{connect_now, require_current_schema, DatabaseArgs};
use super::duration::{parse_days, parse_hours};
use crate::maintenance::{run_cleanup, run_recorded};
use crate::storage::{CleanupOptions, PostgresStorage};

/// Retention settings, shared with the scheduler's cleanup job.
#[derive(Debug, Clone, Args)]
pub(crate) struct RetentionArgs {
    /// Delete sessions not seen for this long (number = hours, or 36h/2d); 0 skips.
    #[arg(long, env = "CLEANUP_SESSIONS_HOURS", default_value = "24", value_parser = parse_hours)]
    sessions_hours: Duration,
    /// Delete deltas older than this (number = days, or 2w/720h); 0 skips.
    #[arg(long, env = "CLEANUP_DELTAS_DAYS", default_value = "30", value_parser = parse_days)]
    deltas_days: Duration,
    /// Delete snapshots older than this (number = days); 0 skips the age rule.
    #[arg(long, env = "CLEANUP_SNAPSHOTS_DAYS", default_value = "7", value_parser = parse_days)]
    snapshots_days: Duration,
    /// Keep at most this many newest snapshots per document; 0 skips the count rule.
    #[arg(long, env = "CLEANUP_MAX_SNAPSHOTS_PER_DOC", default_value_t = 10)]
    max_snapshots_per_doc: u32,
    /// Rows deleted per statement: small enough that no statement holds locks long.
    #[arg(long, env = "CLEANUP_BATCH_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch_size: u32,
}

impl RetentionArgs {
    pub(crate) fn options(&self, dry_run: bool) -> CleanupOptions {
        let enabled = |d: Duration| (!d.is_zero()).then_some(d);
        CleanupOptions {
            sessions_older_than: enabled(self.sessions_hours),
            deltas_older_than: enabled(self.deltas_days),
            snapshots_older_than: enabled(self.snapshots_days),
            max_snapshots_per_document: (self.max_snapshots_per_doc > 0)
                .then_some(self.max_snapshots_per_doc),
            dry_run,
            batch_size: self.batch_size,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CleanupArgs {
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
    /// Count what would be deleted without deleting anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the counts as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Run the cleanup as a recorded run of the `cleanup` job, claimed for "now", so it
/// shows in the run history next to the scheduler's.
async fn record_manual_cleanup(
    storage: &PostgresStorage,
    options: &crate::storage::CleanupOptions,
) -> anyhow::Result<crate::maintenance::CleanupReport> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let mut report = None;
    let work = async {
        let r = run_cleanup(storage, options)
            .await
            .map_err(|e| e.to_string())?;
        report = Some(r);
        Ok(serde_json::json!(r.counts))
    };
    let recorded = run_recorded(
        storage,
        "cleanup",
        chrono::Utc::now(),
        &format!("cli:{host}"),
        work,
    )
    .await;
    match (recorded, report) {
        (Some(Ok(_)), Some(report)) => Ok(report),
        (Some(Err(e)), _) => anyhow::bail!("cleanup failed: {e}"),
        // The run log is unusable (e.g. schema not migrated): clean up anyway.
        _ => Ok(run_cleanup(storage, options).await?),
    }
}

pub(crate) fn run(args: CleanupArgs) -> anyhow::Result<ExitCode> {
    super::block_on(cleanup_command(args))
}

async fn cleanup_command(args: CleanupArgs) -> anyhow::Result<ExitCode> {
    let settings = args.database.required("cleanup")?;
    let pool = connect_now(&settings).await?;
    require_current_schema(&pool, "cleanup").await?;
    let storage = PostgresStorage::from_pool(pool.clone(), false);
    let options = args.retention.options(args.dry_run);
    let report = if args.dry_run {
        // A dry run changes nothing, so it is not part of the run history.
        run_cleanup(&storage, &options).await?
    } else {
        record_manual_cleanup(&storage, &options).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}
