//! The command line as operators type it: every boolean flag takes `--flag`,
//! `--flag=false` and `--flag true`, and every command exits with the shared code
//! for each kind of failure (2 configuration, 3 PostgreSQL unreachable, 4 schema
//! not current). `serve` never exits 3 or 5 (it serves from memory and reconnects);
//! check-config's 5 is in check_config.rs, the console's codes in console_e2e.rs.

use std::process::Output;

use sqlx::PgPool;

use crate::common;

/// Every boolean flag of every command, found by asking clap (a flag that parses
/// with no value into a `bool`), so one added later is covered without a list.
fn boolean_flags() -> Vec<(String, String, String)> {
    let command = synckit::command();
    let mut out = Vec::new();
    for sub in command.get_subcommands() {
        let name = sub.get_name().to_owned();
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let id = arg.get_id().as_str().to_owned();
            let bare = format!("--{long}");
            let parsed = synckit::command()
                .try_get_matches_from(["synckit", name.as_str(), bare.as_str()])
                .ok()
                .and_then(|m| {
                    m.subcommand_matches(&name)
                        .and_then(|s| s.try_get_one::<bool>(&id).ok().flatten().copied())
                });
            if parsed.is_some() {
                out.push((name.clone(), long.to_owned(), id));
            }
        }
    }
    out
}

fn parse(sub: &str, id: &str, args: &[&str]) -> Result<bool, String> {
    let mut argv = vec!["synckit", sub];
    argv.extend_from_slice(args);
    let matches = synckit::command()
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    matches
        .subcommand_matches(sub)
        .and_then(|s| s.get_one::<bool>(id).copied())
        .ok_or_else(|| format!("{id} has no value"))
}

#[test]
fn every_boolean_flag_takes_a_bare_flag_false_and_true() {
    let flags = boolean_flags();
    // The ones operators reach for first must be among them.
    for (sub, long) in [
        ("serve", "auth-required"),
        ("serve", "demo-login"),
        ("serve", "auto-migrate"),
        ("serve", "cleanup-enabled"),
        ("check-config", "json"),
        ("check-config", "auth-required"),
        ("migrate", "status"),
        ("migrate", "json"),
        ("cleanup", "dry-run"),
        ("console", "once"),
        ("console", "allow-actions"),
    ] {
        assert!(
            flags.iter().any(|(s, l, _)| s == sub && l == long),
            "{sub} --{long} is not a boolean flag: {flags:?}"
        );
    }
    assert!(
        flags.len() >= 30,
        "only {} boolean flags found",
        flags.len()
    );
    for (sub, long, id) in &flags {
        let flag = format!("--{long}");
        let eq = |v: &str| format!("--{long}={v}");
        assert_eq!(parse(sub, id, &[&flag]), Ok(true), "{sub} {flag}");
        assert_eq!(
            parse(sub, id, &[&eq("false")]),
            Ok(false),
            "{sub} {flag}=false"
        );
        assert_eq!(
            parse(sub, id, &[&eq("true")]),
            Ok(true),
            "{sub} {flag}=true"
        );
        assert_eq!(
            parse(sub, id, &[&flag, "false"]),
            Ok(false),
            "{sub} {flag} false"
        );
        assert_eq!(
            parse(sub, id, &[&flag, "true"]),
            Ok(true),
            "{sub} {flag} true"
        );
        assert_eq!(parse(sub, id, &[&eq("off")]), Ok(false), "{sub} {flag}=off");
        assert!(
            parse(sub, id, &[&eq("maybe")]).is_err(),
            "{sub} {flag}=maybe"
        );
    }
}

#[test]
fn every_help_prints_the_exit_code_table() {
    for sub in ["serve", "migrate", "cleanup", "check-config", "console"] {
        let out = run(&[sub, "--help"], &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("3 PostgreSQL unreachable") && help.contains("4 database schema"),
            "{sub} --help:\n{help}"
        );
    }
}

/// Run `synckit` with exactly `env` (plus PATH-less defaults).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"));
    command
        .args(args)
        .env_clear()
        .env("SYNCKIT_ADMIN_LISTEN", "off")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run synckit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32, what: &str, says: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {err}");
    assert!(err.contains(says), "{what} should say {says:?}: {err}");
}

/// A URL to a port nothing listens on.
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    format!("postgres://postgres@127.0.0.1:{port}/nothing")
}

#[test]
fn configuration_errors_exit_2_for_every_command() {
    let short = [("JWT_SECRET", "short")];
    assert_exit(&run(&["serve"], &short), 2, "serve", "JWT_SECRET");
    assert_exit(&run(&["migrate"], &[]), 2, "migrate", "set DATABASE_URL");
    assert_exit(&run(&["cleanup"], &[]), 2, "cleanup", "set DATABASE_URL");
    let out = run(&["check-config"], &short);
    assert_eq!(out.status.code(), Some(2), "check-config");
    let bad_flag = run(&["serve", "--auth-required=perhaps"], &[]);
    assert_eq!(
        bad_flag.status.code(),
        Some(2),
        "clap's own errors: {}",
        stderr(&bad_flag)
    );
}

#[test]
fn an_unreachable_database_exits_3_for_every_command() {
    let url = unreachable_url();
    let env = [("DATABASE_URL", url.as_str()), ("DB_ACQUIRE_TIMEOUT", "1s")];
    for args in [
        &["migrate"][..],
        &["migrate", "--status"],
        &["cleanup"],
        &["cleanup", "--dry-run"],
    ] {
        assert_exit(
            &run(args, &env),
            3,
            &format!("{args:?}"),
            "check that it is running",
        );
    }
    assert_eq!(run(&["check-config"], &env).status.code(), Some(3));
}

#[sqlx::test(migrations = false)]
async fn an_unmigrated_database_exits_4_and_says_to_migrate(pool: PgPool) {
    let url = common::database_url(&pool);
    let env = [("DATABASE_URL", url.as_str())];
    assert_exit(
        &run(&["cleanup"], &env),
        4,
        "cleanup",
        "run `synckit migrate` first",
    );
    assert_exit(
        &run(&["cleanup", "--dry-run"], &env),
        4,
        "cleanup --dry-run",
        "run `synckit migrate` first",
    );
    let status = run(&["migrate", "--status"], &env);
    assert_eq!(status.status.code(), Some(4), "migrate --status");
    let serve = run(
        &["serve"],
        &[("DATABASE_URL", &url), ("SYNCKIT_AUTO_MIGRATE", "false")],
    );
    assert_exit(&serve, 4, "serve without auto-migrate", "synckit migrate");
    let check = run(
        &["check-config"],
        &[("DATABASE_URL", &url), ("SYNCKIT_AUTO_MIGRATE", "false")],
    );
    assert_eq!(check.status.code(), Some(4), "check-config");
    // Once migrated, cleanup runs.
    assert!(run(&["migrate"], &env).status.success());
    let cleaned = run(&["cleanup", "--dry-run"], &env);
    assert!(cleaned.status.success(), "{}", stderr(&cleaned));
}

/// Every key of a JSON value, recursively, except the free-form maps whose keys are
/// data (none in this report).
fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn check_config_json_is_typed_and_camel_case() {
    let out = run(
        &["check-config", "--json"],
        &[("SYNCKIT_AUTH_REQUIRED", "false")],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let resolved = &report["resolved"];
    assert_eq!(resolved["authRequired"], false, "{resolved}");
    assert!(resolved["maxConnectionsPerIp"].is_u64(), "{resolved}");
    assert!(resolved["apiKeys"].is_u64());
    assert!(resolved["autoMigrate"].is_boolean());
    assert!(resolved["corsOrigins"].is_array());
    assert!(
        resolved["adminListen"].is_null(),
        "admin listener off: {resolved}"
    );
    assert!(report["exitCode"].is_u64());
    assert!(report["ok"].is_boolean());
    let mut all = Vec::new();
    keys(&report, &mut all);
    for key in all {
        assert!(
            !key.contains('_') && !key.contains('-'),
            "one key style (camelCase): {key}"
        );
    }
}
