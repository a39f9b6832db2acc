//! PostgreSQL storage on the shared SyncKit schema (docs/storage.md §1–§3): a `PgPool`
//! created lazily (so `serve` starts while the database is down), parameterised SQL
//! only, and the JSON shapes the TypeScript server reads.

mod sync_path;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres};

use super::shape::{clock_json, cutoff, from_db, snapshot_size, to_db};
use super::{
    migrate, CleanupCounts, CleanupOptions, DocumentRow, DocumentWrite, NewSnapshot, RunOutcome,
    RunRecord, SessionBatch, SnapshotRow, StorageError, StoredDocument,
};
use super::{AdminStore, MaintenanceStore, SyncStore};
#[cfg(any(test, feature = "test-util"))]
use super::{CompatStore, DeltaRow, NewDelta, SessionRecord, SessionRow};

/// Pool and schema settings (docs/operations.md §4.4).
#[derive(Clone)]
pub(crate) struct PostgresSettings {
    /// `postgres://…` URL or libpq key/value string (`host=… dbname=… sslmode=…`).
    pub(crate) url: String,
    pub(crate) pool_min: u32,
    pub(crate) pool_max: u32,
    /// How long a query waits for a pooled connection before failing.
    pub(crate) acquire_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Apply pending migrations on connect; otherwise only validate the schema.
    pub(crate) auto_migrate: bool,
}

impl std::fmt::Debug for PostgresSettings {
    /// The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"<redacted>")
            .field("pool_min", &self.pool_min)
            .field("pool_max", &self.pool_max)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("auto_migrate", &self.auto_migrate)
            .finish()
    }
}

impl PostgresSettings {
    /// Parse the connection string (URL or key/value); errors name the problem but
    /// never echo the string (it may hold a password).
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, StorageError> {
        self.url.parse::<PgConnectOptions>().map_err(|e| {
            StorageError::Query(format!(
                "DATABASE_URL is not a valid PostgreSQL URL or key/value string ({})",
                redact(&e.to_string(), &self.url)
            ))
        })
    }

    /// A pool that connects on first use: building it does no I/O.
    fn lazy_pool(&self) -> Result<PgPool, StorageError> {
        Ok(PgPoolOptions::new()
            .min_connections(self.pool_min)
            .max_connections(self.pool_max.max(1))
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(self.idle_timeout))
            .connect_lazy_with(self.connect_options()?))
    }
}

fn redact(message: &str, secret: &str) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret, "<DATABASE_URL>")
    }
}

/// Map a sqlx error to transient (connection-level: retry) or permanent.
pub(crate) fn classify(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StorageError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            // SQLSTATE classes 08 (connection), 53 (resources), 57 (operator
            // intervention: shutdown, restart) and 40 (serialization) are worth a retry.
            let transient = db
                .code()
                .is_some_and(|c| ["08", "53", "57", "40"].iter().any(|p| c.starts_with(p)));
            if transient {
                StorageError::Unavailable(e.to_string())
            } else {
                StorageError::Query(e.to_string())
            }
        }
        _ => StorageError::Query(e.to_string()),
    }
}

/// A statement with its arguments bound, ready to run on the pool.
type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;
/// [`Query`] whose rows decode as `T`.
type QueryAs<'q, T> = sqlx::query::QueryAs<'q, Postgres, T, PgArguments>;

/// The PostgreSQL adapter.
pub struct PostgresStorage {
    pool: PgPool,
    auto_migrate: bool,
    connected: AtomicBool,
}

impl PostgresStorage {
    /// Build the adapter without touching the network; call
    /// [`connect`](super::SyncStore::connect) to reach the database.
    pub(crate) fn new(settings: &PostgresSettings) -> Result<PostgresStorage, StorageError> {
        Ok(PostgresStorage::from_pool(
            settings.lazy_pool()?,
            settings.auto_migrate,
        ))
    }

    /// Wrap an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool, auto_migrate: bool) -> PostgresStorage {
        PostgresStorage {
            pool,
            auto_migrate,
            connected: AtomicBool::new(false),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Record the outcome of a round trip for `is_connected`.
    fn observe<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        match &result {
            Ok(_) => self.connected.store(true, Ordering::Relaxed),
            Err(e) if e.is_transient() => self.connected.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
        result
    }

    /// Every row `query` selects, observed like any statement.
    async fn fetch_all<'q, T>(&self, query: QueryAs<'q, T>) -> Result<Vec<T>, StorageError>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let result = query.fetch_all(&self.pool).await;
        self.observe_query(result)
    }

    /// A read's rows, converted: [`Self::fetch_all`], then each row's [`IntoRow`].
    async fn fetch_rows<'q, D>(&self, query: QueryAs<'q, D>) -> Result<Vec<D::Row>, StorageError>
    where
        D: IntoRow + Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        self.fetch_all(query)
            .await?
            .into_iter()
            .map(D::into_row)
            .collect()
    }

    /// [`Self::fetch_rows`] for a read of at most one row.
    async fn fetch_optional_row<'q, D>(
        &self,
        query: QueryAs<'q, D>,
    ) -> Result<Option<D::Row>, StorageError>
    where
        D: IntoRow + Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let result = query.fetch_optional(&self.pool).await;
        self.observe_query(result)?.map(D::into_row).transpose()
    }

    /// [`Self::fetch_rows`] for a write that returns exactly one row.
    async fn fetch_one_row<'q, D>(&self, query: QueryAs<'q, D>) -> Result<D::Row, StorageError>
    where
        D: IntoRow + Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let result = query.fetch_one(&self.pool).await;
        self.observe_query(result)?.into_row()
    }

    /// Run one statement outside a transaction; the rows it affected.
    async fn execute(&self, query: Query<'_>) -> Result<u64, StorageError> {
        let result = query.execute(&self.pool).await;
        self.observe_query(result).map(affected)
    }

    /// One page of a listing: `sql` takes the page's `LIMIT $1 OFFSET $2`.
    #[cfg(any(test, feature = "test-util"))]
    async fn page<D>(&self, sql: &str, limit: u32, offset: u32) -> Result<Vec<D::Row>, StorageError>
    where
        D: IntoRow + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let query = sqlx::query_as::<_, D>(sql)
            .bind(count(limit))
            .bind(count(offset));
        self.fetch_rows(query).await
    }

    /// At most `limit` rows of one document: `sql` takes the document as `$1` and
    /// the limit as `$2`.
    #[cfg(any(test, feature = "test-util"))]
    async fn document_rows<D>(
        &self,
        sql: &str,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<D::Row>, StorageError>
    where
        D: IntoRow + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let query = sqlx::query_as::<_, D>(sql)
            .bind(document_id)
            .bind(count(limit));
        self.fetch_rows(query).await
    }

    /// A clock write in one transaction: the document row first, as clock rows
    /// reference it, then `write`.
    #[cfg(any(test, feature = "test-util"))]
    async fn write_clock(&self, document_id: &str, write: Query<'_>) -> Result<(), StorageError> {
        let result = async {
            let mut tx = self.pool.begin().await.map_err(classify)?;
            sqlx::query(ENSURE_DOCUMENT)
                .bind(document_id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            write.execute(&mut *tx).await.map_err(classify)?;
            tx.commit().await.map_err(classify)
        }
        .await;
        self.observe(result)
    }

    /// `observe` for a single statement's result, its error classified first.
    fn observe_query<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, StorageError> {
        self.observe(result.map_err(classify))
    }

    /// Migrate (or validate) the schema: the first step of `connect`.
    async fn prepare_schema(&self) -> Result<(), StorageError> {
        if self.auto_migrate {
            let applied = migrate::apply(&self.pool).await?;
            for m in &applied {
                tracing::info!(version = m.version, description = %m.description, "applied migration");
            }
            migrate::validate(&self.pool).await
        } else {
            migrate::validate(&self.pool).await
        }
    }
}

// ---------------------------------------------------------------------------
// The adapter (docs/storage.md §3): one parameterised statement per operation, rows
// decoded through the private `*Db` structs below. UUIDs travel as text because
// sqlx's `uuid` feature is not enabled (and need not be for this).
// ---------------------------------------------------------------------------

const DOCUMENT_COLUMNS: &str = "id, state, version, created_at, updated_at";
#[cfg(any(test, feature = "test-util"))]
const DELTA_COLUMNS: &str = "id::text AS id, document_id, client_id, operation_type, field_path, \
     value, clock_value, max_clock_value, timestamp";
#[cfg(any(test, feature = "test-util"))]
const SESSION_COLUMNS: &str = "id, user_id, client_id, connected_at, last_seen, metadata";
const SNAPSHOT_COLUMNS: &str =
    "id::text AS id, document_id, state, version, size_bytes, compressed, created_at";

#[derive(sqlx::FromRow)]
struct DocumentDb {
    id: String,
    state: Value,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<DocumentDb> for DocumentRow {
    fn from(r: DocumentDb) -> DocumentRow {
        DocumentRow {
            id: r.id,
            state: r.state,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
#[derive(sqlx::FromRow)]
struct DeltaDb {
    id: String,
    document_id: String,
    client_id: String,
    operation_type: String,
    field_path: String,
    value: Option<Value>,
    clock_value: i64,
    max_clock_value: Option<i64>,
    timestamp: DateTime<Utc>,
}

/// A `*Db` struct and the row it becomes: one conversion per table, used by the
/// read helpers ([`PostgresStorage::rows`]).
trait IntoRow {
    type Row;
    /// A stored row that no longer reads back (a malformed id) fails the read.
    fn into_row(self) -> Result<Self::Row, StorageError>;
}

impl IntoRow for DocumentDb {
    type Row = DocumentRow;
    fn into_row(self) -> Result<DocumentRow, StorageError> {
        Ok(self.into())
    }
}

#[cfg(any(test, feature = "test-util"))]
impl IntoRow for SessionDb {
    type Row = SessionRow;
    fn into_row(self) -> Result<SessionRow, StorageError> {
        Ok(self.into())
    }
}

#[cfg(any(test, feature = "test-util"))]
impl IntoRow for DeltaDb {
    type Row = DeltaRow;
    fn into_row(self) -> Result<DeltaRow, StorageError> {
        Ok(DeltaRow {
            id: parse_uuid(&self.id)?,
            document_id: self.document_id,
            client_id: self.client_id,
            operation_type: self.operation_type,
            field_path: self.field_path,
            value: self.value,
            clock_value: from_db(self.clock_value),
            max_clock_value: self.max_clock_value.map(from_db),
            timestamp: self.timestamp,
        })
    }
}

#[cfg(any(test, feature = "test-util"))]
#[derive(sqlx::FromRow)]
struct SessionDb {
    id: String,
    user_id: String,
    client_id: Option<String>,
    connected_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    metadata: Option<Value>,
}

#[cfg(any(test, feature = "test-util"))]
impl From<SessionDb> for SessionRow {
    fn from(r: SessionDb) -> SessionRow {
        SessionRow {
            id: r.id,
            user_id: r.user_id,
            client_id: r.client_id,
            connected_at: r.connected_at,
            last_seen: r.last_seen,
            metadata: r.metadata,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SnapshotDb {
    id: String,
    document_id: String,
    state: Value,
    version: Value,
    size_bytes: i32,
    compressed: Option<bool>,
    created_at: DateTime<Utc>,
}

impl IntoRow for SnapshotDb {
    type Row = SnapshotRow;
    fn into_row(self) -> Result<SnapshotRow, StorageError> {
        Ok(SnapshotRow {
            id: parse_uuid(&self.id)?,
            document_id: self.document_id,
            state: self.state,
            version: self.version,
            size_bytes: self.size_bytes,
            // The column is nullable in the canonical schema; NULL means what the
            // default means.
            compressed: self.compressed.unwrap_or(false),
            created_at: self.created_at,
        })
    }
}

/// A `maintenance_runs` row.
#[derive(sqlx::FromRow)]
struct RunDb {
    id: i64,
    job: String,
    scheduled_for: DateTime<Utc>,
    instance_id: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: String,
    counts: Value,
    error: Option<String>,
}

impl IntoRow for RunDb {
    type Row = RunRecord;
    fn into_row(self) -> Result<RunRecord, StorageError> {
        Ok(RunRecord {
            id: self.id,
            job: self.job,
            scheduled_for: self.scheduled_for,
            instance_id: self.instance_id,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome: self.outcome,
            counts: self.counts,
            error: self.error,
        })
    }
}

fn parse_uuid(text: &str) -> Result<uuid::Uuid, StorageError> {
    uuid::Uuid::parse_str(text).map_err(|e| {
        StorageError::Query(format!("unexpected uuid {text:?} from the database: {e}"))
    })
}

/// `LIMIT`/`OFFSET` are BIGINT.
fn count(n: u32) -> i64 {
    i64::from(n)
}

/// Rows affected, as the counters report them.
fn affected(result: sqlx::postgres::PgQueryResult) -> u64 {
    result.rows_affected()
}

/// Create a document row holding an empty field map unless it exists: clock rows
/// reference `documents(id)`. `DO NOTHING` leaves an existing row (and its version)
/// untouched.
#[cfg(any(test, feature = "test-util"))]
const ENSURE_DOCUMENT: &str = "INSERT INTO documents (id, state) \
     VALUES ($1, jsonb_build_object('id', $1::text, 'fields', '{}'::jsonb)) \
     ON CONFLICT (id) DO NOTHING";

/// One cleanup batch: pick at most `$2` rows by the age predicate, delete exactly
/// those by `ctid` (a TID scan: no second index lookup per row), and report how
/// many were picked, so the loop can stop once a batch comes back short. The age
/// predicate is checked again on delete: a session touched since the pick has a
/// new row version and is no longer expired, so it is skipped, not deleted.
fn batch_delete_sql(table: &str, column: &str) -> String {
    format!(
        "WITH picked AS MATERIALIZED ( \
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2 \
         ), removed AS ( \
             DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM picked)) \
             AND {column} < $1 RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM removed)"
    )
}

/// Snapshots past the per-document rank (`$2`, NULL disables) or older than the
/// cutoff (`$1`, NULL disables); the rank order matches `list_snapshots`.
const SNAPSHOT_VICTIMS: &str = "SELECT ctid FROM ( \
         SELECT ctid, created_at, row_number() OVER ( \
             PARTITION BY document_id ORDER BY created_at DESC, id DESC) AS rank \
         FROM snapshots \
     ) ranked \
     WHERE ($2::bigint IS NOT NULL AND rank > $2) \
        OR ($1::timestamptz IS NOT NULL AND created_at < $1)";

impl PostgresStorage {
    /// Delete rows of `table` whose `column` is before `before`, `batch` rows per
    /// statement (each its own transaction), until a batch comes back short.
    async fn delete_older(
        &self,
        table: &str,
        column: &str,
        before: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StorageError> {
        let sql = batch_delete_sql(table, column);
        let mut total = 0u64;
        loop {
            let (picked, removed): (i64, i64) = sqlx::query_as(&sql)
                .bind(before)
                .bind(count(batch))
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
            total += u64::try_from(removed).unwrap_or(0);
            if picked < count(batch) {
                return Ok(total);
            }
        }
    }

    async fn count_older(
        &self,
        table: &str,
        column: &str,
        before: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} < $1"))
                .bind(before)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn cleanup_snapshots(
        &self,
        before: Option<DateTime<Utc>>,
        keep: Option<u32>,
        options: &CleanupOptions,
    ) -> Result<u64, StorageError> {
        let keep = keep.map(i64::from);
        if options.dry_run {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM ({SNAPSHOT_VICTIMS}) victims"
            ))
            .bind(before)
            .bind(keep)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
            return Ok(u64::try_from(n).unwrap_or(0));
        }
        // Deleting the lowest-ranked or oldest snapshots never changes which of the
        // remaining ones qualify, so re-ranking per batch converges.
        let sql = format!(
            "WITH picked AS MATERIALIZED ({SNAPSHOT_VICTIMS} LIMIT $3), removed AS ( \
                 DELETE FROM snapshots WHERE ctid = ANY(ARRAY(SELECT ctid FROM picked)) \
                 RETURNING 1) \
             SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM removed)"
        );
        let mut total = 0u64;
        loop {
            let (picked, removed): (i64, i64) = sqlx::query_as(&sql)
                .bind(before)
                .bind(keep)
                .bind(count(options.batch_size))
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
            total += u64::try_from(removed).unwrap_or(0);
            if picked < count(options.batch_size) {
                return Ok(total);
            }
        }
    }

    async fn cleanup_inner(&self, options: &CleanupOptions) -> Result<CleanupCounts, StorageError> {
        // One clock for every step (the database's, so hosts with skewed clocks
        // agree), so dry-run and real runs apply the same cutoffs.
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT NOW()")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        // A batch of zero would never make progress.
        let batch = options.batch_size.max(1);
        let options = CleanupOptions {
            batch_size: batch,
            ..*options
        };
        let mut counts = CleanupCounts::default();
        for (table, column, age, slot) in [
            (
                "sessions",
                "last_seen",
                options.sessions_older_than,
                &mut counts.sessions_deleted,
            ),
            (
                "deltas",
                "timestamp",
                options.deltas_older_than,
                &mut counts.deltas_deleted,
            ),
        ] {
            if let Some(before) = cutoff(now, age) {
                *slot = if options.dry_run {
                    self.count_older(table, column, before).await?
                } else {
                    self.delete_older(table, column, before, batch).await?
                };
            }
        }
        let snapshots_before = cutoff(now, options.snapshots_older_than);
        if snapshots_before.is_some() || options.max_snapshots_per_document.is_some() {
            counts.snapshots_deleted = self
                .cleanup_snapshots(
                    snapshots_before,
                    options.max_snapshots_per_document,
                    &options,
                )
                .await?;
        }
        Ok(counts)
    }
}

/// Insert a session row, or refresh `last_seen` and `metadata` of an existing one.
fn upsert_session(session: &super::SessionRecord) -> Query<'_> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, client_id, connected_at, last_seen, metadata) \
         VALUES ($1, $2, $3, NOW(), NOW(), $4::jsonb) \
         ON CONFLICT (id) DO UPDATE SET last_seen = NOW(), metadata = EXCLUDED.metadata",
    )
    .bind(&session.id)
    .bind(&session.user_id)
    .bind(&session.client_id)
    .bind(session.metadata.as_json())
}

#[async_trait]
impl SyncStore for PostgresStorage {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_durable(&self) -> bool {
        true
    }

    async fn connect(&self) -> Result<(), StorageError> {
        let result = async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(classify)?;
            self.prepare_schema().await
        }
        .await;
        self.observe(result)
    }

    async fn disconnect(&self) {
        self.pool.close().await;
        self.connected.store(false, Ordering::Relaxed);
    }

    async fn health_check(&self) -> Result<(), StorageError> {
        self.execute(sqlx::query("SELECT 1")).await.map(drop)
    }

    async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError> {
        let started = std::time::Instant::now();
        let result = sync_path::load_document(&self.pool, id).await;
        crate::metrics::PROCESS.postgres_load.observe_since(started);
        self.observe(result)
    }

    async fn write_batch(&self, writes: &[DocumentWrite]) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let result = sync_path::write_batch(&self.pool, writes).await;
        crate::metrics::PROCESS
            .postgres_write
            .observe_since(started);
        self.observe(result)
    }

    async fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = async {
            let mut tx = self.pool.begin().await.map_err(classify)?;
            for session in &batch.upserts {
                upsert_session(session)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            if !batch.deletes.is_empty() {
                sqlx::query("DELETE FROM sessions WHERE id = ANY($1)")
                    .bind(&batch.deletes)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            if let Some(prefix) = &batch.retain_prefix {
                let keep: Vec<&str> = batch.upserts.iter().map(|s| s.id.as_str()).collect();
                sqlx::query(
                    "DELETE FROM sessions WHERE left(id, length($1)) = $1 AND NOT (id = ANY($2))",
                )
                .bind(prefix)
                .bind(&keep)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            tx.commit().await.map_err(classify)
        }
        .await;
        self.observe(result)
    }

    async fn touch_sessions(&self, ids: &[String]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let query =
            sqlx::query("UPDATE sessions SET last_seen = NOW() WHERE id = ANY($1)").bind(ids);
        self.execute(query).await.map(drop)
    }
}

#[async_trait]
impl MaintenanceStore for PostgresStorage {
    async fn documents_over_delta_threshold(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let query = sqlx::query_as(
            "SELECT document_id::text, count(*) FROM deltas GROUP BY document_id \
             HAVING count(*) > $1 ORDER BY count(*) DESC, document_id LIMIT $2",
        )
        .bind(to_db(threshold))
        .bind(count(limit));
        let rows: Vec<(String, i64)> = self.fetch_all(query).await?;
        Ok(rows.into_iter().map(|(doc, n)| (doc, from_db(n))).collect())
    }

    async fn save_snapshot(&self, snapshot: &NewSnapshot) -> Result<SnapshotRow, StorageError> {
        let sql = format!(
            "INSERT INTO snapshots (document_id, state, version, size_bytes, compressed) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {SNAPSHOT_COLUMNS}"
        );
        let query = sqlx::query_as::<_, SnapshotDb>(&sql)
            .bind(&snapshot.document_id)
            .bind(&snapshot.state)
            .bind(clock_json(&snapshot.version))
            .bind(snapshot_size(&snapshot.state))
            .bind(snapshot.compressed);
        self.fetch_one_row(query).await
    }

    async fn compact(&self, document_id: &str) -> Result<u64, StorageError> {
        // No snapshot: the subquery is NULL and nothing compares <= NULL.
        let query = sqlx::query(
            "DELETE FROM deltas WHERE document_id = $1 AND timestamp <= \
             (SELECT max(created_at) FROM snapshots WHERE document_id = $1)",
        )
        .bind(document_id);
        self.execute(query).await
    }

    async fn cleanup(&self, options: &CleanupOptions) -> Result<CleanupCounts, StorageError> {
        let result = self.cleanup_inner(options).await;
        self.observe(result)
    }

    async fn claim_run(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        instance_id: &str,
    ) -> Result<Option<i64>, StorageError> {
        // The unique (job, scheduled_for) pair makes the insert the claim.
        let result = sqlx::query_scalar(
            "INSERT INTO maintenance_runs (job, scheduled_for, instance_id) VALUES ($1, $2, $3) \
             ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(instance_id)
        .fetch_optional(&self.pool)
        .await;
        self.observe_query(result)
    }

    async fn finish_run(&self, id: i64, outcome: &RunOutcome) -> Result<(), StorageError> {
        let query = sqlx::query(
            "UPDATE maintenance_runs SET finished_at = NOW(), outcome = $2, counts = $3, \
             error = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(outcome.status.label())
        .bind(&outcome.counts)
        .bind(outcome.error.as_deref());
        self.execute(query).await.map(drop)
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let query = sqlx::query_as::<_, RunDb>(
            "SELECT id, job::text AS job, scheduled_for, instance_id::text AS instance_id, \
             started_at, finished_at, outcome::text AS outcome, counts, error \
             FROM maintenance_runs ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(count(limit));
        self.fetch_rows(query).await
    }
}

#[async_trait]
impl AdminStore for PostgresStorage {
    async fn get_document(&self, id: &str) -> Result<Option<DocumentRow>, StorageError> {
        let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = $1");
        let query = sqlx::query_as::<_, DocumentDb>(&sql).bind(id);
        self.fetch_optional_row(query).await
    }

    async fn get_vector_clock(
        &self,
        document_id: &str,
    ) -> Result<BTreeMap<String, u64>, StorageError> {
        let query = sqlx::query_as(
            "SELECT client_id, clock_value FROM vector_clocks WHERE document_id = $1",
        )
        .bind(document_id);
        let rows: Vec<(String, i64)> = self.fetch_all(query).await?;
        Ok(rows.into_iter().map(|(c, v)| (c, from_db(v))).collect())
    }

    async fn delete_document(&self, id: &str) -> Result<bool, StorageError> {
        // Clocks, deltas and snapshots go with it (ON DELETE CASCADE).
        self.execute(sqlx::query("DELETE FROM documents WHERE id = $1").bind(id))
            .await
            .map(|n| n > 0)
    }

    async fn clear_all(&self) -> Result<u64, StorageError> {
        // DELETE rather than TRUNCATE: it takes row locks only, so a writer
        // committing meanwhile waits for this transaction instead of failing.
        // Clocks, deltas and snapshots go with their documents (ON DELETE CASCADE).
        let result = async {
            let mut tx = self.pool.begin().await?;
            let documents = sqlx::query("DELETE FROM documents")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(affected(documents))
        }
        .await;
        self.observe_query(result)
    }
}

// Only the tests call these (the server never does); they keep the TS adapter's
// row-level operations, held to the same conformance suite.
#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl CompatStore for PostgresStorage {
    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn save_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError> {
        // The update branch fires the triggers: `updated_at = NOW()`, `version + 1`.
        let sql = format!(
            "INSERT INTO documents (id, state, version) VALUES ($1, $2, 1) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated_at = NOW() \
             RETURNING {DOCUMENT_COLUMNS}"
        );
        let query = sqlx::query_as::<_, DocumentDb>(&sql).bind(id).bind(state);
        self.fetch_one_row(query).await
    }

    async fn update_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError> {
        let sql = format!(
            "UPDATE documents SET state = $2, updated_at = NOW() WHERE id = $1 \
             RETURNING {DOCUMENT_COLUMNS}"
        );
        let query = sqlx::query_as::<_, DocumentDb>(&sql).bind(id).bind(state);
        match self.fetch_optional_row(query).await? {
            Some(row) => Ok(row),
            None => Err(StorageError::NotFound {
                kind: "Document",
                id: id.to_owned(),
            }),
        }
    }

    async fn list_documents(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<DocumentRow>, StorageError> {
        // `id` breaks ties so pages never overlap.
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents ORDER BY updated_at DESC, id ASC \
             LIMIT $1 OFFSET $2"
        );
        self.page::<DocumentDb>(&sql, limit, offset).await
    }

    async fn update_vector_clock(
        &self,
        document_id: &str,
        client_id: &str,
        value: u64,
    ) -> Result<(), StorageError> {
        let write = sqlx::query(
            "INSERT INTO vector_clocks (document_id, client_id, clock_value) \
             VALUES ($1, $2, $3) ON CONFLICT (document_id, client_id) \
             DO UPDATE SET clock_value = EXCLUDED.clock_value, updated_at = NOW()",
        )
        .bind(document_id)
        .bind(client_id)
        .bind(to_db(value));
        self.write_clock(document_id, write).await
    }

    async fn merge_vector_clock(
        &self,
        document_id: &str,
        clock: &BTreeMap<String, u64>,
    ) -> Result<(), StorageError> {
        if clock.is_empty() {
            return Ok(());
        }
        let clients: Vec<&str> = clock.keys().map(String::as_str).collect();
        let values: Vec<i64> = clock.values().map(|v| to_db(*v)).collect();
        let write = sqlx::query(
            "INSERT INTO vector_clocks (document_id, client_id, clock_value) \
             SELECT $1, u.c, u.v FROM UNNEST($2::text[], $3::int8[]) AS u(c, v) \
             ON CONFLICT (document_id, client_id) DO UPDATE SET \
             clock_value = GREATEST(vector_clocks.clock_value, EXCLUDED.clock_value), \
             updated_at = NOW()",
        )
        .bind(document_id)
        .bind(&clients)
        .bind(&values);
        self.write_clock(document_id, write).await
    }

    async fn save_delta(&self, delta: &NewDelta) -> Result<DeltaRow, StorageError> {
        let sql = format!(
            "INSERT INTO deltas (document_id, client_id, operation_type, field_path, value, \
             clock_value, max_clock_value) VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, $6)) \
             RETURNING {DELTA_COLUMNS}"
        );
        let query = sqlx::query_as::<_, DeltaDb>(&sql)
            .bind(&delta.document_id)
            .bind(&delta.client_id)
            .bind(delta.operation.as_str())
            .bind(&delta.field_path)
            // `None` binds SQL NULL; `Some(Value::Null)` binds JSON `null`.
            .bind(&delta.value)
            .bind(to_db(delta.clock_value))
            .bind(delta.max_clock_value.map(to_db));
        self.fetch_one_row(query).await
    }

    async fn get_deltas(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError> {
        // The reverse of the order fields are rebuilt in (`timestamp, id`).
        let sql = format!(
            "SELECT {DELTA_COLUMNS} FROM deltas WHERE document_id = $1 \
             ORDER BY timestamp DESC, id DESC LIMIT $2"
        );
        self.document_rows::<DeltaDb>(&sql, document_id, limit)
            .await
    }

    async fn get_deltas_since(
        &self,
        document_id: &str,
        since: u64,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError> {
        // Served by idx_deltas_document_max_clock; rows without the column (written
        // by another server after migration 2) are not "since" anything.
        let sql = format!(
            "SELECT {DELTA_COLUMNS} FROM deltas WHERE document_id = $1 AND max_clock_value > $2 \
             ORDER BY timestamp ASC, id ASC LIMIT $3"
        );
        let query = sqlx::query_as::<_, DeltaDb>(&sql)
            .bind(document_id)
            .bind(to_db(since))
            .bind(count(limit));
        self.fetch_rows(query).await
    }

    async fn save_session(&self, session: &SessionRecord) -> Result<(), StorageError> {
        self.execute(upsert_session(session)).await.map(drop)
    }

    async fn update_session(
        &self,
        id: &str,
        last_seen: DateTime<Utc>,
        metadata: Option<&Value>,
    ) -> Result<bool, StorageError> {
        let query = sqlx::query(
            "UPDATE sessions SET last_seen = $2, metadata = COALESCE($3, metadata) WHERE id = $1",
        )
        .bind(id)
        .bind(last_seen)
        .bind(metadata);
        self.execute(query).await.map(|n| n > 0)
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StorageError> {
        self.execute(sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id))
            .await
            .map(|n| n > 0)
    }

    async fn get_sessions(&self, user_id: &str) -> Result<Vec<SessionRow>, StorageError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
             ORDER BY last_seen DESC, id ASC"
        );
        let query = sqlx::query_as::<_, SessionDb>(&sql).bind(user_id);
        self.fetch_rows(query).await
    }

    async fn list_sessions(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<SessionRow>, StorageError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY last_seen DESC, id ASC \
             LIMIT $1 OFFSET $2"
        );
        self.page::<SessionDb>(&sql, limit, offset).await
    }

    async fn get_snapshot(&self, id: uuid::Uuid) -> Result<Option<SnapshotRow>, StorageError> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1::uuid");
        let query = sqlx::query_as::<_, SnapshotDb>(&sql).bind(id.to_string());
        self.fetch_optional_row(query).await
    }

    async fn latest_snapshot(
        &self,
        document_id: &str,
    ) -> Result<Option<SnapshotRow>, StorageError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE document_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let query = sqlx::query_as::<_, SnapshotDb>(&sql).bind(document_id);
        self.fetch_optional_row(query).await
    }

    async fn list_snapshots(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<SnapshotRow>, StorageError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE document_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        self.document_rows::<SnapshotDb>(&sql, document_id, limit)
            .await
    }

    async fn delete_snapshot(&self, id: uuid::Uuid) -> Result<bool, StorageError> {
        self.execute(sqlx::query("DELETE FROM snapshots WHERE id = $1::uuid").bind(id.to_string()))
            .await
            .map(|n| n > 0)
    }
}
