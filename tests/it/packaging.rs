//! packaging/ stays true to the binary: the environment file example documents every
//! variable the commands the units run accept (read from their `--help`, so a new
//! flag fails here until it is documented), names nothing they do not know, and the
//! unit's stop timeout leaves room for the drain. `systemd-analyze verify` and the
//! .deb's contents are checked by .ci/run (they need the release build).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const ENV_EXAMPLE: &str = "packaging/synckit.env.example";
const UNIT: &str = "packaging/synckit.service";
const CLEANUP_UNIT: &str = "packaging/synckit-cleanup.service";
const ENV_FILE: &str = "/etc/synckit/synckit.env";

/// Commands the units run with the environment file.
const COMMANDS: &[&str] = &["serve", "check-config", "cleanup", "migrate"];

fn help(command: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args([command, "--help"])
        .env_clear()
        .output()
        .expect("run synckit --help");
    assert!(out.status.success(), "synckit {command} --help failed");
    // clap wraps long lines, sometimes inside "[env: NAME=…]": join them back.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `NAME` of every `[env: NAME=value]` / `[env: NAME]` (hidden values) in a help text.
fn env_names(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// Variables the example assigns, commented out (`#NAME=`) or not (`NAME=`).
fn documented(example: &str) -> BTreeSet<String> {
    example
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(name, _)| name)
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn env_example_documents_every_variable() {
    let example = documented(&read(ENV_EXAMPLE));
    let helps: Vec<String> = COMMANDS.iter().map(|c| help(c)).collect();
    let accepted: BTreeSet<String> = helps.iter().flat_map(|h| env_names(h)).collect();
    assert!(accepted.len() > 40, "parsed too few names: {accepted:?}");
    let undocumented: Vec<&String> = accepted.difference(&example).collect();
    assert!(
        undocumented.is_empty(),
        "{ENV_EXAMPLE} does not document {undocumented:?} (listed by `synckit <command> --help`)"
    );
    // Aliases (NODE_ENV, LOG_LEVEL, …) are named in the help text, not as [env: …].
    let unknown: Vec<&String> = example
        .iter()
        .filter(|name| !helps.iter().any(|h| h.contains(name.as_str())))
        .collect();
    assert!(
        unknown.is_empty(),
        "{ENV_EXAMPLE} documents {unknown:?}, which no command's --help mentions"
    );
}

#[test]
fn env_example_is_a_valid_configuration_once_a_secret_is_set() {
    // The example as shipped (production, no secret) must refuse to start...
    let mut env: Vec<(String, String)> = read(ENV_EXAMPLE)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let run = |env: &[(String, String)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
            .args(["check-config", "--json"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run check-config")
    };
    let out = run(&env);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ... and start once the administrator sets JWT_SECRET.
    env.push((
        "JWT_SECRET".into(),
        "an-operator-chosen-secret-of-48-characters-long!".into(),
    ));
    let out = run(&env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
        .trim()
        .to_owned()
}

#[test]
fn unit_stop_timeout_leaves_room_for_the_drain() {
    let unit = read(UNIT);
    let help = help("serve");
    let default = help
        .split("[env: SHUTDOWN_TIMEOUT_MS=] [default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("SHUTDOWN_TIMEOUT_MS default in serve --help");
    let drain = humantime::parse_duration(default).expect("drain default");
    let stop = humantime::parse_duration(&unit_value(&unit, "TimeoutStopSec")).expect("stop");
    assert!(
        stop >= drain + Duration::from_secs(10),
        "TimeoutStopSec {stop:?} must exceed SHUTDOWN_TIMEOUT_MS {drain:?} with room to close"
    );
    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(
        unit_value(&unit, "ExecStartPre"),
        "-/usr/bin/synckit check-config --preflight"
    );
    assert_eq!(unit_value(&unit, "ExecStart"), "/usr/bin/synckit serve");
    let watchdog = humantime::parse_duration(&unit_value(&unit, "WatchdogSec")).expect("watchdog");
    assert!(watchdog >= Duration::from_secs(10), "{watchdog:?}");
}

/// Every value of `key=` in a unit, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// `NAME=value` lines of an environment file (comments and blanks skipped).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The environment systemd gives the unit's commands: its `Environment=` values,
/// then the `EnvironmentFile=` on top (systemd lets the file win whatever the
/// order of the two settings).
fn unit_environment(unit: &str, file: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = unit_values(unit, "Environment")
        .iter()
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in file {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Run one of the unit's command lines (`/usr/bin/synckit …`, a leading `-`
/// dropped) with exactly `env`; its exit code.
fn run_unit_command(command: &str, env: &[(String, String)]) -> (i32, String) {
    let mut words = command.trim_start_matches('-').split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/synckit"), "{command}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
        .args(words)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the unit's command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("exit code"), text)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn units_require_the_env_file_and_default_to_production() {
    let unit = read(UNIT);
    // No "-": a missing env file fails the start instead of starting without it.
    assert_eq!(unit_values(&unit, "EnvironmentFile"), vec![ENV_FILE]);
    assert_eq!(
        unit_values(&read(CLEANUP_UNIT), "EnvironmentFile"),
        vec![ENV_FILE]
    );
    assert!(
        unit_values(&unit, "Environment").contains(&"SYNCKIT_ENV=production".to_owned()),
        "{UNIT} must set SYNCKIT_ENV=production itself"
    );
    // A partial env file (no SYNCKIT_ENV, no JWT_SECRET) is production, so it is
    // refused rather than started on the public development secret.
    let partial = vec![("PORT".to_owned(), "8080".to_owned())];
    let env = unit_environment(&unit, &partial);
    let (code, text) = run_unit_command("/usr/bin/synckit check-config", &env);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("requires JWT_SECRET"), "{text}");
    // The file still decides when it says so explicitly.
    let mut explicit = partial.clone();
    explicit.push(("SYNCKIT_ENV".into(), "development".into()));
    let (code, text) = run_unit_command(
        "/usr/bin/synckit check-config",
        &unit_environment(&unit, &explicit),
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("development only"), "{text}");
}

#[test]
fn unit_preflight_rides_out_backends_and_configuration_errors_are_not_retried() {
    let unit = read(UNIT);
    let pre = unit_value(&unit, "ExecStartPre");
    // The unit ignores the preflight's exit code (RestartPreventExitStatus= only sees
    // the main process's): serve refuses what it refuses itself, with exit 2 for a
    // configuration error, and that code is not retried.
    assert!(pre.starts_with('-'), "{pre}");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert_eq!(unit_value(&unit, "RestartPreventExitStatus"), "2");

    let mut file = env_file(&read(ENV_EXAMPLE));
    file.push((
        "JWT_SECRET".into(),
        "an-operator-chosen-secret-of-48-characters-long!".into(),
    ));
    // Redis and PostgreSQL down: serve would start, so the preflight passes, with
    // warnings saying so.
    file.push((
        "REDIS_URL".into(),
        format!("redis://127.0.0.1:{}", closed_port()),
    ));
    file.push((
        "DATABASE_URL".into(),
        format!("postgres://synckit@127.0.0.1:{}/synckit", closed_port()),
    ));
    file.push(("DB_ACQUIRE_TIMEOUT".into(), "1s".into()));
    // Should serve start after all, it must not take a real port.
    file.push(("PORT".into(), "0".into()));
    file.push(("SYNCKIT_ADMIN_LISTEN".into(), "off".into()));
    let env = unit_environment(&unit, &file);
    let (code, text) = run_unit_command(&pre, &env);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("warning  redis"), "{text}");
    assert!(text.contains("warning  database"), "{text}");

    // A configuration error: the preflight reports it, and serve exits with the code
    // the unit does not retry.
    file.push(("SYNCKIT_DEMO_LOGIN".into(), "true".into()));
    let env = unit_environment(&unit, &file);
    let (code, text) = run_unit_command(&pre, &env);
    assert_eq!(code, 2, "{text}");
    let (code, text) = run_unit_command(&unit_value(&unit, "ExecStart"), &env);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("SYNCKIT_DEMO_LOGIN=true is refused"),
        "{text}"
    );
}
