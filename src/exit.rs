//! The exit codes every command shares (README "Exit codes"): 0 success, 1 a
//! runtime failure (serve could not drain in time), 2 configuration, 3 PostgreSQL
//! unreachable, 4 schema not current, 5 Redis unreachable; `console --once` adds 6
//! (an instance's admin API unreachable) and 7 (more than one source down). An error carries its
//! class as anyhow context (`Failure`); anything unclassified is a configuration
//! error, which is what a command refusing to start almost always is.

use std::process::ExitCode;

use serde::Serialize;

/// Why a command failed, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Failure {
    InvalidConfiguration = 2,
    DatabaseUnreachable = 3,
    SchemaNotCurrent = 4,
    RedisUnreachable = 5,
}

impl Failure {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::InvalidConfiguration => "invalid configuration",
            Failure::DatabaseUnreachable => "PostgreSQL unreachable",
            Failure::SchemaNotCurrent => "database schema not current",
            Failure::RedisUnreachable => "Redis unreachable",
        })
    }
}

impl std::error::Error for Failure {}

/// `console --once`: an instance's admin API did not answer.
pub(crate) const INSTANCE_UNREACHABLE: u8 = 6;
/// `console --once`: more than one of PostgreSQL, Redis and the instances is down.
pub(crate) const SEVERAL_UNREACHABLE: u8 = 7;

/// The exit code for an error: its [`Failure`] context, else 2.
fn failure_of(error: &anyhow::Error) -> Failure {
    error
        .downcast_ref::<Failure>()
        .copied()
        .unwrap_or(Failure::InvalidConfiguration)
}

pub fn code_of(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(failure_of(error).code())
}

/// The table as the help texts print it.
pub(crate) const TABLE: &str = "Exit codes (all commands): 0 ok, 1 runtime failure (serve did not drain in time), 2 invalid configuration, 3 PostgreSQL unreachable, 4 database schema not current (run `synckit migrate`), 5 Redis unreachable; console --once: 6 an instance's admin API unreachable, 7 several sources down.";

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_class_survives_further_context() {
        let e: anyhow::Error = Err::<(), _>(std::io::Error::other("refused"))
            .context(Failure::DatabaseUnreachable)
            .context("could not connect")
            .unwrap_err();
        assert_eq!(failure_of(&e), Failure::DatabaseUnreachable);
        assert_eq!(
            failure_of(&anyhow::anyhow!("bad flag")),
            Failure::InvalidConfiguration
        );
    }
}
