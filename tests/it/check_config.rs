//! `synckit check-config` as a unit's ExecStartPre sees it: one exit code per kind
//! of problem (0 ok, 2 invalid configuration, 3 database unreachable, 4 schema not
//! current, 5 Redis unreachable), against the real PostgreSQL (a fresh database per
//! test) and Redis, and closed ports for the unreachable cases. Secrets never appear
//! in the output.

use crate::common;

use std::process::Output;

use serde_json::Value;
use sqlx::PgPool;

const SECRET: &str = "s3cret-jwt-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Run check-config with exactly `env` (a clean environment: the test runner's
/// DATABASE_URL and REDIS_URL must not leak in).
fn check_config(env: &[(&str, &str)], json: bool) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"));
    command.arg("check-config").env_clear();
    if json {
        command.arg("--json");
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run synckit check-config")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

#[test]
fn memory_only_configuration_is_ok() {
    let out = check_config(&[("JWT_SECRET", SECRET)], false);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("configuration OK"), "{shown}");
    assert!(shown.contains("JWT_SECRET"), "{shown}");
    assert!(!shown.contains(SECRET), "secret printed: {shown}");
}

#[test]
fn invalid_configuration_exits_2() {
    // Production without a secret: to_config refuses.
    let out = check_config(&[("SYNCKIT_ENV", "production")], true);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let r = report(&out);
    assert_eq!(r["exitCode"], 2);
    let c = check(&r, "configuration");
    assert_eq!(c["status"], "failed");
    assert!(
        c["detail"].as_str().expect("detail").contains("JWT_SECRET"),
        "{c}"
    );

    // A value clap itself rejects: same code, clap's message.
    let out = check_config(&[("SYNCKIT_AUTH_REQUIRED", "maybe")], false);
    assert_eq!(code(&out), 2, "{}", text(&out));

    // A bad log filter and a postgres awareness store without a database are what
    // serve would refuse too.
    let out = check_config(&[("LOG_FORMAT", "xml")], true);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let out = check_config(&[("SYNCKIT_AWARENESS_STORE", "postgres")], true);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let out = check_config(&[("REDIS_URL", "http://cache")], true);
    assert_eq!(code(&out), 2, "{}", text(&out));
    // A maintenance schedule serve could not parse.
    let out = check_config(&[("SYNCKIT_CLEANUP_SCHEDULE", "61 * * * *")], true);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let r = report(&out);
    let detail = check(&r, "configuration")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(detail.contains("SYNCKIT_CLEANUP_SCHEDULE"), "{detail}");
}

#[test]
fn unreachable_database_exits_3() {
    let url = format!(
        "postgres://postgres:pw-not-shown@127.0.0.1:{}/x",
        closed_port()
    );
    let out = check_config(
        &[("DATABASE_URL", &url), ("DB_ACQUIRE_TIMEOUT", "2s")],
        true,
    );
    assert_eq!(code(&out), 3, "{}", text(&out));
    let r = report(&out);
    assert_eq!(check(&r, "database")["status"], "failed");
    assert_eq!(check(&r, "schema")["status"], "skipped");
    assert!(!text(&out).contains("pw-not-shown"), "{}", text(&out));
}

#[sqlx::test(migrations = false)]
async fn fresh_database_without_auto_migrate_exits_4(pool: PgPool) {
    let url = common::database_url(&pool);
    let out = check_config(
        &[("DATABASE_URL", &url), ("SYNCKIT_AUTO_MIGRATE", "false")],
        true,
    );
    assert_eq!(code(&out), 4, "{}", text(&out));
    let r = report(&out);
    assert_eq!(check(&r, "database")["status"], "ok");
    let schema = check(&r, "schema");
    assert_eq!(schema["status"], "failed");
    assert!(
        schema["detail"]
            .as_str()
            .expect("detail")
            .contains("synckit migrate"),
        "{schema}"
    );
}

#[sqlx::test(migrations = false)]
async fn fresh_database_with_auto_migrate_is_ok_with_a_warning(pool: PgPool) {
    // serve applies pending migrations at start: not a reason to refuse it.
    let url = common::database_url(&pool);
    let out = check_config(&[("DATABASE_URL", &url)], true);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(check(&report(&out), "schema")["status"], "warning");
}

#[sqlx::test(migrations = "./migrations")]
async fn migrated_database_is_current(pool: PgPool) {
    let url = common::database_url(&pool);
    let out = check_config(
        &[
            ("DATABASE_URL", &url),
            ("SYNCKIT_AUTO_MIGRATE", "false"),
            ("JWT_SECRET", SECRET),
        ],
        true,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let r = report(&out);
    assert_eq!(r["ok"], true);
    assert_eq!(check(&r, "schema")["status"], "ok");
    assert_eq!(check(&r, "configuration")["status"], "ok");
    // serve's jobs with their schedules; cleanup runs daily at 03:00 UTC by default.
    let jobs = r["maintenance"].as_array().expect("maintenance");
    let cleanup = jobs
        .iter()
        .find(|j| j["job"] == "cleanup")
        .expect("cleanup job");
    assert_eq!(cleanup["schedule"], "0 3 * * *");
    assert!(
        cleanup["nextRun"]
            .as_str()
            .expect("next run")
            .ends_with("T03:00:00Z"),
        "{cleanup}"
    );
    assert!(
        r["resolved"]["storage"]
            .as_str()
            .expect("storage")
            .starts_with("postgres "),
        "{r}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn migrations_from_a_newer_binary_exit_4_with_auto_migrate(pool: PgPool) {
    // sqlx refuses to migrate a database that has migrations it does not know, so
    // serve with SYNCKIT_AUTO_MIGRATE=true would not start.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000000, 'from the future', true, '\\x00'::bytea, 0)",
    )
    .execute(&pool)
    .await
    .expect("insert");
    let url = common::database_url(&pool);
    let out = check_config(&[("DATABASE_URL", &url)], true);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let out = check_config(
        &[("DATABASE_URL", &url), ("SYNCKIT_AUTO_MIGRATE", "false")],
        true,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(check(&report(&out), "schema")["status"], "warning");
}

#[test]
fn reachable_redis_is_ok_and_unreachable_exits_5() {
    let out = check_config(&[("REDIS_URL", &redis_url())], true);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(check(&report(&out), "redis")["status"], "ok");

    let url = format!("redis://:pw-not-shown@127.0.0.1:{}", closed_port());
    let out = check_config(&[("REDIS_URL", &url)], true);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert_eq!(check(&report(&out), "redis")["status"], "failed");
    assert!(!text(&out).contains("pw-not-shown"), "{}", text(&out));

    // Something that is not Redis answers differently: a closed HTTP-ish peer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let peer = std::thread::spawn(move || {
        // Accept and hang up without a word.
        let _ = listener.accept();
    });
    let out = check_config(&[("REDIS_URL", &format!("redis://127.0.0.1:{port}"))], true);
    assert_eq!(code(&out), 5, "{}", text(&out));
    peer.join().expect("peer");
}

#[test]
fn the_smallest_failing_code_wins() {
    let db = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let out = check_config(
        &[
            ("DATABASE_URL", &db),
            ("DB_ACQUIRE_TIMEOUT", "2s"),
            ("REDIS_URL", &redis),
        ],
        true,
    );
    assert_eq!(code(&out), 3, "{}", text(&out));
    let r = report(&out);
    assert_eq!(check(&r, "redis")["status"], "failed");

    let out = check_config(
        &[("SYNCKIT_ENV", "production"), ("REDIS_URL", &redis)],
        true,
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    // Connectivity is still reported, so one run lists everything to fix.
    assert_eq!(check(&report(&out), "redis")["status"], "failed");
}

#[test]
fn secrets_are_redacted_and_sources_shown() {
    let db = format!(
        "postgres://app:db-pass-not-shown@127.0.0.1:{}/synckit",
        closed_port()
    );
    let out = check_config(
        &[
            ("JWT_SECRET", SECRET),
            (
                "SYNCKIT_AUTH_APIKEYS",
                "key-one-not-shown,key-two-not-shown",
            ),
            ("DATABASE_URL", &db),
            ("DB_ACQUIRE_TIMEOUT", "1s"),
            ("PORT", "9000"),
        ],
        true,
    );
    let all = text(&out);
    for secret in [
        SECRET,
        "key-one-not-shown",
        "key-two-not-shown",
        "db-pass-not-shown",
    ] {
        assert!(!all.contains(secret), "{secret} printed: {all}");
    }
    let r = report(&out);
    let setting = |name: &str| {
        r["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no setting {name}"))
            .clone()
    };
    assert_eq!(setting("PORT")["value"], "9000");
    assert_eq!(setting("PORT")["source"], "env");
    assert_eq!(setting("HOST")["source"], "default");
    assert_eq!(setting("JWT_SECRET")["value"], "<redacted, 48 characters>");
    assert_eq!(
        setting("SYNCKIT_AUTH_APIKEYS")["value"],
        "<redacted, 2 values>"
    );
    assert!(
        setting("DATABASE_URL")["value"]
            .as_str()
            .expect("url")
            .starts_with("postgres://app:***@127.0.0.1:"),
        "{r}"
    );
    assert_eq!(setting("JWT_ISSUER")["source"], "unset");

    // Flags win over the environment and say so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["check-config", "--json", "--port", "9001"])
        .env_clear()
        .env("PORT", "9000")
        .output()
        .expect("run");
    let r = report(&out);
    let port = r["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["name"] == "PORT")
        .expect("PORT")
        .clone();
    assert_eq!(
        (port["value"].as_str(), port["source"].as_str()),
        (Some("9001"), Some("flag"))
    );
    assert_eq!(r["resolved"]["listen"], "0.0.0.0:9001");
}

/// `synckit serve` with exactly `env`: its exit code and stderr, or a panic when it
/// is still running after 10 s (it started instead of refusing).
fn serve_refusal(env: &[(&str, &str)]) -> (i32, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .arg("serve")
        .env_clear()
        .envs([("PORT", "0"), ("SYNCKIT_ADMIN_LISTEN", "off")])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read stderr");
            return (status.code().expect("exit code"), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with {env:?} instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn production_refuses_demo_login_test_mode_and_open_auth() {
    let production = [("SYNCKIT_ENV", "production"), ("JWT_SECRET", SECRET)];
    for (setting, value, says) in [
        (
            "SYNCKIT_DEMO_LOGIN",
            "true",
            "SYNCKIT_DEMO_LOGIN=true is refused",
        ),
        (
            "SYNCKIT_TEST_MODE",
            "true",
            "SYNCKIT_TEST_MODE=true is refused",
        ),
        (
            "SYNCKIT_AUTH_REQUIRED",
            "false",
            "SYNCKIT_ALLOW_NO_AUTH_IN_PRODUCTION=true",
        ),
    ] {
        let mut env = production.to_vec();
        env.push((setting, value));
        let out = check_config(&env, true);
        assert_eq!(code(&out), 2, "{setting}: {}", text(&out));
        let r = report(&out);
        let c = check(&r, "configuration");
        assert_eq!(c["status"], "failed", "{c}");
        assert!(c["detail"].as_str().expect("detail").contains(says), "{c}");
        let (exit, err) = serve_refusal(&env);
        assert_eq!(exit, 2, "serve with {setting}: {err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }

    // Every refusal at once, the missing secret included: one run lists them all.
    let out = check_config(
        &[
            ("SYNCKIT_ENV", "production"),
            ("SYNCKIT_DEMO_LOGIN", "true"),
            ("SYNCKIT_TEST_MODE", "true"),
            ("SYNCKIT_AUTH_REQUIRED", "false"),
        ],
        false,
    );
    assert_eq!(code(&out), 2, "{}", text(&out));
    let shown = text(&out);
    for says in [
        "requires JWT_SECRET",
        "SYNCKIT_DEMO_LOGIN=true is refused",
        "SYNCKIT_TEST_MODE=true is refused",
        "SYNCKIT_AUTH_REQUIRED=false is refused",
    ] {
        assert!(shown.contains(says), "{says}: {shown}");
    }

    // Outside production the same settings are valid, and named as risks.
    let out = check_config(
        &[
            ("SYNCKIT_DEMO_LOGIN", "true"),
            ("SYNCKIT_AUTH_REQUIRED", "false"),
        ],
        true,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let environment = check(&report(&out), "environment").clone();
    assert_eq!(environment["status"], "warning", "{environment}");
    let detail = environment["detail"].as_str().expect("detail");
    assert!(detail.contains("demo login"), "{detail}");
    assert!(detail.contains("authentication is disabled"), "{detail}");
}

#[test]
fn production_without_auth_starts_only_when_acknowledged() {
    let env = [
        ("SYNCKIT_ENV", "production"),
        ("JWT_SECRET", SECRET),
        ("SYNCKIT_AUTH_REQUIRED", "false"),
        ("SYNCKIT_ALLOW_NO_AUTH_IN_PRODUCTION", "true"),
    ];
    let out = check_config(&env, true);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let r = report(&out);
    let environment = check(&r, "environment");
    assert_eq!(environment["status"], "warning", "{environment}");
    assert!(
        environment["detail"]
            .as_str()
            .expect("detail")
            .contains("anonymous"),
        "{environment}"
    );
    // The flag does the same as the variable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args([
            "check-config",
            "--json",
            "--allow-no-auth-in-production",
            "--auth-required=false",
        ])
        .env_clear()
        .envs([("SYNCKIT_ENV", "production"), ("JWT_SECRET", SECRET)])
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", text(&out));
    // A strong production configuration is ok throughout.
    let out = check_config(
        &[("SYNCKIT_ENV", "production"), ("JWT_SECRET", SECRET)],
        true,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(check(&report(&out), "environment")["status"], "ok");
}

#[test]
fn an_empty_environment_is_development_and_says_so() {
    let out = check_config(&[], false);
    // Valid (a developer's laptop), but never silently production-ready.
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("configuration OK for development only"),
        "{shown}"
    );
    assert!(shown.contains("public development secret"), "{shown}");
    let out = check_config(&[], true);
    let r = report(&out);
    assert_eq!(r["resolved"]["environment"], "development");
    assert_eq!(check(&r, "environment")["status"], "warning");
}

/// `check-config --preflight` (the unit's ExecStartPre): fails only where serve
/// would refuse to start.
fn preflight(env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(["check-config", "--preflight", "--json"])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run check-config --preflight")
}

#[test]
fn preflight_warns_about_an_unreachable_redis() {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let out = preflight(&[("JWT_SECRET", SECRET), ("REDIS_URL", &redis)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let r = report(&out);
    let c = check(&r, "redis");
    assert_eq!(c["status"], "warning", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .expect("detail")
            .contains("serve starts without it"),
        "{c}"
    );
    // Without --preflight the same Redis is still exit 5.
    let out = check_config(&[("JWT_SECRET", SECRET), ("REDIS_URL", &redis)], true);
    assert_eq!(code(&out), 5, "{}", text(&out));
}

#[test]
fn preflight_treats_postgres_as_serve_does() {
    // Not answering: serve starts from memory and retries, so only a warning.
    let db = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
    let out = preflight(&[("DATABASE_URL", &db), ("DB_ACQUIRE_TIMEOUT", "1s")]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let r = report(&out);
    assert_eq!(check(&r, "database")["status"], "warning", "{r}");
    assert_eq!(check(&r, "schema")["status"], "skipped");

    // Answering but refusing for good (no such database): serve refuses to start
    // (exit 3), and so does the preflight.
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (server, _) = base.rsplit_once('/').expect("a database in DATABASE_URL");
    let missing = format!("{server}/synckit_no_such_database_here");
    let out = preflight(&[("DATABASE_URL", &missing), ("DB_ACQUIRE_TIMEOUT", "2s")]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(check(&report(&out), "database")["status"], "failed");

    // And a configuration error is one in any mode.
    let out = preflight(&[("SYNCKIT_ENV", "production")]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}
