//! The real `synckit console` binary against a live two-instance fleet (one
//! PostgreSQL, Redis pub/sub on the test's own channel prefix): in a pseudo-terminal
//! (80×24) it finds the second instance from the first's `/stats` and presence,
//! agrees with itself on subscriber counts (list and drill-down), keeps an instance
//! stopped mid-test listed as offline with the counts right and shows the event; and
//! `--once` prints every view as text and JSON with exit codes for each source down.

use crate::common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{another, fleet_config, redis_url, start_instance, test_prefix, Instance};
use common::{http, Client};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use synckit::testing::storage::PostgresStorage;

const BIN: &str = env!("CARGO_BIN_EXE_synckit");

fn storage(pool: &PgPool) -> Arc<PostgresStorage> {
    let own = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with((*pool.connect_options()).clone());
    Arc::new(PostgresStorage::from_pool(own, true))
}

/// A subscriber of `doc` on `instance` (writing one field when `write`).
async fn subscriber(instance: &Instance, doc: &str, write: bool) -> Client {
    let mut c = Client::connect(&instance.server, false).await;
    c.send(json!({"type": "subscribe", "documentId": doc}))
        .await;
    c.expect("sync_response").await;
    if write {
        c.send(
            json!({"type": "delta", "documentId": doc, "field": "owner", "value": doc,
                      "clock": {"w": 1}, "clientId": "w", "timestamp": 1, "messageId": "m"}),
        )
        .await;
        c.expect("ack").await;
    }
    c
}

/// Two instances on the test database and Redis, heartbeating every 200 ms:
/// alpha-doc has a subscriber on each, beta-doc one on B.
async fn fleet(pool: &PgPool) -> (String, Instance, Instance, Vec<Client>) {
    let url = redis_url();
    let prefix = test_prefix();
    let config = fleet_config(&prefix);
    let a = start_instance(config.clone(), &url, storage(pool)).await;
    let b = start_instance(another(&config), &url, storage(pool)).await;
    let clients = vec![
        subscriber(&a, "alpha-doc", true).await,
        subscriber(&b, "alpha-doc", false).await,
        subscriber(&b, "beta-doc", true).await,
    ];
    (prefix, a, b, clients)
}

/// The console in a pseudo-terminal, its screen kept by a vt100 emulator.
struct Console {
    screen: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    log: std::path::PathBuf,
}

impl Console {
    fn start(args: &[&str], database_url: &str, redis: &str) -> Console {
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
        cmd.env("REDIS_URL", redis);
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
async fn the_console_shows_a_two_instance_fleet_and_an_instance_that_stops(pool: PgPool) {
    let (prefix, a, b, clients) = fleet(&pool).await;
    let url = common::database_url(&pool);
    let admin = format!("http://{}", a.admin);
    let b_id = b.server.addr.to_string();
    let _ = b_id;
    let redis = redis_url();
    let (to_test, from_test) = std::sync::mpsc::channel::<()>();
    let (to_console, from_console) = std::sync::mpsc::channel::<()>();
    let console = tokio::task::spawn_blocking(move || {
        let mut console = Console::start(
            &[
                "--server",
                &admin,
                "--refresh",
                "250ms",
                "--channel-prefix",
                &prefix,
            ],
            &url,
            &redis,
        );
        // B is found although only A was named: from A's /stats and presence.
        let overview = console.wait_for("both instances up", |s| {
            s.contains("Instances (2)") && s.contains("fleet 2 (2 up)") && s.contains("api 2/2")
        });
        assert!(
            overview.contains("pg up") && overview.contains("redis up"),
            "{overview}"
        );

        // Counts merged across instances: the list and the drill-down agree.
        console.keys("2");
        console.wait_for("alpha-doc with its two subscribers", |s| {
            s.lines()
                .any(|l| l.contains("alpha-doc") && l.contains(" 2 "))
        });
        console.keys("/alpha\r");
        console.wait_for("only alpha-doc", |s| s.contains("Documents 1"));
        console.keys("\r");
        let detail = console.wait_text("Subscribers (2)");
        assert!(detail.contains("\"owner\": \"alpha-doc\""), "{detail}");
        console.keys("\x1b");
        console.wait_text("Documents 1 ");
        console.keys("\x1b");
        console.wait_for("the filter cleared", |s| !s.contains("/alpha"));

        // The command line switches views too.
        console.keys(":sess\t\r");
        console.wait_for("three live sessions", |s| s.contains("Sessions 3 (3 live)"));

        console.keys("7");
        console.wait_for(
            "both instances' events: each saw the other come online",
            |s| s.matches("info  peer_online").count() == 2,
        );
        // Stop B mid-test.
        to_test.send(()).expect("ask the test to stop B");
        from_console.recv().expect("B stopped");
        console.keys(":overview\r");
        let overview = console.wait_for("B listed as offline, its API no longer polled", |s| {
            s.contains("Instances (2)")
                && s.contains("fleet 2 (1 up, 1 offline)")
                && s.contains("offline  -")
                && s.contains("api 1/1")
        });
        assert!(
            !overview.contains("unreachable"),
            "a clean stop is not an outage: {overview}"
        );
        console.keys("2");
        console.keys("/alpha\r");
        console.wait_for("alpha-doc down to one subscriber", |s| {
            s.lines()
                .any(|l| l.contains("alpha-doc") && l.contains(" 1 "))
        });
        console.keys("\x1b");
        console.keys("7");
        console.wait_for("A's events: B came and said goodbye", |s| {
            s.lines()
                .any(|l| l.contains("peer_offline") && l.contains("offline (s"))
                && s.contains("peer_online")
        });
        console.keys("8");
        console.wait_text("Messages in /s");
        // Read-only: no dialog, a notice instead.
        console.keys("6");
        console.wait_text("Jobs (");
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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&console.log)
            .expect("log")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the log file is the owner's only");
        let _ = std::fs::remove_file(&console.log);
    });
    let stop = tokio::task::spawn_blocking(move || from_test.recv());
    stop.await
        .expect("join")
        .expect("the console asks to stop B");
    // B's clients are closed by its shutdown; A's stays.
    assert!(b.stop().await, "B drained");
    to_console.send(()).expect("tell the console");
    console.await.expect("console test");
    drop(clients);
    a.stop().await;
}

/// `synckit console --once` with `args`: its exit code and output.
async fn once(args: &[&str], database_url: &str, redis: &str) -> (i32, String) {
    let log =
        std::env::temp_dir().join(format!("synckit-console-once-{}.log", uuid::Uuid::new_v4()));
    let out = tokio::process::Command::new(BIN)
        .arg("console")
        .arg("--once")
        .args(args)
        .arg("--log-file")
        .arg(&log)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis)
        .output()
        .await
        .expect("run console --once");
    let _ = std::fs::remove_file(&log);
    let code = out.status.code().expect("exit code");
    (code, String::from_utf8(out.stdout).expect("utf-8"))
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[sqlx::test(migrations = "./migrations")]
async fn once_prints_every_view_and_the_whole_fleet_and_says_which_source_is_down(pool: PgPool) {
    let (prefix, a, b, _clients) = fleet(&pool).await;
    let url = common::database_url(&pool);
    let redis = redis_url();
    let admin = format!("http://{}", a.admin);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--channel-prefix".into(), prefix.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: Vec<String>, db: String, redis: String| async move {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        once(&extra, &db, &redis).await
    };

    let (code, text) = run(args(&["--server", &admin]), url.clone(), redis.clone()).await;
    assert_eq!(code, 0, "every source up:\n{text}");
    for heading in [
        "Overview",
        "Documents",
        "Sessions",
        "Awareness",
        "Traffic",
        "Maintenance",
        "Events",
    ] {
        assert!(
            text.contains(&format!("== {heading} ==")),
            "{heading} missing:\n{text}"
        );
    }
    assert!(text.contains("Instances (2)"), "B found from A:\n{text}");
    assert!(text.contains("fleet 2 (2 up)"), "{text}");
    assert!(
        text.contains("alpha-doc") && text.contains("beta-doc"),
        "{text}"
    );
    assert!(text.contains("Sessions 3 (3 live)"), "{text}");
    assert!(!text.contains('\x1b'), "plain text, no escapes");

    let (code, out) = run(
        args(&["--server", &admin, "--format", "json"]),
        url.clone(),
        redis.clone(),
    )
    .await;
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["exitCode"], 0);
    assert_eq!(
        json["sources"]["instances"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(json["sources"]["postgres"]["state"], "up");
    assert_eq!(json["sources"]["redis"]["state"], "up");
    let fleet = json["overview"]["fleet"].as_array().expect("fleet");
    assert_eq!(fleet.len(), 2, "{fleet:?}");
    assert!(
        fleet.iter().all(|m| m["status"] == "up"
            && m["version"] == env!("CARGO_PKG_VERSION")
            && m["host"].is_string()),
        "{fleet:?}"
    );
    let presence = json["overview"]["presence"].as_array().expect("presence");
    assert_eq!(presence.len(), 2, "presence settled: {presence:?}");
    let alpha = json["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .find(|d| d["id"] == "alpha-doc")
        .expect("alpha-doc");
    assert_eq!(alpha["subscribers"], 2, "merged across the fleet");
    assert_eq!(json["sessions"].as_array().map(Vec::len), Some(3));
    assert!(json["maintenance"]["jobs"].is_array());
    let kinds: Vec<&str> = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"peer_online"),
        "A saw B come online: {}",
        json["events"]
    );

    // Each source down, then several: the documented codes.
    let no_db = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let no_redis = format!("redis://127.0.0.1:{}", free_port());
    let no_api = format!("http://127.0.0.1:{}", free_port());
    for (what, server, db, redis_url, expected) in [
        ("PostgreSQL", admin.clone(), no_db.clone(), redis.clone(), 3),
        ("Redis", admin.clone(), url.clone(), no_redis.clone(), 5),
        (
            "an admin API",
            no_api.clone(),
            url.clone(),
            redis.clone(),
            6,
        ),
        (
            "API and PostgreSQL",
            no_api.clone(),
            no_db.clone(),
            redis.clone(),
            7,
        ),
    ] {
        let started = Instant::now();
        let (code, out) = run(
            args(&["--server", &server, "--format", "json"]),
            db,
            redis_url,
        )
        .await;
        assert_eq!(code, expected, "{what} down:\n{out}");
        let json: Value = serde_json::from_str(&out).expect("JSON output");
        assert_eq!(json["exitCode"], expected);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    // Not configured is not down.
    let (code, _) = run(args(&["--server", &admin]), String::new(), String::new()).await;
    assert_eq!(code, 0);

    // An instance stopped cleanly: listed offline by its peer; the fleet's API that
    // answers is up, so 0.
    assert!(b.stop().await);
    // A hears B's goodbye on Redis a moment later (longer on a loaded machine):
    // until then B counts as online and its unanswered API as a source down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = http(a.admin, "GET", "/stats", &[], None).await.json();
        let offline = stats["instances"]
            .as_array()
            .is_some_and(|all| all.iter().any(|i| i["status"] == "offline"));
        if offline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never listed B offline: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out) = run(
        args(&["--server", &admin, "--format", "json"]),
        url.clone(),
        redis.clone(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let json: Value = serde_json::from_str(&out).expect("JSON output");
    let statuses: Vec<&str> = json["overview"]["fleet"]
        .as_array()
        .expect("fleet")
        .iter()
        .filter_map(|m| m["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"up") && statuses.contains(&"offline"),
        "{statuses:?}"
    );
    a.stop().await;
}

/// Sources down for many refreshes log their state once, not every refresh (the
/// Redis tap used to log a WARN per retry).
#[tokio::test]
async fn sources_that_stay_down_are_logged_once() {
    let dead_api = format!("http://127.0.0.1:{}", free_port());
    let dead_db = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let log = tokio::task::spawn_blocking(move || {
        let mut console = Console::start(
            &["--server", &dead_api, "--refresh", "250ms"],
            &dead_db,
            &dead_redis,
        );
        console.wait_for("every source down", |s| {
            s.contains("pg DOWN") && s.contains("redis DOWN") && s.contains("api 0/1")
        });
        // Several refreshes and Redis retries (one a second) while down.
        std::thread::sleep(Duration::from_millis(3500));
        console.keys("q");
        let deadline = Instant::now() + Duration::from_secs(10);
        while console.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "console did not quit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&console.log).expect("log");
        let _ = std::fs::remove_file(&console.log);
        text
    })
    .await
    .expect("console");
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    for source in ["redis", "postgres", "admin "] {
        let n = warns
            .iter()
            .filter(|l| {
                l.contains(&format!("source={source}")) || l.contains(&format!("source=\"{source}"))
            })
            .count();
        assert_eq!(n, 1, "{source} logged once:\n{log}");
    }
    assert_eq!(warns.len(), 3, "nothing else warns:\n{log}");
}
