//! Command-line interface: clap parsing and wiring. anyhow lives here and in main.rs.

mod check_config;
pub(crate) mod cleanup;
pub(crate) mod console;
pub(crate) mod database;
pub(crate) mod duration;
pub(crate) mod migrate;
pub(crate) mod schedule;
pub(crate) mod serve;

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "synckit", version, about = "SyncKit-compatible sync server and operator tools", long_about = None)]
struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server (WebSocket protocol, HTTP health/auth, admin listener).
    Serve(Box<serve::ServeArgs>),
    /// Apply pending database migrations (or check them with --status).
    Migrate(migrate::MigrateArgs),
    /// Delete old sessions, deltas and snapshots once, in small batches.
    Cleanup(cleanup::CleanupArgs),
    /// Check what `serve` would run with (same flags and env): validate it, reach
    /// PostgreSQL and Redis, check the schema, print it with secrets redacted; the
    /// exit code says which check failed.
    CheckConfig(Box<check_config::CheckConfigArgs>),
    /// The operator's live terminal console: instances, documents, sessions,
    /// awareness, pub/sub traffic and maintenance; read-only unless --allow-actions.
    /// `--once [--format text|json]` prints every view and exits.
    Console(Box<console::ConsoleArgs>),
}

/// The command line as clap parses it: the derived definitions, with every boolean
/// flag accepting `--flag`, `--flag=false` and `--flag true`, and the shared exit
/// code table under every command's help.
pub fn command() -> clap::Command {
    fn adjust(command: clap::Command) -> clap::Command {
        let command = command
            .mut_args(boolean_flag)
            .after_help(crate::exit::TABLE);
        let names: Vec<String> = command
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        names.iter().fold(command, |command, name| {
            command.mut_subcommand(name, adjust)
        })
    }
    adjust(Cli::command())
}

/// A boolean flag (a `bool` field, or a setting whose default is true or false)
/// takes an optional value: `--flag` is true, `--flag=false` / `--flag false` set
/// it, and its env var reads the same words (see [`duration::parse_bool`]).
fn boolean_flag(arg: Arg) -> Arg {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let boolean_default = matches!(arg.get_default_values(), [v] if v == "true" || v == "false");
    if !switch && !boolean_default {
        return arg;
    }
    let arg = if arg.get_default_values().is_empty() {
        arg.default_value("false")
    } else {
        arg
    };
    arg.action(ArgAction::Set)
        .value_parser(duration::parse_bool)
        .num_args(0..=1)
        .require_equals(false)
        .default_missing_value("true")
        .value_name("BOOL")
}

/// Entry point used by `main`.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    // Parsed in two steps so check-config can tell where each value came from.
    let matches = command().get_matches();
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
        crate::telemetry::LogFormat::Pretty,
    )?;
    command()
}

/// Run a future on a fresh runtime.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use anyhow::Context;
    tokio::runtime::Runtime::new()
        .context("could not start the async runtime")?
        .block_on(future)
}
