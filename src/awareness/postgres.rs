//! PostgreSQL awareness store (`--awareness-store postgres`): the `awareness_states` table.
//!
//! Behaves exactly like [`MemoryAwarenessStore`](super::MemoryAwarenessStore) — the
//! conformance suite in `tests/awareness_conformance.rs` runs against both:
//!
//! - **Clock ordering** is decided by one `INSERT … ON CONFLICT DO UPDATE … WHERE stored
//!   < new` statement. PostgreSQL takes the row lock and re-checks the `WHERE` against
//!   the newest committed row, so concurrent writers (other connections, other
//!   instances) can never let an older clock overwrite a newer one, and two inserts of
//!   the same new key cannot both win. No explicit transaction is needed.
//! - **An expired entry's clock stays binding until it is pruned**, as in the memory
//!   store: expiry only hides an entry from `get_all` and marks it for the sweep, which
//!   sends its leave. A leave (or the prune) removes the row, after which any clock is
//!   accepted again.
//! - **Time is the caller's**: `last_seen` is written from `now_ms` and every expiry test
//!   compares against `now_ms - timeout` in SQL, never `NOW()`, so tests with a
//!   controlled clock see the same results from both stores (and instances compare
//!   their own wall clocks, as the memory store does).
//! - **Ordering**: `get_all` sorts by client id in byte order (`COLLATE "C"`), which is
//!   Rust's `str` order used by the memory store, whatever the database's collation.
//!   The other listings sort by (document, client) so results are deterministic.
//!
//! Known, deliberate limits of the `BIGINT`/`timestamptz` columns: a clock above
//! `i64::MAX` is stored as `i64::MAX` (SDK clocks are JavaScript safe integers, < 2^53),
//! and times are clamped into PostgreSQL's timestamp range so an absurd timeout (e.g.
//! "never") cannot make a query fail.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::{Postgres, Row};

use super::{AwarenessEntry, AwarenessError, AwarenessStore, AwarenessUpdate, SetOutcome};

/// Columns every listing returns, with `last_seen` converted back to epoch milliseconds.
/// PostgreSQL ≥ 14 returns `EXTRACT` as an exact numeric; the cast rounds, which keeps
/// the whole milliseconds we wrote even on older servers that return a double.
const COLUMNS: &str = "document_id, client_id, connection_id, user_id, state, clock_value, \
     (EXTRACT(EPOCH FROM last_seen) * 1000)::BIGINT AS last_seen_ms";

/// The ownership rule in SQL (see the `awareness` module): the stored row may be
/// replaced or removed by its own connection ($3), its user ($4), or once expired
/// (last seen at or before the cutoff, $5 ms).
const MAY_REPLACE: &str = "(awareness_states.connection_id = $3 \
     OR awareness_states.user_id = $4 \
     OR awareness_states.last_seen <= to_timestamp($5::BIGINT / 1000.0))";

/// Deterministic order for listings that span documents.
const ORDER: &str = r#"ORDER BY document_id COLLATE "C", client_id COLLATE "C""#;

/// Bounds (epoch ms) kept well inside PostgreSQL's timestamptz range (4713 BC to
/// 294276 AD) so `to_timestamp` never fails with "timestamp out of range".
const MIN_SQL_MS: i64 = -200_000_000_000_000;
const MAX_SQL_MS: i64 = 9_000_000_000_000_000;

pub struct PostgresAwarenessStore {
    pool: PgPool,
    timeout_ms: i64,
}

impl PostgresAwarenessStore {
    /// The pool must reach a database migrated with [`crate::storage::migrate::MIGRATOR`]
    /// (the `awareness_states` table). Nothing is checked here; the first query reports a
    /// missing table or an unreachable server as [`AwarenessError::Unavailable`].
    pub fn new(pool: PgPool, timeout: Duration) -> PostgresAwarenessStore {
        PostgresAwarenessStore {
            pool,
            // Same conversion as the memory store, so both expire at the same instant.
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Last-seen times at or before this cutoff are expired: `now - last_seen >= timeout`.
    fn cutoff_ms(&self, now_ms: i64) -> i64 {
        sql_ms(now_ms.saturating_sub(self.timeout_ms))
    }
}

impl PostgresAwarenessStore {
    /// Whether the entry exists and this update may not replace it.
    async fn exists(&self, update: &AwarenessUpdate) -> Result<bool, AwarenessError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM awareness_states \
             WHERE document_id = $1 AND client_id = $2 AND NOT {MAY_REPLACE})"
        );
        let row = owned(&sql, update, self.cutoff_ms(update.now_ms))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("ownership check"))?;
        row.try_get(0).map_err(unavailable("ownership check"))
    }
}

/// `sql` with the parameters every owner-checked statement takes: the entry
/// (`$1` document, `$2` client) and who may replace it (`$3`–`$5`, see
/// [`MAY_REPLACE`]).
fn owned<'q>(
    sql: &'q str,
    update: &'q AwarenessUpdate,
    cutoff: i64,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(&update.document_id)
        .bind(&update.client_id)
        .bind(&update.connection_id)
        .bind(&update.user_id)
        .bind(cutoff)
}

/// Clamp epoch milliseconds into the range `to_timestamp` accepts.
fn sql_ms(ms: i64) -> i64 {
    ms.clamp(MIN_SQL_MS, MAX_SQL_MS)
}

/// Every failure is reported as unavailable: the callers (sync path, sweeper) can only
/// log it and carry on, and the message names the operation and the cause.
fn unavailable(op: &'static str) -> impl FnOnce(sqlx::Error) -> AwarenessError {
    move |e| AwarenessError::Unavailable(format!("PostgreSQL awareness {op} failed: {e}"))
}

fn entry(row: &PgRow) -> Result<AwarenessEntry, sqlx::Error> {
    let clock: i64 = row.try_get("clock_value")?;
    Ok(AwarenessEntry {
        document_id: row.try_get("document_id")?,
        client_id: row.try_get("client_id")?,
        connection_id: row.try_get("connection_id")?,
        user_id: row.try_get("user_id")?,
        state: row.try_get("state")?,
        // We never write a negative clock; a row written by hand with one reads as 0.
        clock: u64::try_from(clock).unwrap_or(0),
        last_seen_ms: row.try_get("last_seen_ms")?,
    })
}

/// The entries a query returns, for every read of this store: a failed query or
/// an unreadable row is the store unavailable for `op`.
async fn fetch_entries(
    pool: &PgPool,
    query: sqlx::query::Query<'_, Postgres, PgArguments>,
    op: &'static str,
) -> Result<Vec<AwarenessEntry>, AwarenessError> {
    let rows = query.fetch_all(pool).await.map_err(unavailable(op))?;
    rows.iter()
        .map(entry)
        .collect::<Result<_, _>>()
        .map_err(unavailable(op))
}

#[async_trait]
impl AwarenessStore for PostgresAwarenessStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn set(&self, update: AwarenessUpdate) -> Result<SetOutcome, AwarenessError> {
        let cutoff = self.cutoff_ms(update.now_ms);
        let Some(state) = update.state.clone() else {
            // A leave wins whatever its clock and whether or not an entry exists, but
            // only over an entry this connection or user may replace.
            let sql = format!(
                "DELETE FROM awareness_states WHERE document_id = $1 AND client_id = $2 AND {MAY_REPLACE}"
            );
            let done = owned(&sql, &update, cutoff)
                .execute(&self.pool)
                .await
                .map_err(unavailable("leave"))?;
            if done.rows_affected() == 0 && self.exists(&update).await? {
                return Ok(SetOutcome::NotOwner);
            }
            return Ok(SetOutcome::Left);
        };
        // The conflict branch updates only when the stored clock is older and the row
        // may be replaced; otherwise no row is affected (stale, or not the owner).
        let sql = format!(
            "INSERT INTO awareness_states \
                 (document_id, client_id, connection_id, user_id, state, clock_value, last_seen) \
             VALUES ($1, $2, $3, $4, $6, $7, to_timestamp($8::BIGINT / 1000.0)) \
             ON CONFLICT (document_id, client_id) DO UPDATE SET \
                 connection_id = EXCLUDED.connection_id, \
                 user_id = EXCLUDED.user_id, \
                 state = EXCLUDED.state, \
                 clock_value = EXCLUDED.clock_value, \
                 last_seen = EXCLUDED.last_seen \
             WHERE awareness_states.clock_value < EXCLUDED.clock_value AND {MAY_REPLACE}"
        );
        let done = owned(&sql, &update, cutoff)
            .bind(&state)
            .bind(i64::try_from(update.clock).unwrap_or(i64::MAX))
            .bind(sql_ms(update.now_ms))
            .execute(&self.pool)
            .await
            .map_err(unavailable("set"))?;
        if done.rows_affected() != 0 {
            return Ok(SetOutcome::Accepted);
        }
        // Not written: tell a foreign owner from a stale clock (the write itself
        // was decided atomically above; this only names the outcome).
        Ok(if self.exists(&update).await? {
            SetOutcome::NotOwner
        } else {
            SetOutcome::Stale
        })
    }

    async fn get_all(
        &self,
        document_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let sql = format!(
            r#"SELECT {COLUMNS} FROM awareness_states
               WHERE document_id = $1 AND last_seen > to_timestamp($2::BIGINT / 1000.0)
               ORDER BY client_id COLLATE "C""#
        );
        let query = sqlx::query(&sql)
            .bind(document_id)
            .bind(self.cutoff_ms(now_ms));
        fetch_entries(&self.pool, query, "get_all").await
    }

    async fn remove_connection(
        &self,
        connection_id: &str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        // Only rows this connection wrote last: a client that moved to another
        // connection keeps its presence there.
        let sql = format!(
            "WITH gone AS (DELETE FROM awareness_states WHERE connection_id = $1 RETURNING *) \
             SELECT {COLUMNS} FROM gone {ORDER}"
        );
        let query = sqlx::query(&sql).bind(connection_id);
        fetch_entries(&self.pool, query, "remove_connection").await
    }

    #[cfg(any(test, feature = "test-util"))]
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM awareness_states \
             WHERE last_seen <= to_timestamp($1::BIGINT / 1000.0) {ORDER}"
        );
        let query = sqlx::query(&sql).bind(self.cutoff_ms(now_ms));
        fetch_entries(&self.pool, query, "expired").await
    }

    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        // The DELETE re-checks `last_seen` on a row refreshed concurrently, so an entry
        // that was just updated survives the sweep and no spurious leave is sent.
        let sql = format!(
            "WITH gone AS (DELETE FROM awareness_states \
                 WHERE last_seen <= to_timestamp($1::BIGINT / 1000.0) RETURNING *) \
             SELECT {COLUMNS} FROM gone {ORDER}"
        );
        let query = sqlx::query(&sql).bind(self.cutoff_ms(now_ms));
        fetch_entries(&self.pool, query, "prune_expired").await
    }

    async fn count(&self) -> Result<usize, AwarenessError> {
        // Stored rows, expired-but-unpruned included, like the memory store: the trait
        // gives no clock to judge expiry by, and the sweep keeps the difference small.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM awareness_states")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("count"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
