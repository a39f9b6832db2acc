//! The log as operators read it, from a live `synckit serve`: JSON lines with typed
//! fields (no JSON inside strings, no `Some(…)`), the startup line with plain values,
//! audit lines naming the credential's subject and the remote address, no ANSI codes
//! when stderr is not a terminal — and a closed log pipe never stops SIGTERM from
//! draining the server (its lost lines are counted in /metrics).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::common::{http, spawn_serve_logged};

const API_KEY: &str = "logs-test-api-key-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn sigterm(child: &tokio::process::Child) {
    crate::common::send_signal(child.id().expect("running child"), "TERM");
}

async fn exit_status(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server exits within 20 s of SIGTERM")
        .expect("wait")
}

/// Every field value, recursively: a string must not be JSON text or Debug output.
fn assert_typed(line: &Value, value: &Value) {
    match value {
        Value::String(s) => {
            assert!(!s.starts_with("Some("), "Debug output in {line}");
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                assert!(
                    serde_json::from_str::<Value>(t).is_err(),
                    "JSON inside a string in {line}"
                );
            }
        }
        Value::Object(map) => map.values().for_each(|v| assert_typed(line, v)),
        Value::Array(items) => items.iter().for_each(|v| assert_typed(line, v)),
        _ => {}
    }
}

#[tokio::test]
async fn json_logs_are_typed_and_audit_lines_name_subject_and_remote() {
    let admin_port = free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let (mut child, _server) = spawn_serve_logged(
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("SYNCKIT_ADMIN_LISTEN", &admin_listen),
            ("SYNCKIT_AUTH_APIKEYS", API_KEY),
        ],
        Stdio::piped(),
    )
    .await;
    let admin: std::net::SocketAddr = admin_listen.parse().expect("addr");
    let bearer = format!("Bearer {API_KEY}");
    let ran = http(
        admin,
        "POST",
        "/admin/actions/prune-awareness",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert!(
        ![401, 403].contains(&ran.status),
        "the API key is admin: {ran:?}"
    );
    let refused = http(
        admin,
        "GET",
        "/admin/sessions",
        &[("authorization", "Bearer wrong")],
        None,
    )
    .await;
    assert_eq!(refused.status, 401);
    sigterm(&child);
    let mut raw = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut raw)
        .await
        .expect("read log");
    assert!(exit_status(&mut child).await.success(), "log:\n{raw}");
    assert!(!raw.contains('\u{1b}'), "ANSI codes in a piped log:\n{raw}");

    let lines: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
        assert_typed(line, &line["fields"]);
    }
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message))
            })
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{raw}"))
    };
    let start = &find("listening")["fields"];
    assert_eq!(start["admin"], admin_listen.as_str(), "{start}");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(start["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));

    let audit = &find("admin action: run now")["fields"];
    assert_eq!(audit["subject"], "api-key-user", "{audit}");
    assert_eq!(
        audit["credential"],
        synckit::testing::auth::api_key_label(API_KEY).as_str()
    );
    assert_eq!(audit["remote"], "127.0.0.1");
    let refusal = &find("invalid credential")["fields"];
    assert_eq!(refusal["remote"], "127.0.0.1", "{refusal}");

    let stopped = &find("stopped")["fields"];
    assert_eq!(
        stopped["drained"], true,
        "a boolean, not a string: {stopped}"
    );
}

#[tokio::test]
async fn pretty_logs_to_a_pipe_carry_no_ansi_codes() {
    let (mut child, _server) = spawn_serve_logged(
        &[("LOG_FORMAT", "pretty"), ("RUST_LOG", "info")],
        Stdio::piped(),
    )
    .await;
    sigterm(&child);
    let mut raw = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut raw)
        .await
        .expect("read log");
    exit_status(&mut child).await;
    assert!(raw.contains("listening"), "{raw}");
    assert!(!raw.contains('\u{1b}'), "ANSI codes in a piped log:\n{raw}");
    assert!(
        !raw.contains("Some("),
        "Debug output in the startup line:\n{raw}"
    );
}

/// `synckit serve 2>&1 | head -4`, then SIGTERM: the reader is gone, the server still
/// drains and exits, and the lines it could not write are counted.
#[tokio::test]
async fn sigterm_drains_after_the_log_pipe_closes() {
    let admin_port = free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let (mut child, _server) = spawn_serve_logged(
        &[
            ("RUST_LOG", "info"),
            ("SYNCKIT_ADMIN_LISTEN", &admin_listen),
        ],
        Stdio::piped(),
    )
    .await;
    let admin: std::net::SocketAddr = admin_listen.parse().expect("addr");
    // Read a line, then close the pipe as `head` does.
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .await
        .expect("a first log line");
    drop(reader);
    // Each refused admin request logs a warning, now into a closed pipe.
    for _ in 0..20 {
        let r = http(
            admin,
            "GET",
            "/admin/sessions",
            &[("authorization", "Bearer wrong")],
            None,
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        let metrics = http(admin, "GET", "/metrics", &[], None).await;
        dropped = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("synckit_log_lines_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("synckit_log_lines_dropped_total exported");
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped > 0.0,
        "lines written into a closed pipe are counted"
    );
    sigterm(&child);
    let status = exit_status(&mut child).await;
    assert!(status.success(), "drained and exited cleanly: {status:?}");
}
