//! The real `synckit console` binary against a live server on PostgreSQL: in a
//! pseudo-terminal (80×24) it switches views, filters, drills into a document, opens
//! the help and quits, while the test reads the screen through a terminal emulator;
//! and `--once` prints every view as text and as JSON.

use crate::common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{open_config, start_with, Client, TestServer};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use synckit::awareness::MemoryAwarenessStore;
use synckit::pubsub::LocalPubSub;
use synckit::server::Backends;
use synckit::storage::PostgresStorage;

const BIN: &str = env!("CARGO_BIN_EXE_synckit");

/// A server on the test database with two documents, each with a live subscriber.
async fn live_server(pool: &PgPool) -> (TestServer, std::net::SocketAddr, Vec<Client>) {
    let config = open_config();
    let own = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with((*pool.connect_options()).clone());
    let backends = Backends {
        storage: Arc::new(PostgresStorage::from_pool(own, true)),
        awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
        pubsub: Arc::new(LocalPubSub::single_instance()),
    };
    let (server, admin) = start_with(config, backends, true).await;
    let mut clients = Vec::new();
    for doc in ["alpha-doc", "beta-doc"] {
        let mut c = Client::connect(&server, false).await;
        c.send(json!({"type": "subscribe", "documentId": doc}))
            .await;
        c.expect("sync_response").await;
        c.send(
            json!({"type": "delta", "documentId": doc, "field": "owner", "value": doc,
                      "clock": {"w": 1}, "clientId": "w", "timestamp": 1, "messageId": "m"}),
        )
        .await;
        c.expect("ack").await;
        clients.push(c);
    }
    (server, admin.expect("admin"), clients)
}

/// The console in a pseudo-terminal, its screen kept by a vt100 emulator.
struct Console {
    screen: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    log: std::path::PathBuf,
}

impl Console {
    fn start(args: &[&str], database_url: &str) -> Console {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("pty");
        let log =
            std::env::temp_dir().join(format!("synckit-console-e2e-{}.log", uuid::Uuid::new_v4()));
        let mut cmd = CommandBuilder::new(BIN);
        cmd.arg("console");
        cmd.args(args);
        cmd.arg("--log-file");
        cmd.arg(&log);
        cmd.env("DATABASE_URL", database_url);
        cmd.env("REDIS_URL", "");
        cmd.env("TERM", "xterm-256color");
        let child = pair.slave.spawn_command(cmd).expect("spawn console");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let writer = pair.master.take_writer().expect("writer");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(24, 80, 0)));
        let feed = screen.clone();
        std::thread::spawn(move || {
            let _master = pair.master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().expect("screen").process(&buf[..n]);
            }
        });
        Console {
            screen,
            writer,
            child,
            log,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().expect("screen").screen().contents()
    }

    /// Wait until the screen satisfies `ok`; panics with the screen otherwise.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.contents();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, |s| s.contains(text))
    }

    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("type");
        self.writer.flush().expect("flush");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn the_console_runs_in_a_terminal_against_a_live_server(pool: PgPool) {
    let (server, admin, _clients) = live_server(&pool).await;
    let url = common::database_url(&pool);
    let admin = format!("http://{admin}");
    let console = tokio::task::spawn_blocking(move || {
        let mut console = Console::start(&["--server", &admin, "--refresh", "250ms"], &url);
        let overview = console.wait_for("the overview with one instance up", |s| {
            s.contains("Instances (1)") && s.contains("api 1/1") && s.contains("pg up")
        });
        assert!(overview.contains("1 Overview"), "{overview}");
        assert!(
            overview.contains("redis off"),
            "Redis not configured: {overview}"
        );

        console.keys("2");
        console.wait_for("both documents", |s| {
            s.contains("alpha-doc") && s.contains("beta-doc")
        });
        console.keys("/beta\r");
        let filtered = console.wait_for("only beta-doc", |s| {
            s.contains("beta-doc") && !s.contains("alpha-doc")
        });
        assert!(
            filtered.contains("/beta"),
            "the filter shows in the status line: {filtered}"
        );
        console.keys("\r");
        let detail = console.wait_text("Vector clock");
        assert!(detail.contains("\"owner\": \"beta-doc\""), "{detail}");
        console.keys("\x1b");
        console.wait_text("Documents 1");

        console.keys("3");
        console.wait_for("two live sessions", |s| s.contains("Sessions 2 (2 live)"));
        console.keys("\t");
        console.wait_text("Awareness:");
        console.keys("6");
        console.wait_text("Jobs (");
        console.keys("d");
        // Read-only: no dialog, a notice instead.
        console.keys("c");
        console.wait_text("--allow-actions");
        console.keys("?");
        console.wait_text("Keys · ? or Esc closes");
        console.keys("?");
        console.wait_for("help closed", |s| !s.contains("Keys · ? or Esc closes"));
        console.keys("q");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = console.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "console did not quit");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
        let log = std::fs::read_to_string(&console.log).expect("log file");
        assert!(
            log.contains("console starting"),
            "logs go to the file: {log}"
        );
        let _ = std::fs::remove_file(&console.log);
    });
    console.await.expect("console test");
    server.shutdown.cancel();
}

async fn once(args: &[&str], database_url: &str) -> String {
    let log =
        std::env::temp_dir().join(format!("synckit-console-once-{}.log", uuid::Uuid::new_v4()));
    let out = tokio::process::Command::new(BIN)
        .arg("console")
        .arg("--once")
        .args(args)
        .arg("--log-file")
        .arg(&log)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", "")
        .output()
        .await
        .expect("run console --once");
    let _ = std::fs::remove_file(&log);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[sqlx::test(migrations = "./migrations")]
async fn once_prints_every_view_as_text_and_json(pool: PgPool) {
    let (server, admin, _clients) = live_server(&pool).await;
    let url = common::database_url(&pool);
    let admin = format!("http://{admin}");

    let text = once(&["--server", &admin], &url).await;
    for heading in [
        "Overview",
        "Documents",
        "Sessions",
        "Awareness",
        "Traffic",
        "Maintenance",
    ] {
        assert!(
            text.contains(&format!("== {heading} ==")),
            "{heading} missing:\n{text}"
        );
    }
    assert!(
        text.contains("alpha-doc") && text.contains("beta-doc"),
        "{text}"
    );
    assert!(text.contains("Sessions 2 (2 live)"), "{text}");
    assert!(!text.contains('\x1b'), "plain text, no escapes");

    let json: Value =
        serde_json::from_str(&once(&["--server", &admin, "--format", "json"], &url).await)
            .expect("JSON output");
    assert_eq!(json["sources"]["instances"][0]["state"]["state"], "up");
    assert_eq!(json["sources"]["postgres"]["state"], "up");
    assert_eq!(json["sources"]["redis"]["state"], "off");
    let ids: Vec<&str> = json["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"alpha-doc") && ids.contains(&"beta-doc"),
        "{ids:?}"
    );
    assert_eq!(json["documents"][0]["subscribers"], 1);
    assert_eq!(json["sessions"].as_array().map(Vec::len), Some(2));
    assert!(json["maintenance"]["jobs"].is_array());

    // With the server gone, --once still answers and says so.
    server.shutdown.cancel();
    let _ = server.done.await;
    let json: Value =
        serde_json::from_str(&once(&["--server", &admin, "--format", "json"], &url).await)
            .expect("JSON output");
    assert_eq!(json["sources"]["instances"][0]["state"]["state"], "down");
    assert_eq!(json["sources"]["postgres"]["state"], "up");
}
