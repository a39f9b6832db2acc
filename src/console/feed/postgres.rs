//! The PostgreSQL source: one page of each table the views show, per refresh. Every
//! query is bounded (`LIMIT`) and walks an index (`documents.updated_at`,
//! `sessions.last_seen`, the awareness primary key, `maintenance_runs.started_at`);
//! totals are planner estimates, because an exact `count(*)` of a big table is a
//! scan per refresh. Measured in BENCHMARKS.md (100,000 documents, 10,000 sessions).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use crate::console::model::{
    AwarenessClient, DatabaseReport, DeltaInfo, RunInfo, SessionInfo, SnapshotInfo, SourceState,
    StoredDocument,
};

/// Rows per page: more than a tall terminal shows, few enough to stay fast.
pub(crate) const DOCUMENTS_PAGE: i64 = 200;
pub(crate) const SESSIONS_PAGE: i64 = 200;
pub(crate) const AWARENESS_PAGE: i64 = 200;
const RUNS_PAGE: i64 = 50;
const DELTAS_PAGE: i64 = 20;
const SNAPSHOTS_PAGE: i64 = 10;

/// The console needs at most one query at a time, plus one for a detail.
const POOL_SIZE: u32 = 2;
/// A database slower than this to hand out a connection shows as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Database {
    pool: PgPool,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// `%text%` for LIKE, with the pattern characters of `text` escaped.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Database {
    /// A lazy pool: nothing connects until the first poll, so a database that is
    /// down at start shows as down instead of stopping the console.
    pub fn new(url: &str) -> Result<Database, String> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy(url)
            .map_err(|e| format!("invalid DATABASE_URL: {e}"))?;
        Ok(Database { pool })
    }

    /// One refresh: the state (with the probe's latency) and a page of each table.
    pub async fn poll(&self, documents_filter: &str) -> DatabaseReport {
        let started = Instant::now();
        if let Err(e) = sqlx::query("SELECT 1").execute(&self.pool).await {
            return DatabaseReport {
                state: SourceState::Down {
                    error: short_error(&e),
                },
                ..DatabaseReport::default()
            };
        }
        let latency_ms = elapsed_ms(started);
        let queries = Instant::now();
        let mut report = DatabaseReport {
            state: SourceState::Up { latency_ms },
            ..DatabaseReport::default()
        };
        match self.documents(documents_filter).await {
            Ok(rows) => report.documents = rows,
            Err(e) => tracing::warn!(error = %e, "console: documents query failed"),
        }
        match self.estimates().await {
            Ok((documents, sessions)) => {
                report.documents_total = documents;
                report.sessions_total = sessions;
            }
            Err(e) => tracing::warn!(error = %e, "console: estimates query failed"),
        }
        match self.sessions().await {
            Ok(rows) => report.sessions = rows,
            Err(e) => tracing::warn!(error = %e, "console: sessions query failed"),
        }
        // The awareness table exists only where synckit migrated the database.
        report.awareness = self.awareness().await.unwrap_or_default();
        match self.runs().await {
            Ok(rows) => report.runs = rows,
            Err(e) => tracing::debug!(error = %e, "console: maintenance_runs not readable"),
        }
        report.query_ms = elapsed_ms(queries);
        report
    }

    /// The newest documents whose id contains `filter` (any case). The match runs
    /// under the "C" collation: ILIKE under a linguistic collation costs twice as
    /// much per row, and a filtered refresh scans the whole table (BENCHMARKS.md).
    pub async fn documents(&self, filter: &str) -> Result<Vec<StoredDocument>, sqlx::Error> {
        // Two statements rather than `$1 = '' OR …`: a prepared statement's generic
        // plan cannot drop the unused branch, and each form has its own best plan.
        const COLUMNS: &str =
            "SELECT id, version, updated_at, pg_column_size(state)::bigint AS size, \
             CASE WHEN jsonb_typeof(state -> 'fields') = 'object' \
                  THEN (SELECT count(*) FROM jsonb_object_keys(state -> 'fields')) \
                  ELSE 0 END AS fields FROM documents";
        let rows = if filter.is_empty() {
            sqlx::query(&format!("{COLUMNS} ORDER BY updated_at DESC LIMIT $1"))
                .bind(DOCUMENTS_PAGE)
                .fetch_all(&self.pool)
                .await?
        } else {
            sqlx::query(&format!(
                "{COLUMNS} WHERE lower(id COLLATE \"C\") LIKE lower($1) \
                 ORDER BY updated_at DESC LIMIT $2"
            ))
            .bind(contains_pattern(filter))
            .bind(DOCUMENTS_PAGE)
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter()
            .map(|r: &PgRow| {
                Ok(StoredDocument {
                    id: r.try_get("id")?,
                    version: r.try_get("version")?,
                    updated_at_ms: ms(r.try_get("updated_at")?),
                    size_bytes: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                    fields: u64::try_from(r.try_get::<i64, _>("fields")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Planner estimates of the documents and sessions tables; an exact count (of
    /// at most a bounded number of rows) when the table was never analysed.
    async fn estimates(&self) -> Result<(u64, u64), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT relname::text AS name, reltuples::bigint AS estimate FROM pg_class \
             WHERE relkind = 'r' AND relname IN ('documents', 'sessions') \
               AND relnamespace = to_regnamespace(current_schema())",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut documents = -1i64;
        let mut sessions = -1i64;
        for r in &rows {
            let name: String = r.try_get("name")?;
            let estimate: i64 = r.try_get("estimate")?;
            match name.as_str() {
                "documents" => documents = estimate,
                _ => sessions = estimate,
            }
        }
        let exact = |table: &'static str| async move {
            let sql = format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 100000) t");
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&self.pool)
                .await
        };
        if documents < 0 {
            documents = exact("documents").await?;
        }
        if sessions < 0 {
            sessions = exact("sessions").await?;
        }
        Ok((
            u64::try_from(documents).unwrap_or(0),
            u64::try_from(sessions).unwrap_or(0),
        ))
    }

    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, user_id, client_id, connected_at, last_seen, metadata FROM sessions \
             ORDER BY last_seen DESC LIMIT $1",
        )
        .bind(SESSIONS_PAGE)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let metadata: Option<Value> = r.try_get("metadata")?;
                let meta = |k: &str| {
                    metadata
                        .as_ref()
                        .and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                Ok(SessionInfo {
                    id: r.try_get("id")?,
                    user: Some(r.try_get("user_id")?),
                    client: meta("userAgent").or(r.try_get("client_id")?),
                    instance: meta("serverId"),
                    remote: meta("ip"),
                    connected_at_ms: ms(r.try_get("connected_at")?),
                    last_seen_ms: ms(r.try_get("last_seen")?),
                    subscriptions: Vec::new(),
                    live: false,
                    via: None,
                })
            })
            .collect()
    }

    pub async fn awareness(&self) -> Result<Vec<AwarenessClient>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT document_id, client_id, state, clock_value, last_seen FROM awareness_states \
             ORDER BY document_id, client_id LIMIT $1",
        )
        .bind(AWARENESS_PAGE)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AwarenessClient {
                    document_id: r.try_get("document_id")?,
                    client_id: r.try_get("client_id")?,
                    state: r.try_get("state")?,
                    clock: u64::try_from(r.try_get::<i64, _>("clock_value")?).unwrap_or(0),
                    last_seen_ms: ms(r.try_get("last_seen")?),
                    // The timeout is the servers' setting; their admin API says it.
                    expires_in_ms: None,
                })
            })
            .collect()
    }

    pub async fn runs(&self) -> Result<Vec<RunInfo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, job, instance_id, started_at, finished_at, outcome, counts, error \
             FROM maintenance_runs ORDER BY started_at DESC LIMIT $1",
        )
        .bind(RUNS_PAGE)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let finished: Option<DateTime<Utc>> = r.try_get("finished_at")?;
                Ok(RunInfo {
                    id: r.try_get("id")?,
                    job: r.try_get("job")?,
                    instance_id: r.try_get("instance_id")?,
                    started_at_ms: ms(r.try_get("started_at")?),
                    finished_at_ms: finished.map(ms),
                    outcome: r.try_get("outcome")?,
                    counts: r.try_get("counts")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    /// Recent deltas and snapshots of one document.
    pub async fn history(
        &self,
        id: &str,
    ) -> Result<(Vec<DeltaInfo>, Vec<SnapshotInfo>), sqlx::Error> {
        let deltas = sqlx::query(
            "SELECT client_id, operation_type, field_path, value, clock_value, timestamp \
             FROM deltas WHERE document_id = $1 ORDER BY timestamp DESC LIMIT $2",
        )
        .bind(id)
        .bind(DELTAS_PAGE)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(DeltaInfo {
                client_id: r.try_get("client_id")?,
                operation: r.try_get("operation_type")?,
                field: r.try_get("field_path")?,
                value: r.try_get("value")?,
                clock: r.try_get("clock_value")?,
                at_ms: ms(r.try_get("timestamp")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let snapshots = sqlx::query(
            "SELECT id::text AS id, size_bytes, created_at FROM snapshots \
             WHERE document_id = $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(id)
        .bind(SNAPSHOTS_PAGE)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(SnapshotInfo {
                id: r.try_get("id")?,
                size_bytes: i64::from(r.try_get::<i32, _>("size_bytes")?),
                created_at_ms: ms(r.try_get("created_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((deltas, snapshots))
    }

    /// Stored fields and clock, for a document no instance has loaded.
    pub async fn stored(
        &self,
        id: &str,
    ) -> Result<Option<(Value, Vec<(String, i64)>)>, sqlx::Error> {
        let state: Option<Value> = sqlx::query_scalar("SELECT state FROM documents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let clock: Vec<(String, i64)> = sqlx::query_as(
            "SELECT client_id, clock_value FROM vector_clocks WHERE document_id = $1 \
             ORDER BY client_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let fields = state.get("fields").cloned().unwrap_or(state);
        Ok(Some((fields, clock)))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The first line of a database error: enough for a status line.
fn short_error(e: &sqlx::Error) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or("").chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a_b%"), "%a\\_b\\%%");
    }
}
