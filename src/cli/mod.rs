//! Command-line interface: clap parsing and wiring. anyhow lives here and in main.rs.

pub mod duration;
pub mod serve;

use clap::{Parser, Subcommand};

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
}

/// Entry point used by `main`.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
    }
}
