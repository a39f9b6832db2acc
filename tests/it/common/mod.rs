//! Test harness: an in-process server on 127.0.0.1:0 and a tiny protocol client.
#![allow(dead_code)]

pub mod exposition;
pub mod proxy;
pub mod redis;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use synckit::server::{Backends, Server, ServerConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<bool>,
}

pub async fn start(config: ServerConfig) -> TestServer {
    let backends = Backends::in_memory(&config);
    start_on(config, backends).await
}

/// Start a server on the given backends (PostgreSQL tests).
pub async fn start_on(config: ServerConfig, backends: Backends) -> TestServer {
    run_server(Server::new(config, backends)).await
}

/// Run `server` on a free loopback port until the returned shutdown is cancelled.
pub async fn run_server(server: Server) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let done = tokio::spawn(server.run(listener, None, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        done,
    }
}

/// A watcher subscribed to the awareness of "room", and alice, whose presence
/// (`{"name": "Alice"}`, clock 1) has reached the watcher; the join is returned.
pub async fn alice_joins_room(server: &TestServer) -> (Client, Client, Value) {
    let mut watcher = Client::connect(server, false).await;
    watcher
        .send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    watcher.expect("awareness_state").await;
    let mut alice = Client::connect(server, false).await;
    alice
        .send(
            json!({"type":"awareness_update","documentId":"room","clientId":"alice",
                     "state":{"name":"Alice"},"clock":1}),
        )
        .await;
    let joined = watcher.expect("awareness_update").await;
    (watcher, alice, joined)
}

pub fn open_config() -> ServerConfig {
    ServerConfig::for_tests(false)
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub binary: bool,
}

/// Encode a binary frame: code, BE timestamp, BE length, JSON payload.
pub fn frame(code: u8, payload: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(payload).expect("json");
    let mut out = vec![code];
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn code_name(code: u8) -> &'static str {
    match code {
        0x02 => "auth_success",
        0x03 => "auth_error",
        0x13 => "sync_response",
        0x15 => "sync_step2",
        0x20 => "delta",
        0x21 => "ack",
        0x31 => "pong",
        0x40 => "awareness_update",
        0x42 => "awareness_state",
        0x50 => "delta_batch",
        0xFF => "error",
        _ => "unknown",
    }
}

impl Client {
    pub async fn connect(server: &TestServer, binary: bool) -> Client {
        Self::connect_path(server, "/ws", binary).await
    }

    pub async fn connect_path(server: &TestServer, path: &str, binary: bool) -> Client {
        let url = format!("ws://{}{}", server.addr, path);
        // Like a browser, no frame limit of its own: text states come in one frame.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
            .await
            .expect("connect");
        Client { ws, binary }
    }

    /// Send a logical message in this client's encoding.
    pub async fn send(&mut self, msg: Value) {
        if self.binary {
            let code = match msg["type"].as_str().expect("type") {
                "auth" => 0x01,
                "subscribe" => 0x10,
                "unsubscribe" => 0x11,
                "sync_request" => 0x12,
                "sync_step1" => 0x14,
                "delta" => 0x20,
                "ack" => 0x21,
                "delta_batch_chunk" => 0x23,
                "ping" => 0x30,
                "pong" => 0x31,
                "awareness_update" => 0x40,
                "awareness_subscribe" => 0x41,
                "delta_batch" => 0x50,
                "error" => 0xFF,
                other => panic!("no code for {other}"),
            };
            let mut payload = msg.clone();
            if let Some(m) = payload.as_object_mut() {
                m.remove("type");
            }
            self.ws
                .send(Message::Binary(frame(code, &payload).into()))
                .await
                .expect("send");
        } else {
            self.ws
                .send(Message::Text(msg.to_string().into()))
                .await
                .expect("send");
        }
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Next data message as a logical JSON object (with `type`), or None on close.
    pub async fn recv_timeout(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match next.ok()? {
                Message::Binary(b) => {
                    assert!(self.binary, "binary frame sent to a JSON-mode client");
                    assert!(b.len() >= 13, "short frame");
                    let len = u32::from_be_bytes([b[9], b[10], b[11], b[12]]) as usize;
                    let mut v: Value =
                        serde_json::from_slice(&b[13..13 + len]).expect("payload json");
                    assert!(
                        v.get("type").is_none(),
                        "binary payload must not carry type"
                    );
                    v["type"] = json!(code_name(b[0]));
                    return Some(v);
                }
                Message::Text(t) => {
                    assert!(!self.binary, "text frame sent to a binary-mode client");
                    return Some(serde_json::from_str(&t).expect("json"));
                }
                Message::Close(f) => {
                    return Some(
                        json!({"type": "__close", "code": f.as_ref().map(|f| u16::from(f.code)), "reason": f.map(|f| f.reason.to_string())}),
                    )
                }
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_timeout(Duration::from_secs(5))
            .await
            .expect("a message within 5 s")
    }

    /// Receive until a message of `ty` arrives (others are skipped).
    pub async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == ty {
                return m;
            }
            assert_ne!(m["type"], "__close", "closed while waiting for {ty}: {m}");
        }
    }

    /// Assert nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(m) = self.recv_timeout(wait).await {
            panic!("expected silence, got {m}");
        }
    }
}

// ---------------------------------------------------------------------------
// Auth, HTTP and admission helpers (wire_auth.rs, http.rs, wire_limits.rs).

/// The JWT secret of `ServerConfig::for_tests`.
pub const TEST_SECRET: &str = "test-secret-for-synckit-tests-0123456789";

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Sign `claims` with `alg` and `secret`.
pub fn jwt_with(alg: jsonwebtoken::Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// An HS256 token signed with the test secret.
pub fn jwt(claims: &Value) -> String {
    jwt_with(jsonwebtoken::Algorithm::HS256, claims, TEST_SECRET)
}

/// A TS-style access token (`userId`, `permissions`, `exp` in an hour).
pub fn user_token(user: &str, can_read: &[&str], can_write: &[&str], is_admin: bool) -> String {
    jwt(&json!({
        "userId": user,
        "permissions": {"canRead": can_read, "canWrite": can_write, "isAdmin": is_admin},
        "iat": now_secs(),
        "exp": now_secs() + 3600,
    }))
}

/// Start a server with the given backends and, optionally, an admin listener (whose
/// address the server then announces in its heartbeats, as `serve` does).
pub async fn start_with(
    mut config: ServerConfig,
    backends: Backends,
    with_admin: bool,
) -> (TestServer, Option<std::net::SocketAddr>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (admin, admin_addr) = if with_admin {
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let a = admin.local_addr().expect("admin addr");
        config.admin_listen.get_or_insert(a);
        (Some(admin), Some(a))
    } else {
        (None, None)
    };
    let shutdown = CancellationToken::new();
    let server = Server::new(config, backends);
    let done = tokio::spawn(server.run(listener, admin, shutdown.clone()));
    (
        TestServer {
            addr,
            shutdown,
            done,
        },
        admin_addr,
    )
}

/// Start an in-memory server with an admin listener; returns the admin address.
pub async fn start_with_admin(config: ServerConfig) -> (TestServer, std::net::SocketAddr) {
    let backends = Backends::in_memory(&config);
    let (server, admin) = start_with(config, backends, true).await;
    (server, admin.expect("admin listener"))
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    try_http(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`http`] but an I/O failure (e.g. connection refused) is an `Err`. Sent
/// through the server's own HTTP client (`synckit::console::feed::http`).
pub async fn try_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    use synckit::console::feed::http::{send, HttpError};
    let reply = send(
        &addr.to_string(),
        method,
        path,
        headers,
        body,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| match e {
        HttpError::Timeout => std::io::Error::new(std::io::ErrorKind::TimedOut, "http timeout"),
        other => std::io::Error::other(other.to_string()),
    })?;
    Ok(HttpResponse {
        status: reply.status,
        headers: reply.headers,
        body: String::from_utf8(reply.body.to_vec()).expect("utf-8 body"),
    })
}

/// Open a WebSocket with extra request headers; the handshake error (e.g. an HTTP
/// 503 refusal) is returned instead of panicking.
pub async fn try_connect_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    binary: bool,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Client { ws, binary })
}

impl Client {
    /// Connect as if from `ip` (the test config trusts `X-Forwarded-For`).
    pub async fn connect_from(server: &TestServer, ip: &str, binary: bool) -> Client {
        try_connect_with(server.addr, "/ws", &[("x-forwarded-for", ip)], binary)
            .await
            .expect("connect")
    }

    /// Expect the next message to be a close frame with this code and reason.
    pub async fn expect_close(&mut self, code: u16, reason: &str) {
        let m = self.recv().await;
        assert_eq!(m["type"], "__close", "expected a close frame, got {m}");
        assert_eq!(m["code"], code, "close code: {m}");
        assert_eq!(m["reason"], reason, "close reason: {m}");
    }

    /// Ping and wait for the pong: proves the connection is open and usable.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping"})).await;
        let m = self.recv().await;
        assert_eq!(m["type"], "pong", "expected pong, got {m}");
    }
}

// ---------------------------------------------------------------------------
// Sync and awareness helpers (wire_sync.rs, wire_awareness.rs).

impl Client {
    /// Receive until every type in `types` has arrived at least once; returns every
    /// message received meanwhile (including those), in order.
    pub async fn collect_until(&mut self, types: &[&str]) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        while !types.iter().all(|t| out.iter().any(|m| m["type"] == *t)) {
            let m = self.recv().await;
            assert_ne!(
                m["type"], "__close",
                "closed while waiting for {types:?}: {m}"
            );
            out.push(m);
        }
        out
    }

    /// Send `ping` and return every message that arrived before its `pong`. Replies
    /// and broadcasts caused by this connection's earlier messages are queued before
    /// the pong, so a missing one here was never sent.
    pub async fn messages_before_pong(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping"})).await;
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            assert_ne!(m["type"], "__close", "closed before pong: {m}");
            if m["type"] == "pong" {
                return out;
            }
            out.push(m);
        }
    }

    /// Send a close frame and wait until the server's close (or EOF) arrives.
    pub async fn close_and_wait(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
            if m.is_err() {
                break;
            }
        }
    }
}

/// Messages of type `ty` in `messages`.
pub fn of_type<'a>(messages: &'a [Value], ty: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == ty).collect()
}

/// Subscribe and return the `sync_response`.
pub async fn subscribe(c: &mut Client, doc: &str) -> Value {
    c.send(json!({"type":"subscribe","documentId":doc})).await;
    let m = c.expect("sync_response").await;
    assert_eq!(m["documentId"], doc);
    m
}

/// A Fugue text state as the SDK's WASM `toJSON` produces it.
pub fn fugue(client: &str, text: &str) -> String {
    let mut t = synckit_core::crdt::FugueText::new(client.to_owned());
    t.insert(0, text).expect("insert");
    serde_json::to_string(&t).expect("serialize")
}

/// The text of a Fugue state.
pub fn text_of(state: &Value) -> String {
    serde_json::from_str::<synckit_core::crdt::FugueText>(state.as_str().expect("state string"))
        .expect("a Fugue state")
        .to_string()
}

/// PostgreSQL storage on its own pool to `pool`'s database: a server closes its pool
/// when it stops, and the test keeps using `pool` afterwards.
pub fn pg_storage(
    pool: &sqlx::PgPool,
) -> std::sync::Arc<dyn synckit::testing::storage::StorageAdapter> {
    pg_backend(pool)
}

/// [`pg_storage`] as its own type, for tests that also seed or inspect rows
/// through `CompatStore`.
pub fn pg_backend(
    pool: &sqlx::PgPool,
) -> std::sync::Arc<synckit::testing::storage::PostgresStorage> {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with((*pool.connect_options()).clone());
    std::sync::Arc::new(synckit::testing::storage::PostgresStorage::from_pool(
        own, true,
    ))
}

/// A `synckit serve` process on a free loopback port, auth disabled, no admin
/// listener, plus `env`; returned once it listens. Killed when the child drops.
/// Backends come from `env` only: the test runner's `DATABASE_URL` and `REDIS_URL`
/// are not inherited.
/// Send signal `name` (`TERM`, `KILL`, …) to process `pid`, asserting it was delivered.
pub fn send_signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

pub async fn spawn_serve(env: &[(&str, &str)]) -> (tokio::process::Child, TestServer) {
    spawn_serve_logged(env, std::process::Stdio::inherit()).await
}

/// [`spawn_serve`] with its stderr (the log) going to `stderr`, e.g. piped for a
/// test that reads what an operator would.
pub async fn spawn_serve_logged(
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, TestServer) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_synckit"));
    cmd.arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("SYNCKIT_ADMIN_LISTEN", "off")
        .env("SYNCKIT_AUTH_REQUIRED", "false")
        .env("SYNCKIT_MAX_MESSAGES_PER_MINUTE", "0")
        .env("RUST_LOG", "warn")
        .stderr(stderr)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn synckit serve");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut ready = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "synckit serve did not start listening");
    let server = TestServer {
        addr,
        shutdown: CancellationToken::new(),
        done: tokio::spawn(async { true }),
    };
    (child, server)
}

/// The connection URL of a `#[sqlx::test]` database, for a spawned `synckit`
/// process (which gets its own pool).
pub fn database_url(pool: &sqlx::PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("postgres")
    )
}
