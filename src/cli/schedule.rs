//! The scheduler's flags on `serve`: one schedule and switch per job, with the
//! retention settings `synckit cleanup` uses.

use clap::Args;

use super::cleanup::RetentionArgs;
use super::duration::parse_bool;
use crate::maintenance::{JobConfig, JobKind, Schedule};

#[derive(Debug, Clone, Args)]
pub(crate) struct ScheduleArgs {
    /// Run the retention cleanup on a schedule (sessions, deltas, snapshots).
    #[arg(long, env = "SYNCKIT_CLEANUP_ENABLED", default_value = "true", value_parser = parse_bool)]
    cleanup_enabled: bool,
    /// When the cleanup runs: cron, UTC; 5 fields, or 6 with seconds first.
    #[arg(long, env = "SYNCKIT_CLEANUP_SCHEDULE", default_value = "0 3 * * *")]
    cleanup_schedule: String,
    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
    /// Prune expired presence of a shared (postgres/redis) awareness store on a
    /// schedule, announcing the leaves. The memory store is swept every 5 s anyway.
    #[arg(long, env = "SYNCKIT_AWARENESS_PRUNE_ENABLED", default_value = "true", value_parser = parse_bool)]
    awareness_prune_enabled: bool,
    /// When shared awareness is pruned (cron, UTC, seconds allowed).
    #[arg(
        long,
        env = "SYNCKIT_AWARENESS_PRUNE_SCHEDULE",
        default_value = "*/10 * * * * *"
    )]
    awareness_prune_schedule: String,
    /// Snapshot and compact documents whose delta history grew past the threshold.
    #[arg(long, env = "SYNCKIT_COMPACTION_ENABLED", default_value = "true", value_parser = parse_bool)]
    compaction_enabled: bool,
    /// When compaction runs (cron, UTC).
    #[arg(
        long,
        env = "SYNCKIT_COMPACTION_SCHEDULE",
        default_value = "30 * * * *"
    )]
    compaction_schedule: String,
    /// Deltas a document may keep before it is snapshotted and compacted.
    #[arg(long, env = "SYNCKIT_COMPACTION_THRESHOLD", default_value_t = 1000)]
    compaction_threshold: u64,
}

impl ScheduleArgs {
    /// The job list; an invalid cron expression is an error naming the setting.
    pub(crate) fn jobs(&self) -> anyhow::Result<Vec<JobConfig>> {
        let schedule = |value: &str, setting: &str| {
            Schedule::parse(value).map_err(|e| anyhow::anyhow!("{setting}: {e}"))
        };
        Ok(vec![
            JobConfig {
                name: "cleanup",
                kind: JobKind::Cleanup(self.retention.options(false)),
                schedule: schedule(&self.cleanup_schedule, "SYNCKIT_CLEANUP_SCHEDULE")?,
                enabled: self.cleanup_enabled,
            },
            JobConfig {
                name: "awareness-prune",
                kind: JobKind::AwarenessPrune,
                schedule: schedule(
                    &self.awareness_prune_schedule,
                    "SYNCKIT_AWARENESS_PRUNE_SCHEDULE",
                )?,
                enabled: self.awareness_prune_enabled,
            },
            JobConfig {
                name: "compaction",
                kind: JobKind::Compaction {
                    threshold: self.compaction_threshold,
                },
                schedule: schedule(&self.compaction_schedule, "SYNCKIT_COMPACTION_SCHEDULE")?,
                enabled: self.compaction_enabled,
            },
        ])
    }
}
