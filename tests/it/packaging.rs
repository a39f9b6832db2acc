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
        "/usr/bin/synckit check-config"
    );
    assert_eq!(unit_value(&unit, "ExecStart"), "/usr/bin/synckit serve");
    let watchdog = humantime::parse_duration(&unit_value(&unit, "WatchdogSec")).expect("watchdog");
    assert!(watchdog >= Duration::from_secs(10), "{watchdog:?}");
}
