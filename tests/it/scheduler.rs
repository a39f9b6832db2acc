//! The maintenance scheduler: occurrences at the right (paused) times, disabled jobs
//! never run, failures are recorded and retried at the next occurrence, one run per
//! occurrence across instances sharing PostgreSQL, and invalid schedules refuse to
//! start.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Timelike;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use synckit::server::{Backends, Server, ServerConfig};
use synckit::testing::clock::TestClock;
use synckit::testing::maintenance::{JobConfig, JobKind, Schedule};
use synckit::testing::storage::{
    CleanupOptions, CompatStore, MaintenanceStore, MemoryStorage, PostgresStorage,
};
use tokio_util::sync::CancellationToken;

fn job(name: &'static str, kind: JobKind, cron: &str, enabled: bool) -> JobConfig {
    JobConfig {
        name,
        kind,
        schedule: Schedule::parse(cron).expect("cron"),
        enabled,
    }
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("date")
}

fn config(jobs: Vec<JobConfig>) -> ServerConfig {
    let mut config = ServerConfig::for_tests(false);
    config.maintenance = jobs;
    config
}

#[tokio::test(start_paused = true)]
async fn jobs_run_on_schedule_disabled_never_and_failures_are_retried() {
    let storage = Arc::new(MemoryStorage::new());
    let config = config(vec![
        job(
            "cleanup",
            JobKind::Cleanup(CleanupOptions::default()),
            "0 3 * * *",
            true,
        ),
        job(
            "compaction",
            JobKind::Compaction { threshold: 1 },
            "* * * * *",
            false,
        ),
    ]);
    let mut backends = Backends::in_memory(&config);
    backends.storage = storage.clone();
    // Wall time that moves with paused tokio time.
    let clock = TestClock::starting_at_utc(at(2026, 1, 1, 12, 0));
    let server = Server::with_clock(config, backends, clock);
    let scheduler = server.state.scheduler.clone();
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.clone().run(stop.clone()));

    tokio::time::sleep(Duration::from_secs(2 * 86_400 + 60)).await;
    let runs = storage.recent_runs(50).await.expect("runs");
    assert_eq!(runs.len(), 2, "two daily occurrences in two days: {runs:?}");
    for run in &runs {
        assert_eq!(run.job, "cleanup");
        assert_eq!(run.outcome, "ok");
        assert_eq!(
            (run.scheduled_for.hour(), run.scheduled_for.minute()),
            (3, 0)
        );
        assert_eq!(run.counts["sessionsDeleted"], 0);
    }
    let status = scheduler.status();
    let cleanup = status.iter().find(|j| j.name == "cleanup").expect("job");
    assert!(cleanup.next_run.expect("planned") > runs[0].scheduled_for);
    let compaction = status.iter().find(|j| j.name == "compaction").expect("job");
    assert!(!compaction.enabled && compaction.next_run.is_none());

    // A failing occurrence is recorded, and the next one runs again.
    storage.set_reachable(false);
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    storage.set_reachable(true);
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    let runs = storage.recent_runs(50).await.expect("runs");
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[1].outcome, "failed");
    assert!(runs[1]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("unreachable")));
    assert_eq!(runs[0].outcome, "ok");
    stop.cancel();
}

#[sqlx::test(migrations = "./migrations")]
async fn each_occurrence_runs_on_exactly_one_instance(pool: PgPool) {
    // Racing claims of one occurrence: exactly one wins.
    let storage = PostgresStorage::from_pool(pool.clone(), false);
    let at = chrono::Utc::now();
    let instances: Vec<String> = (0..10).map(|i| format!("instance-{i}")).collect();
    let claims = futures_util::future::join_all(
        instances
            .iter()
            .map(|instance| storage.claim_run("cleanup", at, instance)),
    )
    .await;
    let won: Vec<_> = claims
        .into_iter()
        .map(|c| c.expect("claim"))
        .filter(Option::is_some)
        .collect();
    assert_eq!(won.len(), 1);

    // Two schedulers sharing the database, a job every second.
    let stop = CancellationToken::new();
    for _ in 0..2 {
        let own = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with((*pool.connect_options()).clone());
        let config = config(vec![job(
            "compaction",
            JobKind::Compaction { threshold: 1_000 },
            "* * * * * *",
            true,
        )]);
        let mut backends = Backends::in_memory(&config);
        backends.storage = Arc::new(PostgresStorage::from_pool(own, false));
        let server = Server::new(config, backends);
        tokio::spawn(server.state.scheduler.clone().run(stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    stop.cancel();
    let (occurrences, runs): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT scheduled_for), count(*) FROM maintenance_runs WHERE job = 'compaction'",
    )
    .fetch_one(&pool)
    .await
    .expect("runs");
    assert!(occurrences >= 2, "{occurrences} occurrences");
    assert_eq!(occurrences, runs, "an occurrence ran twice");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM maintenance_runs WHERE outcome <> 'ok' AND job = 'compaction' AND finished_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("failed");
    assert_eq!(failed, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn compaction_snapshots_and_trims_long_histories(pool: PgPool) {
    use synckit::testing::storage::{DeltaOperation, NewDelta};
    let storage = PostgresStorage::from_pool(pool.clone(), false);
    storage
        .save_document("big", &serde_json::json!({"id": "big", "fields": {"a": 1}}))
        .await
        .expect("doc");
    for i in 0..5u64 {
        storage
            .save_delta(&NewDelta {
                document_id: "big".into(),
                client_id: "w".into(),
                operation: DeltaOperation::Set,
                field_path: "a".into(),
                value: Some(serde_json::json!(i)),
                clock_value: i + 1,
                max_clock_value: None,
            })
            .await
            .expect("delta");
    }
    storage
        .update_vector_clock("big", "w", 5)
        .await
        .expect("clock");
    let report = synckit::testing::maintenance::compact_large_documents(&storage, 3)
        .await
        .expect("compact");
    assert_eq!(report.documents_compacted, 1);
    assert_eq!(report.deltas_removed, 5);
    let snapshot = storage
        .latest_snapshot("big")
        .await
        .expect("get")
        .expect("snapshot");
    assert_eq!(snapshot.state["fields"]["a"], 1);
    assert_eq!(snapshot.version, serde_json::json!({"w": 5}));
    let again = synckit::testing::maintenance::compact_large_documents(&storage, 3)
        .await
        .expect("compact");
    assert_eq!(
        again.documents_compacted, 0,
        "nothing left over the threshold"
    );
}

#[test]
fn an_invalid_schedule_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["serve", "--port", "0", "--admin-listen", "off"])
        .env("SYNCKIT_CLEANUP_SCHEDULE", "every night")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SYNCKIT_CLEANUP_SCHEDULE"), "{err}");
    assert!(err.contains("invalid cron expression"), "{err}");
}

/// Without a database, shared work (pruning a Redis awareness store) is claimed in
/// Redis: two instances run each occurrence once between them.
#[tokio::test]
async fn without_a_database_redis_claims_shared_work_once_per_fleet() {
    use synckit::testing::awareness::RedisAwarenessStore;
    use synckit::testing::pubsub::{PubSub, RedisPubSub, RedisSettings, RedisTarget};
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL must be set (the README test command sets it); start redis-server");
    let prefix = format!("synckit-test-{}:", uuid::Uuid::new_v4());
    let stop = CancellationToken::new();
    let mut storages = Vec::new();
    for _ in 0..2 {
        let mut config = config(vec![job(
            "awareness-prune",
            JobKind::AwarenessPrune,
            "* * * * * *",
            true,
        )]);
        config.channel_prefix = prefix.clone();
        let target = RedisTarget::parse(&url).expect("REDIS_URL");
        let pubsub = Arc::new(RedisPubSub::start(RedisSettings::new(target)).expect("redis"));
        for _ in 0..100 {
            if pubsub.state() == synckit::testing::pubsub::PubSubState::Connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let storage = Arc::new(MemoryStorage::new());
        let mut backends = Backends::in_memory(&config);
        backends.storage = storage.clone();
        backends.pubsub = pubsub;
        backends.awareness = Arc::new(
            RedisAwarenessStore::new(&url, Duration::from_secs(30))
                .expect("store")
                .with_key_prefix(prefix.clone()),
        );
        let server = Server::new(config, backends);
        tokio::spawn(server.state.scheduler.clone().run(stop.clone()));
        storages.push(storage);
    }
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    stop.cancel();
    let mut occurrences = std::collections::HashMap::new();
    for storage in &storages {
        for run in storage.recent_runs(50).await.expect("runs") {
            *occurrences.entry(run.scheduled_for).or_insert(0) += 1;
        }
    }
    assert!(occurrences.len() >= 2, "{occurrences:?}");
    assert!(
        occurrences.values().all(|n| *n == 1),
        "an occurrence ran on both instances: {occurrences:?}"
    );
}

/// The prune job against the real PostgreSQL awareness store: an expired client is
/// removed, its leave reaches subscribers, and the run is recorded with its count.
#[sqlx::test(migrations = "./migrations")]
async fn the_prune_job_removes_expired_presence_and_announces_leaves(pool: PgPool) {
    use synckit::testing::awareness::PostgresAwarenessStore;
    let mut config = config(vec![job(
        "awareness-prune",
        JobKind::AwarenessPrune,
        "* * * * * *",
        true,
    )]);
    config.sync.awareness_timeout = Duration::from_millis(300);
    let mut backends = Backends::in_memory(&config);
    backends.storage = common::pg_storage(&pool);
    backends.awareness = Arc::new(PostgresAwarenessStore::new(
        pool.clone(),
        config.sync.awareness_timeout,
    ));
    let server = common::start_on(config, backends).await;
    let (mut watcher, _alice, joined) = common::alice_joins_room(&server).await;
    assert_eq!(joined["state"]["name"], "Alice");
    // Alice goes quiet; within the timeout plus one occurrence she is pruned.
    let leave = watcher.expect("awareness_update").await;
    assert_eq!(leave["clientId"], "alice");
    assert!(leave["state"].is_null(), "{leave}");
    assert_eq!(leave["clock"], 2);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM awareness_states")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    // The leave goes out during the run; its record is finished just after.
    let mut pruned: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        pruned = sqlx::query_scalar(
            "SELECT counts FROM maintenance_runs WHERE job = 'awareness-prune' AND outcome = 'ok'",
        )
        .fetch_all(&pool)
        .await
        .expect("runs");
        if pruned.iter().any(|c| c["expired"] == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pruned.iter().any(|c| c["expired"] == 1), "{pruned:?}");
    server.shutdown.cancel();
}

/// Shutdown interrupts a maintenance run still under way and records it as
/// `interrupted` before the pool closes (docs/operations.md §6), instead of leaving
/// its row `running`. The run is held up by a lock the test takes on `deltas`.
#[sqlx::test(migrations = "./migrations")]
async fn shutdown_records_a_running_job_as_interrupted(pool: PgPool) {
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE deltas IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let config = config(vec![job(
        "compaction",
        JobKind::Compaction { threshold: 1 },
        "* * * * * *",
        true,
    )]);
    let mut backends = Backends::in_memory(&config);
    backends.storage = common::pg_storage(&pool);
    let server = common::start_on(config, backends).await;
    let running = async {
        loop {
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM maintenance_runs WHERE outcome = 'running'")
                    .fetch_optional(&pool)
                    .await
                    .expect("runs");
            if let Some(id) = id {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let id = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("a compaction run starts and waits on the lock");
    server.shutdown.cancel();
    // Recorded while the lock is still held: the run was stopped, not finished.
    let recorded = async {
        loop {
            let (outcome, finished): (String, bool) = sqlx::query_as(
                "SELECT outcome::text, finished_at IS NOT NULL FROM maintenance_runs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("run");
            if outcome != "running" {
                return (outcome, finished);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (outcome, finished) = tokio::time::timeout(Duration::from_secs(5), recorded)
        .await
        .expect("the run is recorded as it is interrupted");
    assert_eq!(outcome, "interrupted");
    assert!(finished);
    blocker.rollback().await.expect("unlock");
    let drained = tokio::time::timeout(Duration::from_secs(15), server.done)
        .await
        .expect("the server stops")
        .expect("join");
    assert!(drained);
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM maintenance_runs WHERE outcome = 'running'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(running, 0, "a run was left running");
}

/// A suspend or a long stop of the process (the wall clock jumps 5½ hours while the
/// scheduler waits): the hourly job runs one catch-up, not the five occurrences it
/// missed back to back, and then waits for the next occurrence after now. The
/// injected clock's step alone moves the decision (docs/operations.md §8).
#[tokio::test(start_paused = true)]
async fn a_clock_step_runs_one_catch_up_and_skips_missed_occurrences() {
    let storage = Arc::new(MemoryStorage::new());
    let config = config(vec![job(
        "compaction",
        JobKind::Compaction { threshold: 1_000 },
        "0 * * * *",
        true,
    )]);
    let mut backends = Backends::in_memory(&config);
    backends.storage = storage.clone();
    let clock = TestClock::starting_at_utc(at(2026, 1, 1, 12, 0));
    let server = Server::with_clock(config, backends, clock.clone());
    let scheduler = server.state.scheduler.clone();
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.clone().run(stop.clone()));

    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(storage.recent_runs(50).await.expect("runs").is_empty());
    let next = |s: &synckit::testing::maintenance::Scheduler| {
        s.status()
            .into_iter()
            .find(|j| j.name == "compaction")
            .and_then(|j| j.next_run)
    };
    assert_eq!(next(&scheduler), Some(at(2026, 1, 1, 13, 0)));

    // 12:10 → 17:40 without tokio's clock moving: the step is noticed within
    // CLOCK_RECHECK.
    clock.step(Duration::from_secs(5 * 3600 + 1800));
    tokio::time::sleep(synckit::testing::maintenance::CLOCK_RECHECK + Duration::from_secs(1)).await;
    let runs = storage.recent_runs(50).await.expect("runs");
    let planned: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
    assert_eq!(
        planned,
        vec![at(2026, 1, 1, 13, 0)],
        "one catch-up, missed occurrences skipped"
    );
    assert_eq!(runs[0].outcome, "ok");
    assert_eq!(next(&scheduler), Some(at(2026, 1, 1, 18, 0)));

    // And the schedule goes on from there.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let runs = storage.recent_runs(50).await.expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].scheduled_for, at(2026, 1, 1, 18, 0));
    stop.cancel();
}

#[test]
fn the_next_occurrence_is_looked_for_after_now_when_runs_were_missed() {
    use synckit::testing::maintenance::next_base;
    let hourly = Schedule::parse("0 * * * *").expect("cron");
    let due = at(2026, 1, 1, 13, 0);
    // On time: the next occurrence follows the one just run.
    let base = next_base(due, at(2026, 1, 1, 13, 0));
    assert_eq!(hourly.next_after(base), Some(at(2026, 1, 1, 14, 0)));
    // A run (or a suspend) that ended at 17:40: 14:00–17:00 are skipped.
    let base = next_base(due, at(2026, 1, 1, 17, 40));
    assert_eq!(hourly.next_after(base), Some(at(2026, 1, 1, 18, 0)));
}
