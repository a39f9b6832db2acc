//! The built-in scheduler: maps cron expressions to the maintenance jobs.
//!
//! Each enabled job sleeps until its next occurrence, claims that occurrence in the
//! run log (a unique row in PostgreSQL, so an instance sharing the database with
//! others runs it only if nobody else did), runs, and records how it ended; a failed
//! run is simply tried again at the next occurrence; occurrences missed during a
//! long run or a suspend are skipped (one catch-up at most). Wall time comes from the
//! server's [`crate::clock::Clock`] (the system clock, read again at least every
//! [`CLOCK_RECHECK`] while waiting), so tests drive schedules with a `TestClock`.
//! (tokio-cron-scheduler reads the system clock directly, which tests cannot move;
//! we use the same cron syntax through the `cron` crate it is built on.)

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{compaction, run_cleanup};
use crate::pubsub::PubSubState;
use crate::storage::{CleanupOptions, MaintenanceStore, RunOutcome, RunStatus};
use crate::sync::SyncService;

/// A parsed schedule. Accepts standard 5-field crontab (`0 3 * * *`, seconds = 0) and
/// the 6/7-field form with seconds (`*/10 * * * * *`); always UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    parsed: cron::Schedule,
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {trimmed}")
        } else {
            trimmed.to_owned()
        };
        let parsed = cron::Schedule::from_str(&full).map_err(|e| {
            format!(
                "invalid cron expression {expression:?}: {e} (use 5 fields `min hour day month weekday`, \
                 e.g. \"0 3 * * *\", or 6 with seconds first, e.g. \"*/10 * * * * *\")"
            )
        })?;
        Ok(Schedule {
            expression: trimmed.to_owned(),
            parsed,
        })
    }

    pub(crate) fn expression(&self) -> &str {
        &self.expression
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.after(&after).next()
    }
}

/// What a job does.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// Retention cleanup of sessions, deltas and snapshots.
    Cleanup(CleanupOptions),
    /// Prune expired awareness entries of a shared (PostgreSQL/Redis) store and
    /// announce the leaves.
    AwarenessPrune,
    /// Snapshot + compact documents with more deltas than the threshold.
    Compaction { threshold: u64 },
}

/// One configured job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: &'static str,
    pub kind: JobKind,
    pub schedule: Schedule,
    pub enabled: bool,
}

impl JobConfig {
    /// Whether the job has work with this awareness store: the memory store belongs
    /// to one instance and its own sweeper prunes it, so awareness-prune is for a
    /// shared store (PostgreSQL, Redis) only, pruned once per occurrence across the
    /// fleet. `Server::new` schedules, and `check-config` reports, by this alone.
    pub(crate) fn applies(&self, shared_awareness: bool) -> bool {
        shared_awareness || !matches!(self.kind, JobKind::AwarenessPrune)
    }
}

/// Next planned occurrence of each job, for the admin API.
pub(crate) use crate::admin_api::JobStatus;

pub struct Scheduler {
    jobs: Vec<JobConfig>,
    sync: Arc<SyncService>,
    instance_id: String,
    next_runs: Mutex<HashMap<&'static str, DateTime<Utc>>>,
}

/// How long the scheduler sleeps at most before reading the wall clock again, so a
/// step of the system clock (an NTP correction, a resume from suspend) moves its
/// decisions within this long (docs/operations.md §8).
pub const CLOCK_RECHECK: Duration = Duration::from_secs(30);

impl Scheduler {
    pub(crate) fn new(
        jobs: Vec<JobConfig>,
        sync: Arc<SyncService>,
        instance_id: String,
    ) -> Scheduler {
        Scheduler {
            jobs,
            sync,
            instance_id,
            next_runs: Mutex::new(HashMap::new()),
        }
    }

    pub fn status(&self) -> Vec<JobStatus> {
        let next = self.next_runs.lock().unwrap_or_else(|p| p.into_inner());
        self.jobs
            .iter()
            .map(|j| JobStatus {
                name: j.name.to_owned(),
                schedule: j.schedule.expression().to_owned(),
                enabled: j.enabled,
                next_run: next.get(j.name).copied(),
            })
            .collect()
    }

    /// Run every enabled job on its schedule until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.jobs.len() {
            if self.jobs[index].enabled {
                tasks.spawn(self.clone().run_job(index, stop.clone()));
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn run_job(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let job = &self.jobs[index];
        let clock = &self.sync.clock;
        let mut after = clock.now_utc();
        loop {
            let Some(at) = job.schedule.next_after(after) else {
                tracing::warn!(
                    job = job.name,
                    "schedule has no future occurrence; job stops"
                );
                return;
            };
            self.next_runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.name, at);
            // Sleep until the wall clock reaches `at`, reading it again at least
            // every CLOCK_RECHECK: monotonic sleeps do not see the clock stepped.
            loop {
                let now = clock.now_utc();
                if now >= at {
                    break;
                }
                let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(CLOCK_RECHECK)) => {}
                    _ = stop.cancelled() => return,
                }
            }
            self.run_occurrence(job, at, &stop).await;
            if stop.is_cancelled() {
                return;
            }
            // Occurrences missed during a long run, a suspend or a clock step are
            // skipped: the one just run was the catch-up (docs/operations.md §8).
            after = next_base(at, clock.now_utc());
        }
    }

    /// Claim, run and record one occurrence; interrupted (and recorded so) when
    /// `stop` is cancelled.
    async fn run_occurrence(
        &self,
        job: &JobConfig,
        scheduled_for: DateTime<Utc>,
        stop: &CancellationToken,
    ) {
        let storage = self.sync.hub.storage().adapter().clone();
        if !self
            .claim_in_redis(job, scheduled_for, storage.is_shared())
            .await
        {
            return;
        }
        let result = run_recorded_until(
            storage.as_ref(),
            job.name,
            scheduled_for,
            &self.instance_id,
            run_kind(&job.kind, &self.sync),
            stop,
        )
        .await;
        if let Some(Err(error)) = result.filter(|_| !stop.is_cancelled()) {
            record_failure(&self.sync, job.name, &error);
        }
    }
}

impl Scheduler {
    /// Without a database the run log is this instance's memory, which cannot stop
    /// another instance running the same occurrence. For work on state the fleet
    /// shares (a Redis or PostgreSQL awareness store) the claim is then made in
    /// Redis. Work on this instance's own memory (cleanup, compaction of memory
    /// storage) runs everywhere, as it should.
    async fn claim_in_redis(
        &self,
        job: &JobConfig,
        at: DateTime<Utc>,
        shared_storage: bool,
    ) -> bool {
        let shared_work = matches!(job.kind, JobKind::AwarenessPrune);
        let pubsub = self.sync.hub.pubsub();
        if shared_storage || !shared_work || pubsub.state() == PubSubState::SingleInstance {
            return true;
        }
        let key = format!(
            "{}maintenance:{}:{}",
            self.sync.hub.settings().channels.prefix(),
            job.name,
            at.timestamp_millis()
        );
        match pubsub.try_claim(&key, CLAIM_TTL).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(job = job.name, error = %e, "could not claim a maintenance run in Redis; skipping it");
                false
            }
        }
    }
}

/// Where the next occurrence is looked for after running the one due at `at`:
/// after `now` when occurrences were missed meanwhile, so at most one catch-up
/// runs instead of every missed occurrence back to back.
pub fn next_base(at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    at.max(now)
}

/// How long a Redis claim outlives its occurrence: long enough that no instance
/// with a skewed clock can still be waiting to claim it.
const CLAIM_TTL: Duration = Duration::from_secs(3600);

/// Claim `scheduled_for` of `job` in the run log, do the work, record the outcome
/// and log one structured line. `None` when another instance claimed it (or the
/// claim could not be made); otherwise the work's result. `synckit cleanup` records
/// its runs through this too.
pub(crate) async fn run_recorded(
    storage: &(impl MaintenanceStore + ?Sized),
    job: &str,
    scheduled_for: DateTime<Utc>,
    instance_id: &str,
    work: impl std::future::Future<Output = Result<Value, String>>,
) -> Option<Result<Value, String>> {
    let never = CancellationToken::new();
    run_recorded_until(storage, job, scheduled_for, instance_id, work, &never).await
}

/// What a run interrupted by shutdown answers (its row says `interrupted`).
const INTERRUPTED: &str = "interrupted by shutdown";

/// [`run_recorded`], stopped when `stop` is cancelled: the work is dropped at its
/// next await point and the run is recorded as `interrupted` (docs/operations.md
/// §6 and §8) instead of staying `running`; the answer is then
/// `Some(Err(INTERRUPTED))`.
pub(crate) async fn run_recorded_until(
    storage: &(impl MaintenanceStore + ?Sized),
    job: &str,
    scheduled_for: DateTime<Utc>,
    instance_id: &str,
    work: impl std::future::Future<Output = Result<Value, String>>,
    stop: &CancellationToken,
) -> Option<Result<Value, String>> {
    if stop.is_cancelled() {
        return None;
    }
    let id = match storage.claim_run(job, scheduled_for, instance_id).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            tracing::debug!(job, %scheduled_for, "another instance runs this occurrence");
            return None;
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "could not claim a maintenance run; skipping it");
            return None;
        }
    };
    let started = tokio::time::Instant::now();
    let result = tokio::select! {
        r = work => Some(r),
        _ = stop.cancelled() => None,
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (outcome, result) = match result {
        Some(Ok(counts)) => {
            crate::metrics::PROCESS.job_finished(job, true, started.elapsed().as_secs_f64());
            tracing::info!(job, run_id = id, duration_ms, counts = %counts, outcome = "ok", "maintenance run finished");
            let outcome = RunOutcome {
                status: RunStatus::Ok,
                counts: counts.clone(),
                error: None,
            };
            (outcome, Ok(counts))
        }
        Some(Err(error)) => {
            crate::metrics::PROCESS.job_finished(job, false, started.elapsed().as_secs_f64());
            tracing::error!(job, run_id = id, duration_ms, error = %error, outcome = "failed", "maintenance run failed; it runs again at its next occurrence");
            let outcome = RunOutcome {
                status: RunStatus::Failed,
                counts: json!({}),
                error: Some(error.clone()),
            };
            (outcome, Err(error))
        }
        None => {
            tracing::warn!(
                job,
                run_id = id,
                duration_ms,
                outcome = "interrupted",
                "maintenance run interrupted by shutdown"
            );
            let outcome = RunOutcome {
                status: RunStatus::Interrupted,
                counts: json!({}),
                error: Some(INTERRUPTED.to_owned()),
            };
            (outcome, Err(INTERRUPTED.to_owned()))
        }
    };
    if let Err(e) = storage.finish_run(id, &outcome).await {
        tracing::warn!(job, run_id = id, error = %e, "could not record the end of a maintenance run");
    }
    Some(result)
}

/// A failed run, in the instance's events (the run log has it too).
pub(crate) fn record_failure(sync: &SyncService, job: &str, error: &str) {
    sync.events.record(
        sync.now_ms(),
        crate::events::EventKind::MaintenanceFailed,
        format!("maintenance run {job} failed: {error}"),
    );
}

/// Do the work of one job; the counts are recorded with the run.
pub(crate) async fn run_kind(kind: &JobKind, sync: &SyncService) -> Result<Value, String> {
    let storage = sync.hub.storage().adapter();
    match kind {
        JobKind::Cleanup(options) => run_cleanup(storage.as_ref(), options)
            .await
            .map(|r| json!(r.counts))
            .map_err(|e| e.to_string()),
        JobKind::AwarenessPrune => super::awareness::prune_and_announce(sync)
            .await
            .map(|n| json!({ "expired": n }))
            .map_err(|e| e.to_string()),
        JobKind::Compaction { threshold } => {
            compaction::compact_large_documents(storage.as_ref(), *threshold)
                .await
                .map(|r| json!(r))
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn awareness_prune_applies_to_a_shared_store_only() {
        let job = |kind| JobConfig {
            name: "job",
            kind,
            schedule: Schedule::parse("0 3 * * *").expect("schedule"),
            enabled: true,
        };
        let prune = job(JobKind::AwarenessPrune);
        assert!(prune.applies(true) && !prune.applies(false));
        let compaction = job(JobKind::Compaction { threshold: 1 });
        assert!(compaction.applies(true) && compaction.applies(false));
    }

    #[test]
    fn schedules_accept_five_and_six_fields() {
        let daily = Schedule::parse("0 3 * * *").expect("5 fields");
        let base = Utc
            .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
            .single()
            .expect("date");
        assert_eq!(
            daily.next_after(base),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).single()
        );
        let every10 = Schedule::parse("*/10 * * * * *").expect("6 fields");
        assert_eq!(
            every10.next_after(base),
            Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 10).single()
        );
        let err = Schedule::parse("every day").expect_err("invalid");
        assert!(err.contains("invalid cron expression"), "{err}");
        assert!(Schedule::parse("61 * * * *").is_err());
    }

    /// The in-memory run log says `interrupted` too when the work is stopped.
    #[tokio::test]
    async fn a_stopped_run_is_recorded_as_interrupted_in_memory() {
        let storage = crate::storage::MemoryStorage::new();
        let stop = CancellationToken::new();
        let at = Utc
            .with_ymd_and_hms(2026, 1, 1, 3, 0, 0)
            .single()
            .expect("date");
        let work = std::future::pending::<Result<Value, String>>();
        let run = run_recorded_until(&storage, "cleanup", at, "me", work, &stop);
        let (result, ()) = tokio::join!(run, async { stop.cancel() });
        assert_eq!(result, Some(Err(INTERRUPTED.to_owned())));
        let runs = storage.recent_runs(10).await.expect("runs");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].outcome, "interrupted");
        assert!(runs[0].finished_at.is_some());
        // Once stopped, nothing more is claimed.
        let work = async { Ok(json!({})) };
        assert_eq!(
            run_recorded_until(&storage, "cleanup", at, "me", work, &stop).await,
            None
        );
    }
}
