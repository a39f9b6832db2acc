//! Command-line interface: clap parsing and wiring. anyhow lives here and in main.rs.

pub mod check_config;
pub mod cleanup;
pub mod console;
pub mod database;
pub mod duration;
pub mod migrate;
pub mod schedule;
pub mod serve;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "synckit", version, about = "SyncKit-compatible sync server and operator tools", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sync server (WebSocket protocol, HTTP health/auth, admin listener).
    Serve(Box<serve::ServeArgs>),
    /// Apply pending database migrations (or check them with --status).
    Migrate(migrate::MigrateArgs),
    /// Delete old sessions, deltas and snapshots once, in small batches.
    Cleanup(cleanup::CleanupArgs),
    /// Check what `serve` would run with (same flags and env): validate it, reach
    /// PostgreSQL and Redis, check the schema, print it with secrets redacted. Exit
    /// codes: 0 ok, 2 invalid configuration, 3 database unreachable, 4 schema not
    /// current, 5 Redis unreachable.
    CheckConfig(Box<check_config::CheckConfigArgs>),
    /// The operator's live terminal console: instances, documents, sessions,
    /// awareness, pub/sub traffic and maintenance; read-only unless --allow-actions.
    /// `--once [--format text|json]` prints every view and exits.
    Console(Box<console::ConsoleArgs>),
}

/// Entry point used by `main`.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    // Parsed in two steps so check-config can tell where each value came from.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Migrate(args) => one_shot(|| migrate::run(args)),
        Command::Cleanup(args) => one_shot(|| cleanup::run(args)),
        Command::Console(args) => console::run(*args),
        Command::CheckConfig(args) => {
            let Some(sub) = matches.subcommand_matches("check-config") else {
                anyhow::bail!("check-config arguments missing from the parse");
            };
            one_shot(|| check_config::run(*args, sub))
        }
    }
}

/// Maintenance commands log warnings and errors only: their output is the report.
fn one_shot(
    command: impl FnOnce() -> anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    crate::telemetry::init(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        "pretty",
    )?;
    command()
}

/// Run a future on a fresh runtime.
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    tokio::runtime::Runtime::new()
        .context("could not start the async runtime")?
        .block_on(future)
}
