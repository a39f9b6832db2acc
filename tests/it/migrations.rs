//! Migrations on the real PostgreSQL: a fresh database, one created by the canonical
//! SyncKit DDL (as the TypeScript server leaves it), re-runs, concurrent hosts, and
//! the `migrate`, `migrate --status`, `serve` (no auto-migrate) and `cleanup` commands'
//! exit codes and messages.

use crate::common;

use std::process::Output;

use serde_json::{json, Value};
use sqlx::PgPool;
use synckit::testing::storage::migrate;

/// The canonical DDL, exactly what migration 1 holds and what SyncKit's
/// `schema.sql` creates.
const CANONICAL: &str = include_str!("../../migrations/20240101000001_synckit_schema.sql");

fn synckit(args: &[&str], database_url: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .output()
        .expect("run synckit")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[sqlx::test(migrations = false)]
async fn a_fresh_database_gets_every_migration_once(pool: PgPool) {
    let before = migrate::status(&pool).await.expect("status");
    assert!(!before.is_current());
    assert!(before.missing.contains(&"documents".to_string()));
    let applied = migrate::apply(&pool).await.expect("apply");
    assert_eq!(applied.len(), migrate::MIGRATOR.iter().count());
    let after = migrate::status(&pool).await.expect("status");
    assert!(after.is_current(), "{after:?}");
    assert!(
        migrate::apply(&pool).await.expect("re-run").is_empty(),
        "a re-run applies nothing"
    );
    // The canonical triggers work: an update bumps the version once.
    sqlx::query("INSERT INTO documents (id, state) VALUES ('d', '{}')")
        .execute(&pool)
        .await
        .expect("insert");
    sqlx::query("UPDATE documents SET state = '{\"a\":1}' WHERE id = 'd'")
        .execute(&pool)
        .await
        .expect("update");
    let version: i64 = sqlx::query_scalar("SELECT version FROM documents WHERE id = 'd'")
        .fetch_one(&pool)
        .await
        .expect("version");
    assert_eq!(version, 2);
    let view: Option<Value> =
        sqlx::query_scalar("SELECT vector_clock::jsonb FROM documents_with_clocks WHERE id = 'd'")
            .fetch_one(&pool)
            .await
            .expect("view");
    assert_eq!(view, None);
}

#[sqlx::test(migrations = false)]
async fn a_large_document_state_is_stored_lz4_compressed(pool: PgPool) {
    migrate::apply(&pool).await.expect("apply");
    // A state well past the ~2 KB at which PostgreSQL compresses a value in the row.
    let fields: serde_json::Map<String, Value> =
        (0..400).map(|i| (format!("f{i}"), json!(i))).collect();
    let state = json!({"id": "big", "fields": fields});
    sqlx::query("INSERT INTO documents (id, state) VALUES ('big', $1)")
        .bind(&state)
        .execute(&pool)
        .await
        .expect("insert");
    let method: Option<String> =
        sqlx::query_scalar("SELECT pg_column_compression(state) FROM documents WHERE id = 'big'")
            .fetch_one(&pool)
            .await
            .expect("compression");
    assert_eq!(method.as_deref(), Some("lz4"));
    let back: Value = sqlx::query_scalar("SELECT state FROM documents WHERE id = 'big'")
        .fetch_one(&pool)
        .await
        .expect("read back");
    assert_eq!(back, state);
}

#[sqlx::test(migrations = false)]
async fn a_database_created_by_the_typescript_server_is_adopted_unchanged(pool: PgPool) {
    sqlx::raw_sql(CANONICAL)
        .execute(&pool)
        .await
        .expect("canonical DDL");
    sqlx::query(
        "INSERT INTO documents (id, state) VALUES ('ts-doc', '{\"id\":\"ts-doc\",\"fields\":{\"a\":1}}')",
    )
    .execute(&pool)
    .await
    .expect("TS row");
    sqlx::query("INSERT INTO deltas (document_id, client_id, operation_type, field_path, value, clock_value) VALUES ('ts-doc', 'conn-1', 'set', 'a', '1', 1)")
        .execute(&pool)
        .await
        .expect("TS delta");
    let applied = migrate::apply(&pool).await.expect("apply");
    assert_eq!(applied.len(), migrate::MIGRATOR.iter().count());
    assert!(migrate::status(&pool).await.expect("status").is_current());
    let (state, version): (Value, i64) =
        sqlx::query_as("SELECT state, version FROM documents WHERE id = 'ts-doc'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(state, json!({"id": "ts-doc", "fields": {"a": 1}}));
    assert_eq!(version, 1, "adoption does not touch rows");
    // The additive column is backfilled for rows the TS server wrote.
    let max_clock: Option<i64> =
        sqlx::query_scalar("SELECT max_clock_value FROM deltas WHERE document_id = 'ts-doc'")
            .fetch_one(&pool)
            .await
            .expect("delta");
    assert_eq!(max_clock, Some(1));
    // And the canonical DDL still runs cleanly on our database (TS's ensureSchema).
    sqlx::raw_sql(CANONICAL)
        .execute(&pool)
        .await
        .expect("TS ensureSchema on a synckit database");
}

#[sqlx::test(migrations = false)]
async fn hosts_starting_together_migrate_once(pool: PgPool) {
    let (a, b) = tokio::join!(migrate::apply(&pool), migrate::apply(&pool));
    let (a, b) = (a.expect("host a"), b.expect("host b"));
    assert_eq!(a.len().max(b.len()), migrate::MIGRATOR.iter().count());
    assert!(migrate::status(&pool).await.expect("status").is_current());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("bookkeeping");
    assert_eq!(rows as usize, migrate::MIGRATOR.iter().count());
}

#[sqlx::test(migrations = false)]
async fn migrate_status_exit_codes_and_messages(pool: PgPool) {
    let url = common::database_url(&pool);
    let status = synckit(&["migrate", "--status"], &url);
    assert_eq!(status.status.code(), Some(4), "{}", text(&status.stdout));
    let out = text(&status.stdout);
    assert!(out.contains("pending"), "{out}");
    assert!(out.contains("missing: documents"), "{out}");
    assert!(out.contains("run `synckit migrate`"), "{out}");

    let run = synckit(&["migrate"], &url);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("applied 20240101000001"),
        "{}",
        text(&run.stdout)
    );

    let again = synckit(&["migrate"], &url);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("nothing to apply"));

    let status = synckit(&["migrate", "--status", "--json"], &url);
    assert_eq!(status.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(report["missing"], json!([]));
    assert!(report["migrations"]
        .as_array()
        .expect("list")
        .iter()
        .all(|m| m["applied"] == true));
}

#[sqlx::test(migrations = false)]
async fn serve_without_auto_migrate_refuses_an_incomplete_schema(pool: PgPool) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["serve", "--port", "0", "--admin-listen", "off"])
        .env("DATABASE_URL", common::database_url(&pool))
        .env("SYNCKIT_AUTO_MIGRATE", "false")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("missing: documents"), "{err}");
    assert!(err.contains("synckit migrate"), "{err}");
}

#[test]
fn maintenance_commands_explain_an_unreachable_database() {
    for args in [&["migrate", "--status"][..], &["cleanup", "--dry-run"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
            .args(args)
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
            .env("DB_ACQUIRE_TIMEOUT", "1s")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("could not connect to PostgreSQL at 127.0.0.1:1/nothing"),
            "{args:?}: {err}"
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .expect("run");
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("set DATABASE_URL"));
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn cleanup_command_counts_deletes_and_reports_json(pool: PgPool) {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, last_seen) \
         SELECT 's' || g, 'u', NOW() - INTERVAL '2 days' FROM generate_series(1, 25) g",
    )
    .execute(&pool)
    .await
    .expect("old sessions");
    sqlx::query("INSERT INTO sessions (id, user_id) VALUES ('fresh', 'u')")
        .execute(&pool)
        .await
        .expect("fresh session");
    let url = common::database_url(&pool);
    let dry = synckit(
        &["cleanup", "--dry-run", "--json", "--batch-size", "10"],
        &url,
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let report: Value = serde_json::from_slice(&dry.stdout).expect("json");
    assert_eq!(report["sessionsDeleted"], 25);
    assert_eq!(report["dryRun"], true);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 26, "a dry run deletes nothing");

    let real = synckit(
        &["cleanup", "--sessions-hours", "36h", "--batch-size", "10"],
        &url,
    );
    assert!(real.status.success());
    assert!(
        text(&real.stdout).starts_with("deleted 25 sessions, 0 deltas, 0 snapshots in "),
        "{}",
        text(&real.stdout)
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions")
        .fetch_all(&pool)
        .await
        .expect("ids");
    assert_eq!(left, vec!["fresh".to_string()]);
    // The real run is in the run history (the dry run is not).
    let runs: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT instance_id::text, outcome::text, counts FROM maintenance_runs WHERE job = 'cleanup'")
            .fetch_all(&pool)
            .await
            .expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].0.starts_with("cli:"), "{runs:?}");
    assert_eq!(runs[0].1, "ok");
    assert_eq!(runs[0].2["sessionsDeleted"], 25);

    let skipped = synckit(&["cleanup", "--sessions-hours", "0", "--json"], &url);
    let report: Value = serde_json::from_slice(&skipped.stdout).expect("json");
    assert_eq!(report["sessionsDeleted"], 0);
}
