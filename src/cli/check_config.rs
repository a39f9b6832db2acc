//! `synckit check-config`: validate what `synckit serve` would run with (the same
//! flags and environment), check that its backends answer, and print the effective
//! configuration with secrets redacted. Built for a unit's `ExecStartPre=`: the exit
//! code says what is wrong, the output (in the journal) says how to fix it.
//!
//! Exit codes are the shared table of `crate::exit` (when several checks fail, the
//! smallest code wins): 0 valid and every configured backend answered (pending
//! migrations that `serve` will apply are a warning), 2 invalid configuration, 3
//! PostgreSQL unreachable (refused, timed out, authentication failed, no such
//! database), 4 schema not current with SYNCKIT_AUTO_MIGRATE=false or not fixable by
//! migrating, 5 Redis unreachable. `--json` prints the same report with camelCase
//! keys and typed values (README "check-config"). `--preflight`, the unit's mode,
//! fails only where `serve` would refuse to start: Redis, and a PostgreSQL that
//! does not answer, are warnings there (docs/operations.md §10).

use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::Serialize;

use super::database::connect_now;
use super::serve::{AwarenessStoreKind, ServeArgs};
use crate::auth::jwt::DEVELOPMENT_SECRET;
use crate::exit::Failure;
use crate::pubsub::RedisTarget;
use crate::storage::{migrate, PostgresSettings};

#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Check as the unit's ExecStartPre does: fail only where `serve` would refuse
    /// to start. A Redis that does not answer, and a PostgreSQL that does not answer
    /// (refused, timed out), are warnings, because serve starts without them and
    /// connects in the background; an invalid configuration (2), a PostgreSQL that
    /// refuses for good (wrong password, no such database: 3) and a schema serve
    /// cannot use (4) still fail.
    #[arg(long)]
    preflight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Status {
    Ok,
    /// Not fatal, but worth reading (pending migrations serve will apply, a
    /// development secret, TLS not verified).
    Warning,
    Failed,
    Skipped,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    check: &'static str,
    status: Status,
    detail: String,
    /// The exit code this failure maps to.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, detail, None)
    }
    fn warning(check: &'static str, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Warning, detail, None)
    }
    fn skipped(check: &'static str, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Skipped, detail, None)
    }
    fn failed(check: &'static str, failure: Failure, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Failed, detail, Some(failure))
    }
    fn new(
        check: &'static str,
        status: Status,
        detail: impl Into<String>,
        failure: Option<Failure>,
    ) -> Check {
        Check {
            check,
            status,
            detail: detail.into(),
            failure,
        }
    }
}

/// One flag as given: its env var (or flag name), value with secrets redacted, and
/// where the value came from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Setting {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    source: &'static str,
}

/// The `--json` report (README "check-config --json"): camelCase keys, typed values.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    ok: bool,
    exit_code: u8,
    /// Every flag as given (the raw text of its flag or env var, redacted).
    settings: Vec<Setting>,
    /// Values after aliases and defaults are resolved, when the configuration is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved: Option<Resolved>,
    /// serve's scheduled jobs, when the configuration is valid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    maintenance: Vec<Job>,
    checks: Vec<Check>,
}

impl Report {
    /// Whether the configuration is valid and in development mode.
    fn development(&self) -> bool {
        self.resolved
            .as_ref()
            .is_some_and(|r| r.environment == "development")
    }
}

/// One scheduled job as serve would run it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    job: &'static str,
    /// Whether serve schedules it (enabled, and a store it applies to).
    scheduled: bool,
    schedule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn jobs(config: &crate::server::ServerConfig, awareness_store: AwarenessStoreKind) -> Vec<Job> {
    let now = chrono::Utc::now();
    config
        .maintenance
        .iter()
        .map(|job| {
            // The same rule as Server::new's.
            let applies = job.applies(awareness_store.is_shared());
            let scheduled = job.enabled && applies;
            let note = if !job.enabled {
                Some("disabled".to_owned())
            } else if !applies {
                Some(format!(
                    "not scheduled: the memory awareness store is swept every {} s",
                    config.awareness_sweep_interval.as_secs()
                ))
            } else {
                None
            };
            Job {
                job: job.name,
                scheduled,
                schedule: job.schedule.expression().to_owned(),
                next_run: scheduled
                    .then(|| job.schedule.next_after(now))
                    .flatten()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                note,
            }
        })
        .collect()
}

/// Run the command. `matches` are the parsed `check-config` arguments: they say
/// where each value came from, which the derived struct forgets.
pub(crate) fn run(args: CheckConfigArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let report = super::block_on(async { Ok(check(&args, matches).await) })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::from(report.exit_code))
}

async fn check(args: &CheckConfigArgs, matches: &ArgMatches) -> Report {
    let settings = settings(matches);
    let mut checks = Vec::new();
    let mut resolved = None;
    let mut maintenance = Vec::new();

    let serve = &args.serve;
    let config = serve.to_config().and_then(|config| {
        crate::telemetry::check(&serve.log_filter())?;
        Ok(config)
    });
    let database = serve.database_settings().and_then(|database| {
        if let Some(settings) = &database {
            settings.connect_options()?;
        }
        Ok(database)
    });
    let redis = serve.redis_target().map_err(|e| e.to_string());
    match (&config, &database, &redis) {
        (Ok(config), Ok(database), Ok(redis)) => {
            resolved = Some(resolve(serve, config, database.as_ref(), redis.as_ref()));
            maintenance = jobs(config, serve.awareness_store);
            checks.push(Check::ok("configuration", "valid"));
            checks.push(check_environment(config));
        }
        _ => {
            let errors: Vec<String> = [
                config.as_ref().err().map(|e| format!("{e:#}")),
                database.as_ref().err().map(|e| format!("{e:#}")),
                redis.as_ref().err().cloned(),
            ]
            .into_iter()
            .flatten()
            .collect();
            checks.push(Check::failed(
                "configuration",
                Failure::InvalidConfiguration,
                errors.join("; "),
            ));
        }
    }

    // Connectivity is checked whenever its own settings are usable, even when some
    // other setting is invalid: one run then reports everything there is to fix.
    match &database {
        Ok(Some(settings)) => checks.extend(check_database(settings, args.preflight).await),
        Ok(None) => {
            checks.push(Check::skipped(
                "database",
                "DATABASE_URL not set: serve keeps documents in memory only (lost on restart)",
            ));
            checks.push(Check::skipped("schema", "no database"));
        }
        Err(_) => {
            checks.push(Check::skipped(
                "database",
                "not checked: the database settings are invalid",
            ));
            checks.push(Check::skipped("schema", "no database"));
        }
    }
    match &redis {
        Ok(Some(target)) => checks.push(check_redis(target, args.preflight).await),
        Ok(None) => checks.push(Check::skipped("redis", "REDIS_URL not set")),
        Err(_) => checks.push(Check::skipped("redis", "not checked: REDIS_URL is invalid")),
    }

    let failure = checks.iter().filter_map(|c| c.failure).min();
    Report {
        ok: failure.is_none(),
        exit_code: failure.map_or(0, Failure::code),
        settings,
        resolved,
        maintenance,
        checks,
    }
}

/// Whether this is a configuration to deploy (docs/operations.md §4.3): development
/// mode is valid but never silent — its public JWT secret and open demo routes are
/// named — and production's one allowed risk, auth disabled with its
/// acknowledgement, is reported too.
fn check_environment(config: &crate::server::ServerConfig) -> Check {
    if config.production {
        return if config.sync.auth_required {
            Check::ok(
                "environment",
                "production: authentication required, demo login and test mode off",
            )
        } else {
            Check::warning(
                "environment",
                "production with SYNCKIT_AUTH_REQUIRED=false, acknowledged by SYNCKIT_ALLOW_NO_AUTH_IN_PRODUCTION=true: every connection is anonymous with access to every document",
            )
        };
    }
    let mut risks = Vec::new();
    if config.jwt.secret == DEVELOPMENT_SECRET {
        risks.push("JWT_SECRET is not set: the public development secret is in use, so anyone can mint tokens");
    }
    if !config.sync.auth_required {
        risks.push("authentication is disabled");
    }
    if config.demo_login {
        risks.push("demo login mints tokens for any email");
    }
    if config.test_mode {
        risks.push("POST /_test/clear erases everything");
    }
    let risks = if risks.is_empty() {
        String::new()
    } else {
        format!(": {}", risks.join("; "))
    };
    Check::warning(
        "environment",
        format!("development mode (SYNCKIT_ENV is not production){risks}. For a deployment set SYNCKIT_ENV=production and JWT_SECRET"),
    )
}

/// Every flag of the command with its value (redacted) and source, in declaration
/// order. Driven by clap's own definitions, so flags added to `serve` show up here
/// without anyone remembering to.
fn settings(matches: &ArgMatches) -> Vec<Setting> {
    let command = super::command();
    let Some(command) = command.find_subcommand("check-config") else {
        return Vec::new();
    };
    command
        .get_arguments()
        .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version" | "json"))
        .map(|arg| {
            let id = arg.get_id().as_str();
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let name = env.clone().unwrap_or_else(|| {
                arg.get_long()
                    .map_or_else(|| id.to_owned(), |l| format!("--{l}"))
            });
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "env",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            };
            let raw: Option<Vec<String>> = matches
                .get_raw(id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
            let value = raw.map(|values| {
                redact_setting(
                    env.as_deref().unwrap_or(id),
                    arg.is_hide_env_values_set(),
                    &values,
                )
            });
            Setting {
                name,
                value,
                source,
            }
        })
        .collect()
}

/// Connection strings keep everything but their passwords; any other hidden value
/// (JWT secret, API keys) is replaced whole.
fn redact_setting(name: &str, hidden: bool, values: &[String]) -> String {
    let connection = matches!(name, "DATABASE_URL" | "REDIS_URL");
    if hidden && !connection {
        return match values {
            [one] => format!("<redacted, {} characters>", one.chars().count()),
            many => format!("<redacted, {} values>", many.len()),
        };
    }
    values
        .iter()
        .map(|v| redact_connection_string(v))
        .collect::<Vec<_>>()
        .join(",")
}

/// Hide the password of a URL (`scheme://user:***@host`) and of `password=` options
/// (libpq key/value strings, URL query parameters, StackExchange Redis strings).
fn redact_connection_string(value: &str) -> String {
    let mut out = value.to_owned();
    if let Some((scheme, rest)) = value.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            out = format!("{scheme}://{user}@{host}{}", &rest[authority_end..]);
        }
    }
    redact_password_options(&out)
}

fn redact_password_options(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("password=") {
        let start = i + found;
        // Only a whole key: `password=`, not `notapassword=`.
        let boundary = start == 0
            || matches!(
                value.as_bytes()[start - 1],
                b' ' | b',' | b'&' | b'?' | b';'
            );
        let value_start = start + "password=".len();
        out.push_str(&value[i..value_start]);
        if boundary {
            let quoted = value[value_start..].starts_with('\'');
            let end = if quoted {
                value[value_start + 1..]
                    .find('\'')
                    .map_or(value.len(), |e| value_start + e + 2)
            } else {
                value[value_start..]
                    .find([' ', ',', '&', ';'])
                    .map_or(value.len(), |e| value_start + e)
            };
            out.push_str("***");
            i = end;
        } else {
            i = value_start;
        }
    }
    out.push_str(&value[i..]);
    out
}

/// What serve would run with, after aliases and defaults, typed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Resolved {
    listen: String,
    /// `null` when the admin listener is off.
    admin_listen: Option<String>,
    environment: &'static str,
    auth_required: bool,
    /// Whether JWT_SECRET is the built-in development secret.
    jwt_development_secret: bool,
    jwt_secret_characters: usize,
    api_keys: usize,
    max_connections_per_ip: usize,
    cors_origins: Vec<String>,
    /// Whether the client IP comes from X-Forwarded-For (from `trustedProxies`).
    trust_proxy_headers: bool,
    trusted_proxies: Vec<String>,
    admin_reads_open: bool,
    demo_login: bool,
    log_filter: String,
    /// `memory`, or `postgres host:port/database`.
    storage: String,
    auto_migrate: bool,
    awareness_store: AwarenessStoreKind,
    /// The Redis endpoint (password redacted), `null` without Redis.
    redis: Option<String>,
}

fn resolve(
    serve: &ServeArgs,
    config: &crate::server::ServerConfig,
    database: Option<&PostgresSettings>,
    redis: Option<&RedisTarget>,
) -> Resolved {
    Resolved {
        listen: config.listen.to_string(),
        admin_listen: config.admin_listen.map(|a| a.to_string()),
        environment: if config.production {
            "production"
        } else {
            "development"
        },
        auth_required: config.sync.auth_required,
        jwt_development_secret: config.jwt.secret == DEVELOPMENT_SECRET,
        jwt_secret_characters: config.jwt.secret.chars().count(),
        api_keys: config.jwt.api_keys.len(),
        max_connections_per_ip: config.max_connections_per_ip,
        cors_origins: config.cors_origins.clone(),
        trust_proxy_headers: config.trust_proxy_headers,
        trusted_proxies: config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect(),
        admin_reads_open: config.admin_reads_open,
        demo_login: config.demo_login,
        log_filter: serve.log_filter(),
        storage: match database.and_then(|d| d.connect_options().ok()) {
            Some(o) => format!(
                "postgres {}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("(default database)")
            ),
            None => "memory".into(),
        },
        auto_migrate: serve.auto_migrate,
        awareness_store: serve.awareness_store,
        redis: redis.map(RedisTarget::display),
    }
}

/// One resolved value as the text report shows it.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "none".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// With `--preflight`, what serve does when a backend does not answer at start: it
/// starts anyway (docs/storage.md §5, §6.6), so the check only warns.
const STARTS_WITHOUT_IT: &str =
    "serve starts without it (from memory) and connects in the background";

async fn check_database(settings: &PostgresSettings, preflight: bool) -> Vec<Check> {
    // connect_now is bounded by DB_ACQUIRE_TIMEOUT already; the outer timeout covers
    // a DNS lookup or TLS handshake that hangs outside it.
    let budget = settings.acquire_timeout + Duration::from_secs(1);
    let unreachable = |transient: bool, detail: String| {
        let check = if preflight && transient {
            Check::warning("database", format!("{detail}; {STARTS_WITHOUT_IT}"))
        } else {
            Check::failed("database", Failure::DatabaseUnreachable, detail)
        };
        vec![check, Check::skipped("schema", "no connection")]
    };
    let pool = match tokio::time::timeout(budget, connect_now(settings)).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => {
            // serve refuses to start only on a refusal retrying cannot fix.
            let transient = e
                .chain()
                .find_map(|c| c.downcast_ref::<crate::storage::StorageError>())
                .is_some_and(crate::storage::StorageError::is_transient);
            return unreachable(transient, format!("{e:#}"));
        }
        Err(_) => {
            return unreachable(
                true,
                format!("PostgreSQL did not answer within {budget:?}: check that it is running and that DATABASE_URL is right"),
            )
        }
    };
    let version: Result<String, _> = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await;
    let database = match version {
        Ok(v) => Check::ok("database", format!("connected (PostgreSQL {v})")),
        Err(e) => Check::failed(
            "database",
            Failure::DatabaseUnreachable,
            format!("connected but a query failed: {e}"),
        ),
    };
    let schema = check_schema(&pool, settings.auto_migrate).await;
    pool.close().await;
    vec![database, schema]
}

async fn check_schema(pool: &sqlx::PgPool, auto_migrate: bool) -> Check {
    let status = match migrate::status(pool).await {
        Ok(status) => status,
        Err(e) => {
            return Check::failed(
                "schema",
                Failure::SchemaNotCurrent,
                format!("could not read the schema: {e}"),
            )
        }
    };
    let unknown = match unknown_migrations(pool).await {
        Ok(unknown) => unknown,
        Err(e) => {
            return Check::failed(
                "schema",
                Failure::SchemaNotCurrent,
                format!("could not read the applied migrations: {e}"),
            )
        }
    };
    let pending: Vec<String> = status
        .pending()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    let applied = status.migrations.len() - pending.len();
    if !unknown.is_empty() {
        let detail = format!(
            "the database has migrations this binary does not know ({}): it was migrated by a newer synckit",
            unknown.join(", ")
        );
        return if auto_migrate {
            Check::failed(
                "schema",
                Failure::SchemaNotCurrent,
                format!("{detail}; with SYNCKIT_AUTO_MIGRATE=true serve refuses to start: upgrade synckit, or set SYNCKIT_AUTO_MIGRATE=false"),
            )
        } else {
            Check::warning("schema", detail)
        };
    }
    if status.is_current() {
        return Check::ok("schema", format!("current ({applied} migrations applied)"));
    }
    let missing = if status.missing.is_empty() {
        String::new()
    } else {
        format!("; missing: {}", status.missing.join(", "))
    };
    match (auto_migrate, pending.is_empty()) {
        (true, false) => Check::warning(
            "schema",
            format!(
                "pending migrations ({}) will be applied when serve starts (SYNCKIT_AUTO_MIGRATE=true)",
                pending.join(", ")
            ),
        ),
        (true, true) => Check::failed(
            "schema",
            Failure::SchemaNotCurrent,
            format!("every migration is applied but objects are missing{missing}: the schema was changed by hand; see `synckit migrate --status`"),
        ),
        (false, _) => Check::failed(
            "schema",
            Failure::SchemaNotCurrent,
            format!(
                "not current (pending: {}{missing}); SYNCKIT_AUTO_MIGRATE=false, so serve refuses to start: run `synckit migrate`",
                if pending.is_empty() { "none".into() } else { pending.join(", ") }
            ),
        ),
    }
}

/// Applied migrations that this binary does not embed (a newer synckit ran them).
async fn unknown_migrations(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    let bookkeeping: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text")
            .fetch_one(pool)
            .await?;
    if bookkeeping.is_none() {
        return Ok(Vec::new());
    }
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(applied
        .into_iter()
        .filter(|(version, _)| !migrate::MIGRATOR.iter().any(|m| m.version == *version))
        .map(|(version, description)| format!("{version} {description}"))
        .collect())
}

/// Budget for the whole Redis exchange: connect, AUTH, PING.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

async fn check_redis(target: &RedisTarget, preflight: bool) -> Check {
    let shown = target.display();
    let detail = match tokio::time::timeout(REDIS_TIMEOUT, ping_redis(target)).await {
        Ok(Ok(detail)) => return Check::ok("redis", format!("{shown}: {detail}")),
        Ok(Err(e)) => format!("{shown}: {e}"),
        Err(_) => format!("{shown}: no answer within {REDIS_TIMEOUT:?}"),
    };
    if preflight {
        // Every Redis failure is one serve rides out: it reconnects in the
        // background, serving this instance's clients meanwhile.
        Check::warning("redis", format!("{detail}; serve starts without it (single instance until it answers) and connects in the background"))
    } else {
        Check::failed("redis", Failure::RedisUnreachable, detail)
    }
}

/// Connect the way `serve` will (TLS and AUTH included) and PING.
async fn ping_redis(target: &RedisTarget) -> Result<String, String> {
    let client = redis::Client::open(target.info.clone()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| {
            format!("cannot connect: {e}; check that Redis is running and REDIS_URL is right")
        })?;
    let started = std::time::Instant::now();
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("PING failed: {e}"))?;
    if pong == "PONG" {
        Ok(format!(
            "PING answered in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ))
    } else {
        Err(format!("unexpected answer to PING: {pong}"))
    }
}

fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Effective configuration (secrets redacted):");
    let width = report
        .settings
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &report.settings {
        match &s.value {
            Some(value) => {
                let _ = writeln!(out, "  {:<width$}  {value}  [{}]", s.name, s.source);
            }
            None => {
                let _ = writeln!(out, "  {:<width$}  (unset)", s.name);
            }
        }
    }
    if let Some(serde_json::Value::Object(resolved)) = report
        .resolved
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
    {
        let _ = writeln!(out, "\nResolved:");
        for (key, value) in &resolved {
            let _ = writeln!(out, "  {key:<24}  {}", shown(value));
        }
    }
    if !report.maintenance.is_empty() {
        let _ = writeln!(out, "\nMaintenance jobs (cron, UTC):");
        for job in &report.maintenance {
            let detail = match (&job.next_run, &job.note) {
                (Some(next), _) => format!("next {next}"),
                (None, Some(note)) => note.clone(),
                (None, None) => "no upcoming run".to_owned(),
            };
            let _ = writeln!(out, "  {:<16} {:<18} {detail}", job.job, job.schedule);
        }
    }
    let _ = writeln!(out, "\nChecks:");
    for c in &report.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        let _ = writeln!(out, "  {status:<8} {:<14} {}", c.check, c.detail);
    }
    let _ = writeln!(
        out,
        "\n{} (exit {})",
        if report.ok && report.development() {
            "configuration OK for development only (SYNCKIT_ENV is not production)"
        } else if report.ok {
            "configuration OK"
        } else {
            "configuration NOT OK"
        },
        report.exit_code
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_connection_string("postgres://app:s3cret@db:5432/synckit?sslmode=require"),
            "postgres://app:***@db:5432/synckit?sslmode=require"
        );
        assert_eq!(
            redact_connection_string("postgres://app@db/synckit?password=s3cret&sslmode=require"),
            "postgres://app@db/synckit?password=***&sslmode=require"
        );
        assert_eq!(
            redact_connection_string("host=db dbname=synckit password='a b' sslmode=verify-full"),
            "host=db dbname=synckit password=*** sslmode=verify-full"
        );
        assert_eq!(
            redact_connection_string("redis.local:6380,password=s3cret,ssl=true"),
            "redis.local:6380,password=***,ssl=true"
        );
        assert_eq!(
            redact_connection_string("redis://:p@ss@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact_connection_string("redis://redis:6379"),
            "redis://redis:6379"
        );
    }

    #[test]
    fn hidden_values_are_replaced_whole() {
        let secret = "x".repeat(48);
        assert_eq!(
            redact_setting("JWT_SECRET", true, &[secret]),
            "<redacted, 48 characters>"
        );
        assert_eq!(
            redact_setting("SYNCKIT_AUTH_APIKEYS", true, &["a".into(), "b".into()]),
            "<redacted, 2 values>"
        );
        assert_eq!(redact_setting("PORT", false, &["8080".into()]), "8080");
    }
}
