//! `synckit migrate`: apply pending migrations, or report the schema's state
//! (`--status`, exit 0 only when current).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::database::{connect_now, DatabaseArgs};
use crate::exit::Failure;
use crate::storage::migrate;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    /// Only report applied and pending migrations and missing objects; exit 0 only
    /// when the schema is current, 4 otherwise.
    #[arg(long)]
    pub(crate) status: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    super::block_on(migrate_command(args))
}

async fn migrate_command(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let settings = args.database.required("migrate")?;
    let pool = connect_now(&settings).await?;
    if args.status {
        let status = migrate::status(&pool)
            .await
            .context(Failure::SchemaNotCurrent)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            for m in &status.migrations {
                let mark = if m.applied { "applied" } else { "pending" };
                println!("{:>14}  {mark:<8} {}", m.version, m.description);
            }
            if status.missing.is_empty() {
                println!("schema objects: all present");
            } else {
                println!("missing: {}", status.missing.join(", "));
            }
            if status.is_current() {
                println!("schema is current");
            } else {
                println!("schema is NOT current: run `synckit migrate`");
            }
        }
        pool.close().await;
        return Ok(if status.is_current() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(Failure::SchemaNotCurrent.code())
        });
    }
    let applied = migrate::apply(&pool)
        .await
        .context(Failure::SchemaNotCurrent)
        .context("migrations could not be applied")?;
    migrate::validate(&pool)
        .await
        .context(Failure::SchemaNotCurrent)
        .context(
            "the schema is still not complete after migrating: see `synckit migrate --status`",
        )?;
    if args.json {
        println!("{}", serde_json::json!({ "applied": applied }));
    } else if applied.is_empty() {
        println!("schema is up to date; nothing to apply");
    } else {
        for m in &applied {
            println!("applied {} {}", m.version, m.description);
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}
