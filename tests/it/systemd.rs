//! `synckit serve` under a (fake) systemd: READY=1 once listening, WATCHDOG=1 at half
//! of WATCHDOG_USEC, STOPPING=1 when the drain begins — read from a datagram socket
//! given as NOTIFY_SOCKET — and SIGHUP, which is logged and never stops the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A memory-only `synckit serve` on a free loopback port, logging at INFO to a pipe.
fn spawn_serve(env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_synckit"));
    command
        .arg("serve")
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("SYNCKIT_ADMIN_LISTEN", "off")
        .env("SYNCKIT_AUTH_REQUIRED", "false")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("spawn synckit serve");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// GET a path with a bare HTTP/1.1 request; the status line, or None when the
/// server does not answer.
fn http_status(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_owned)
}

fn wait_serving(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http_status(addr, "/health/live").is_some_and(|s| s.contains(" 200")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("synckit serve did not start serving on {addr}");
}

fn signal(child: &Child, name: &str) {
    crate::common::send_signal(child.id(), name);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "synckit serve did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    log
}

/// Receive notifications until one contains `wanted`; every message seen so far.
fn wait_for(socket: &UnixDatagram, wanted: &str, within: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = message.lines().any(|l| l == wanted);
            seen.push(message);
            if found {
                return;
            }
        }
    }
    panic!("no {wanted} within {within:?}; received {seen:?}");
}

#[test]
fn sighup_is_logged_and_the_server_keeps_serving() {
    let (mut child, addr) = spawn_serve(&[]);
    wait_serving(addr);
    for _ in 0..3 {
        signal(&child, "HUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "SIGHUP stopped the server"
    );
    let status = http_status(addr, "/health/ready");
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 200")),
        "not serving after SIGHUP: {status:?}"
    );
    signal(&child, "TERM");
    let exit = wait_exit(&mut child);
    assert!(exit.success(), "exit status {exit:?}");
    let log = stderr_of(&mut child);
    // Signals sent close together may coalesce into one delivery: at least one log
    // line, and the server survived every one of them.
    let logged = log
        .matches("SIGHUP received: configuration reload is not supported")
        .count();
    assert!((1..=3).contains(&logged), "{logged} lines: {log}");
    assert!(log.contains("systemctl restart synckit"), "{log}");
}

#[test]
fn notifies_ready_watchdog_and_stopping() {
    let dir = std::env::temp_dir().join(format!("synckit-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let notify_socket = path.to_string_lossy().into_owned();
    // 400 ms: the server must beat every 200 ms. No WATCHDOG_PID, which
    // sd_watchdog_enabled reads as "this process".
    let (mut child, addr) = spawn_serve(&[
        ("NOTIFY_SOCKET", notify_socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut seen = Vec::new();
    wait_for(&socket, "READY=1", Duration::from_secs(20), &mut seen);
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=listening on 127.0.0.1:")),
        "{seen:?}"
    );
    // READY means listening: the first request must be answered.
    let status = http_status(addr, "/health/live");
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 200")),
        "{status:?}"
    );

    // Several beats within one watchdog interval's worth of time.
    let start = Instant::now();
    let mut beats = 0;
    while beats < 3 {
        wait_for(&socket, "WATCHDOG=1", Duration::from_secs(2), &mut seen);
        beats += 1;
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "watchdog too slow: {:?}",
        start.elapsed()
    );

    signal(&child, "TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10), &mut seen);
    let exit = wait_exit(&mut child);
    assert!(exit.success(), "exit status {exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outside_systemd_nothing_is_required() {
    // No NOTIFY_SOCKET, no WATCHDOG_USEC: serve starts and stops as before, and a
    // NOTIFY_SOCKET pointing nowhere is logged, not fatal.
    let (mut child, addr) = spawn_serve(&[("NOTIFY_SOCKET", "/nonexistent/notify.sock")]);
    wait_serving(addr);
    signal(&child, "TERM");
    let exit = wait_exit(&mut child);
    assert!(exit.success(), "exit status {exit:?}");
    let log = stderr_of(&mut child);
    assert!(
        log.contains("could not notify the service manager"),
        "{log}"
    );
}
