//! The embedded migrations (`migrations/`, append-only) and the schema check that
//! `serve` (with `SYNCKIT_AUTO_MIGRATE=false`) and `synckit migrate --status` share.
//!
//! Migration 1 is the canonical SyncKit schema, idempotent, so adopting a database
//! the TypeScript server created is a no-op apart from sqlx's bookkeeping table
//! (`_sqlx_migrations`, not one of the five SyncKit names). sqlx takes a PostgreSQL
//! advisory lock while it migrates, so hosts starting together apply each migration
//! once.

use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

use super::StorageError;

/// Every migration, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Tables, columns and functions the server needs, checked before it serves.
const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    (
        "documents",
        &["id", "state", "created_at", "updated_at", "version"],
    ),
    (
        "vector_clocks",
        &["document_id", "client_id", "clock_value", "updated_at"],
    ),
    (
        "deltas",
        &[
            "id",
            "document_id",
            "client_id",
            "operation_type",
            "field_path",
            "value",
            "clock_value",
            "timestamp",
            "max_clock_value",
        ],
    ),
    (
        "sessions",
        &[
            "id",
            "user_id",
            "client_id",
            "connected_at",
            "last_seen",
            "metadata",
        ],
    ),
    (
        "snapshots",
        &[
            "id",
            "document_id",
            "state",
            "version",
            "size_bytes",
            "compressed",
            "created_at",
        ],
    ),
    (
        "awareness_states",
        &[
            "document_id",
            "client_id",
            "connection_id",
            "user_id",
            "state",
            "clock_value",
            "last_seen",
        ],
    ),
    (
        "maintenance_runs",
        &[
            "id",
            "job",
            "scheduled_for",
            "instance_id",
            "started_at",
            "finished_at",
            "outcome",
            "counts",
            "error",
        ],
    ),
];

const REQUIRED_FUNCTIONS: &[&str] = &[
    "update_updated_at_column",
    "increment_document_version",
    "cleanup_old_sessions",
    "cleanup_old_deltas",
];

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationState {
    pub(crate) version: i64,
    pub(crate) description: String,
    pub(crate) applied: bool,
}

/// What `synckit migrate --status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaStatus {
    pub(crate) migrations: Vec<MigrationState>,
    /// Required objects that do not exist, as `table`, `table.column` or `function()`.
    pub missing: Vec<String>,
}

impl SchemaStatus {
    /// Every migration applied and every required object present.
    pub fn is_current(&self) -> bool {
        self.missing.is_empty() && self.migrations.iter().all(|m| m.applied)
    }

    pub(crate) fn pending(&self) -> impl Iterator<Item = &MigrationState> {
        self.migrations.iter().filter(|m| !m.applied)
    }
}

fn migrate_error(e: MigrateError) -> StorageError {
    match e {
        MigrateError::Execute(e) => super::postgres::classify(e),
        other => StorageError::Query(other.to_string()),
    }
}

/// Apply pending migrations; returns the ones applied now (empty when current).
pub async fn apply(pool: &PgPool) -> Result<Vec<MigrationState>, StorageError> {
    let before = status(pool).await?;
    MIGRATOR.run(pool).await.map_err(migrate_error)?;
    Ok(before
        .pending()
        .map(|m| MigrationState {
            applied: true,
            ..m.clone()
        })
        .collect())
}

/// Which migrations are applied and which required objects are missing.
pub async fn status(pool: &PgPool) -> Result<SchemaStatus, StorageError> {
    let bookkeeping: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text")
            .fetch_one(pool)
            .await
            .map_err(super::postgres::classify)?;
    let applied: Vec<i64> = if bookkeeping.is_some() {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(super::postgres::classify)?
    } else {
        Vec::new()
    };
    let migrations = MIGRATOR
        .iter()
        .map(|m| MigrationState {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect();
    Ok(SchemaStatus {
        migrations,
        missing: missing_objects(pool).await?,
    })
}

/// Required tables, columns and functions that do not exist.
async fn missing_objects(pool: &PgPool) -> Result<Vec<String>, StorageError> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .map_err(super::postgres::classify)?;
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public'",
    )
    .fetch_all(pool)
    .await
    .map_err(super::postgres::classify)?;
    let mut missing = Vec::new();
    for (table, wanted) in REQUIRED_COLUMNS {
        if !columns.iter().any(|(t, _)| t == table) {
            missing.push((*table).to_owned());
            continue;
        }
        for column in *wanted {
            if !columns.iter().any(|(t, c)| t == table && c == column) {
                missing.push(format!("{table}.{column}"));
            }
        }
    }
    for function in REQUIRED_FUNCTIONS {
        if !functions.iter().any(|f| f == function) {
            missing.push(format!("{function}()"));
        }
    }
    Ok(missing)
}

/// Fail with a message naming what is missing and the command that fixes it.
pub(crate) async fn validate(pool: &PgPool) -> Result<(), StorageError> {
    let missing = missing_objects(pool).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(StorageError::Query(format!(
        "the database schema is not current (missing: {}); run `synckit migrate` \
         or start with SYNCKIT_AUTO_MIGRATE=true",
        missing.join(", ")
    )))
}
