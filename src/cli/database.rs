//! The PostgreSQL flags shared by `serve`, `migrate` and `cleanup`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::duration::parse_duration;
use crate::exit::Failure;
use crate::storage::PostgresSettings;

#[derive(Debug, Args)]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL connection: a URL (postgres://user:pass@host:5432/db?sslmode=require)
    /// or a libpq key/value string ("host=… dbname=… sslmode=verify-full"). `migrate`
    /// and `cleanup` need it; `serve` without it keeps documents in memory only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Connections the pool keeps open.
    #[arg(long, env = "DB_POOL_MIN", default_value_t = 2)]
    db_pool_min: u32,
    /// Most connections the pool opens.
    #[arg(long, env = "DB_POOL_MAX", default_value_t = 10)]
    db_pool_max: u32,
    /// How long a query waits for a connection before failing (then retried).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    db_acquire_timeout: Duration,
    /// Idle connections above the minimum are closed after this long.
    #[arg(long, env = "DB_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    db_idle_timeout: Duration,
}

impl DatabaseArgs {
    /// Pool settings when a database is configured.
    pub(crate) fn settings(&self, auto_migrate: bool) -> Option<PostgresSettings> {
        let url = self.database_url.as_deref()?.trim();
        if url.is_empty() {
            return None;
        }
        Some(PostgresSettings {
            url: url.to_owned(),
            pool_min: self.db_pool_min,
            pool_max: self.db_pool_max.max(self.db_pool_min).max(1),
            acquire_timeout: self.db_acquire_timeout,
            idle_timeout: self.db_idle_timeout,
            auto_migrate,
        })
    }

    /// Settings for the maintenance commands, which need a database.
    pub(crate) fn required(&self, command: &str) -> anyhow::Result<PostgresSettings> {
        self.settings(false).with_context(|| {
            format!("`synckit {command}` needs a database: set DATABASE_URL or pass --database-url")
        })
    }
}

/// Connect now (one-shot commands), with an error that says what to check (exit 3).
pub(crate) async fn connect_now(settings: &PostgresSettings) -> anyhow::Result<sqlx::PgPool> {
    let options = settings.connect_options()?;
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    );
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.pool_max.clamp(1, 4))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(crate::storage::postgres::classify)
        .context(Failure::DatabaseUnreachable)
        .with_context(|| {
            format!("could not connect to PostgreSQL at {target}: check that it is running and that DATABASE_URL is right")
        })
}

/// Refuse to work on a database whose schema is not current (exit 4), saying what
/// to run: queries on missing tables would only report `relation … does not exist`.
pub(crate) async fn require_current_schema(
    pool: &sqlx::PgPool,
    command: &str,
) -> anyhow::Result<()> {
    let status = crate::storage::migrate::status(pool)
        .await
        .context(Failure::SchemaNotCurrent)
        .context("could not read the database schema")?;
    if status.is_current() {
        return Ok(());
    }
    let pending: Vec<String> = status
        .pending()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    let mut what = Vec::new();
    if !pending.is_empty() {
        what.push(format!("pending migrations: {}", pending.join(", ")));
    }
    if !status.missing.is_empty() {
        what.push(format!("missing: {}", status.missing.join(", ")));
    }
    Err(anyhow::Error::new(Failure::SchemaNotCurrent).context(format!(
        "the database schema is not current ({}): run `synckit migrate` first, then `synckit {command}` again",
        what.join("; ")
    )))
}
