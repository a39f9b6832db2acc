//! HTTP endpoint tests (docs/operations.md §1–§3, §6, §7.3) against an in-process server.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    http, jwt, now_secs, start, start_with, start_with_admin, try_connect_with, try_http,
    user_token, Client,
};
use serde_json::{json, Value};
use synckit::server::{Backends, ServerConfig};
use synckit::testing::auth::{Authenticator, Identity, Permissions, TokenKind};
use synckit::testing::storage::MemoryStorage;

fn open() -> ServerConfig {
    ServerConfig::for_tests(false)
}

/// In-memory backends whose storage the test can make unreachable: a write made
/// then waits in the queue, which holds the shutdown drain open so the draining
/// state can be observed from outside.
fn gated(config: &ServerConfig) -> (Backends, Arc<MemoryStorage>) {
    let storage = Arc::new(MemoryStorage::new());
    let mut backends = Backends::in_memory(config);
    backends.storage = storage.clone();
    (backends, storage)
}

/// Prometheus text → `name{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse::<f64>().expect("sample value"))
        })
        .collect()
}

async fn scrape(admin: std::net::SocketAddr) -> HashMap<String, f64> {
    let r = http(admin, "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    parse_metrics(&r.body)
}

/// Poll `/metrics` until `name` has `value` (counters move asynchronously).
async fn await_metric(admin: std::net::SocketAddr, name: &str, value: f64) {
    let mut last = None;
    for _ in 0..100 {
        let m = scrape(admin).await;
        last = m.get(name).copied();
        if last == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}: expected {value}, last seen {last:?}");
}

#[tokio::test]
async fn root_info_security_headers_and_cors() {
    let server = start(open()).await;
    let r = http(
        server.addr,
        "GET",
        "/",
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let body = r.json();
    assert_eq!(body["name"], "SyncKit Server");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["implementation"], "rust");
    assert_eq!(
        body["description"],
        "Production-ready WebSocket sync server"
    );
    assert_eq!(
        body["endpoints"],
        json!({"health": "/health", "ws": "/ws", "auth": "/auth"})
    );
    assert_eq!(
        body["features"],
        json!({
            "websocket": "Real-time sync via WebSocket",
            "auth": "JWT authentication",
            "sync": "Delta-based document synchronization",
            "crdt": "LWW conflict resolution"
        })
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-xss-protection"), Some("1; mode=block"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    let csp = r.header("content-security-policy").expect("csp");
    assert!(csp.contains("connect-src 'self' wss: ws:"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // A plain GET of the WebSocket endpoint is refused, not served.
    let ws = http(server.addr, "GET", "/ws", &[], None).await;
    assert!(
        (400..500).contains(&ws.status),
        "GET /ws without upgrade: {}",
        ws.status
    );
    // Unknown paths are 404, not the info body.
    assert_eq!(
        http(server.addr, "GET", "/nope", &[], None).await.status,
        404
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn health_has_the_ts_body_with_live_values() {
    let config = open();
    let instance = config.sync.instance_id.clone();
    let server = start(config).await;
    let r = http(server.addr, "GET", "/health", &[], None).await;
    assert_eq!(r.status, 200);
    let h = r.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    let ts = h["timestamp"].as_str().expect("timestamp string");
    humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"));
    assert!(h["uptime"].as_f64().expect("uptime number") >= 0.0);
    assert_eq!(
        h["connections"],
        json!({"totalConnections": 0, "totalUsers": 0, "totalClients": 0})
    );
    assert_eq!(
        h["documents"],
        json!({"totalDocuments": 0, "documents": []})
    );
    assert_eq!(h["storage"], "memory-only");
    assert_eq!(h["pubsub"], "single-instance");
    assert_eq!(h["instanceId"], instance.as_str());

    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    a.send(json!({"type":"subscribe","documentId":"doc-h"}))
        .await;
    a.expect("sync_response").await;
    b.assert_alive().await;
    let h = http(server.addr, "GET", "/health", &[], None).await.json();
    assert_eq!(h["connections"]["totalConnections"], 2, "{h}");
    assert_eq!(h["documents"]["totalDocuments"], 1, "{h}");
    assert_eq!(
        h["documents"]["documents"],
        json!([]),
        "document ids are not listed by default"
    );
    server.shutdown.cancel();

    let mut config = open();
    config.health_list_documents = true;
    let server = start(config).await;
    let mut a = Client::connect(&server, false).await;
    a.send(json!({"type":"subscribe","documentId":"doc-listed"}))
        .await;
    a.expect("sync_response").await;
    let h = http(server.addr, "GET", "/health", &[], None).await.json();
    let docs = h["documents"]["documents"].as_array().expect("list");
    assert_eq!(docs.len(), 1, "{h}");
    assert_eq!(docs[0]["id"], "doc-listed");
    assert_eq!(docs[0]["subscribers"], 1);
    assert!(docs[0]["lastModified"].is_number(), "{h}");
    server.shutdown.cancel();
}

#[tokio::test]
async fn total_users_counts_distinct_user_ids() {
    let server = start(ServerConfig::for_tests(true)).await;
    let alice = user_token("alice", &["*"], &[], false);
    let bob = user_token("bob", &["*"], &[], false);
    let mut clients = Vec::new();
    for token in [&alice, &alice, &bob] {
        clients.push(Client::connect_path(&server, &format!("/ws?token={token}"), true).await);
    }
    // One unauthenticated connection: counted as a connection, not a user.
    let mut anon = Client::connect(&server, true).await;
    anon.assert_alive().await;
    for c in &mut clients {
        c.assert_alive().await;
    }
    let h = http(server.addr, "GET", "/health", &[], None).await.json();
    assert_eq!(h["connections"]["totalConnections"], 4, "{h}");
    assert_eq!(h["connections"]["totalUsers"], 2, "distinct user ids: {h}");
    // Re-authenticating as someone else moves the connection to that user.
    let carol = user_token("carol", &["*"], &[], false);
    clients[1].send(json!({"type":"auth","token":carol})).await;
    clients[1].expect("auth_success").await;
    let h = http(server.addr, "GET", "/health", &[], None).await.json();
    assert_eq!(h["connections"]["totalUsers"], 3, "{h}");
    drop(clients);
    let mut users = Value::Null;
    for _ in 0..100 {
        let h = http(server.addr, "GET", "/health", &[], None).await.json();
        users = h["connections"]["totalUsers"].clone();
        if users == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(users, 0, "users leave with their connections");
    server.shutdown.cancel();
}

#[tokio::test]
async fn probes_report_ready_and_degraded() {
    let config = open();
    let (backends, storage) = gated(&config);
    let (server, admin) = start_with(config, backends, true).await;
    let admin = admin.expect("admin");
    for addr in [server.addr, admin] {
        let live = http(addr, "GET", "/health/live", &[], None).await;
        assert_eq!(live.status, 200);
        assert_eq!(live.json()["status"], "healthy");
        assert!(live.json()["duration"].is_number());
        let ready = http(addr, "GET", "/health/ready", &[], None).await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.json()["status"], "healthy");
        assert!(ready.json()["duration"].is_number());
    }
    // A configured backend that is down: degraded (still 200) once the background
    // prober saw it, /health stays healthy.
    storage.set_reachable(false);
    let mut ready = http(server.addr, "GET", "/health/ready", &[], None).await;
    for _ in 0..60 {
        if ready.json()["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = http(server.addr, "GET", "/health/ready", &[], None).await;
    }
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "degraded");
    let h = http(server.addr, "GET", "/health", &[], None).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "healthy");
    assert_eq!(h.json()["storage"], "degraded");
    storage.set_reachable(true);
    server.shutdown.cancel();
}

#[tokio::test]
async fn readiness_is_503_and_upgrades_are_refused_while_draining() {
    let config = open();
    let (backends, storage) = gated(&config);
    let (server, admin) = start_with(config, backends, true).await;
    let admin = admin.expect("admin");
    let mut c = Client::connect(&server, true).await;
    c.assert_alive().await;
    // A write that cannot be persisted yet keeps the drain open. It comes from
    // another connection, which leaves first: a connection with unacked writes
    // would itself wait for them (within the budget) before closing.
    storage.set_reachable(false);
    let mut w = Client::connect(&server, true).await;
    w.send(json!({"type":"delta","documentId":"d","field":"f","value":1,"messageId":"m1"}))
        .await;
    w.expect("delta").await;
    drop(w);
    server.shutdown.cancel();
    c.expect_close(1001, "Server shutdown").await;
    // The drain is held open by the storage: the server is draining, not gone.
    for addr in [server.addr, admin] {
        let ready = try_http(addr, "GET", "/health/ready", &[], None)
            .await
            .unwrap_or_else(|e| panic!("readiness must answer while draining ({addr}): {e}"));
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.json()["status"], "unhealthy");
    }
    let live = http(server.addr, "GET", "/health/live", &[], None).await;
    assert_eq!(live.status, 200);
    match try_connect_with(server.addr, "/ws", &[], true).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
        }
        Err(e) => panic!("expected an HTTP 503 refusal, got {e}"),
        Ok(_) => panic!("upgrade accepted while draining"),
    }
    assert!(!server.done.is_finished(), "still draining");
    storage.set_reachable(true);
    let drained = tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("stops once drained")
        .expect("join");
    assert!(drained);
    // Stopped: the listener is closed.
    assert!(try_http(server.addr, "GET", "/health", &[], None)
        .await
        .is_err());
}

#[tokio::test]
async fn stats_and_metrics_live_on_the_admin_listener() {
    let (server, admin) = start_with_admin(open()).await;
    for path in ["/stats", "/metrics", "/rooms"] {
        let r = http(server.addr, "GET", path, &[], None).await;
        assert_eq!(r.status, 404, "{path} must not be public by default");
        assert_eq!(
            http(admin, "GET", path, &[], None).await.status,
            200,
            "{path}"
        );
    }
    // The admin listener serves no auth routes or WebSocket.
    assert_eq!(
        http(admin, "POST", "/auth/verify", &[], Some("{}"))
            .await
            .status,
        404
    );
    let r = http(admin, "GET", "/metrics", &[], None).await;
    assert_eq!(
        r.header("content-type"),
        Some(synckit::server::stats::CONTENT_TYPE)
    );
    assert!(r
        .body
        .contains("# TYPE synckit_connections_accepted counter\n"));
    let s = http(admin, "GET", "/stats", &[], None).await.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["connections"]["open"], 0);
    server.shutdown.cancel();

    let mut config = open();
    config.public_stats = true;
    let server = start(config).await;
    for path in ["/stats", "/metrics", "/rooms"] {
        let r = http(server.addr, "GET", path, &[], None).await;
        assert_eq!(r.status, 200, "{path} with public_stats");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn metrics_counters_move_with_traffic() {
    let mut config = ServerConfig::for_tests(true);
    config.sync.auth_timeout = Duration::from_secs(30);
    let (server, admin) = start_with_admin(config).await;
    let before = scrape(admin).await;
    assert_eq!(before["synckit_connections_accepted_total"], 0.0);
    assert_eq!(before["synckit_connections_open"], 0.0);
    assert_eq!(before["synckit_messages_in_total{type=\"ping\"}"], 0.0);

    let token = user_token("m-user", &["*"], &["*"], false);
    let mut c = Client::connect_path(&server, &format!("/ws?token={token}"), true).await;
    for _ in 0..3 {
        c.assert_alive().await;
    }
    c.send(json!({"type":"subscribe","documentId":"room:abc"}))
        .await;
    c.expect("sync_response").await;
    c.send(json!({"type":"delta","documentId":"room:abc","field":"f","value":1,"messageId":"m1"}))
        .await;
    c.expect("ack").await;
    c.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0x77u8; 20].into(),
    ))
    .await;
    assert_eq!(c.expect("error").await["error"], "Invalid message format");
    let mut bad = Client::connect(&server, true).await;
    bad.send(json!({"type":"auth","token":"nope"})).await;
    bad.expect("auth_error").await;

    let m = scrape(admin).await;
    assert_eq!(m["synckit_connections_accepted_total"], 2.0);
    assert_eq!(m["synckit_messages_in_total{type=\"ping\"}"], 3.0);
    assert_eq!(m["synckit_messages_out_total{type=\"pong\"}"], 3.0);
    assert_eq!(m["synckit_messages_in_total{type=\"subscribe\"}"], 1.0);
    assert_eq!(m["synckit_messages_in_total{type=\"delta\"}"], 1.0);
    assert_eq!(m["synckit_messages_out_total{type=\"sync_response\"}"], 1.0);
    assert_eq!(m["synckit_acks_sent_total"], 1.0);
    assert_eq!(m["synckit_invalid_frames_total"], 1.0);
    assert_eq!(m["synckit_auth_failures_total"], 1.0);
    assert_eq!(
        m["synckit_errors_total{error=\"Invalid message format\"}"],
        1.0
    );
    assert_eq!(m["synckit_documents_cached"], 1.0);
    assert!(m["synckit_websocket_received_bytes_total"] > 0.0);
    assert!(m["synckit_websocket_sent_bytes_total"] > 0.0);
    assert_eq!(m["synckit_connections_authenticated"], 1.0);
    await_metric(admin, "synckit_broadcast_flushes_total", 1.0).await;

    let s = http(admin, "GET", "/stats", &[], None).await.json();
    assert_eq!(s["connections"]["accepted"], 2);
    assert_eq!(s["messages"]["in"]["ping"], 3);
    assert_eq!(s["acksSent"], 1);
    assert_eq!(s["authFailures"], 1);
    assert_eq!(s["errors"]["Invalid message format"], 1);
    let rooms = http(admin, "GET", "/rooms", &[], None).await.json();
    assert_eq!(rooms["totalRooms"], 1, "{rooms}");
    assert_eq!(rooms["rooms"][0]["id"], "abc", "{rooms}");
    assert_eq!(rooms["rooms"][0]["subscriberCount"], 1, "{rooms}");
    assert_eq!(rooms["wordwall"], Value::Null);

    drop(c);
    await_metric(admin, "synckit_connections_open", 0.0).await;
    await_metric(admin, "synckit_connections_authenticated", 0.0).await;
    server.shutdown.cancel();
}

async fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = http(addr, "POST", path, &[], Some(&body.to_string())).await;
    let status = r.status;
    (status, r.json())
}

async fn me(addr: std::net::SocketAddr, authorization: Option<&str>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = http(addr, "GET", "/auth/me", &headers, None).await;
    let status = r.status;
    (status, r.json())
}

fn issue(kind: TokenKind, user: &str, now: i64) -> String {
    Authenticator::new(open().jwt)
        .issue(
            &Identity {
                user_id: user.into(),
                email: Some(format!("{user}@example.com")),
                permissions: Permissions {
                    can_read: vec!["doc-r".into()],
                    can_write: vec!["doc-w".into()],
                    is_admin: false,
                },
            },
            kind,
            now,
        )
        .expect("issue")
}

#[tokio::test]
async fn login_exists_only_with_demo_login() {
    let server = start(open()).await;
    let body = json!({"email":"a@example.com","password":"pw"});
    let (status, _) = post(server.addr, "/auth/login", &body).await;
    assert_eq!(status, 404);
    server.shutdown.cancel();

    let mut config = ServerConfig::for_tests(true);
    config.demo_login = true;
    let server = start(config).await;
    let (status, b) = post(server.addr, "/auth/login", &body).await;
    assert_eq!(status, 200, "{b}");
    let user = b["userId"].as_str().expect("userId");
    let ms: i64 = user
        .strip_prefix("user-")
        .and_then(|n| n.parse().ok())
        .expect("user-<epoch ms>");
    assert!(ms > 1_600_000_000_000, "{user}");
    assert_eq!(b["email"], "a@example.com");
    assert_eq!(
        b["permissions"],
        json!({"canRead": [], "canWrite": [], "isAdmin": false})
    );
    let access = b["accessToken"].as_str().expect("accessToken").to_owned();
    assert!(b["refreshToken"].is_string());
    // The issued access token signs in over the WebSocket.
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"auth","token":access})).await;
    let ok = c.expect("auth_success").await;
    assert_eq!(ok["userId"], user);

    let (_, b) = post(
        server.addr,
        "/auth/login",
        &json!({"email":"a@b","password":"p","permissions":{"canRead":["d1"]}}),
    )
    .await;
    assert_eq!(
        b["permissions"],
        json!({"canRead": ["d1"], "canWrite": [], "isAdmin": false})
    );
    let (_, b) = post(
        server.addr,
        "/auth/login",
        &json!({"email":"a@b","password":"p","permissions":{"canRead":["d1"],"isAdmin":true}}),
    )
    .await;
    assert_eq!(
        b["permissions"],
        json!({"canRead": [], "canWrite": [], "isAdmin": true})
    );
    for bad in [
        json!({"email":"a@b"}),
        json!({"password":"p"}),
        json!({"email":"","password":"p"}),
        json!({}),
    ] {
        let (status, b) = post(server.addr, "/auth/login", &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(b, json!({"error": "Email and password required"}));
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn verify_endpoint() {
    let server = start(open()).await;
    let (status, b) = post(server.addr, "/auth/verify", &json!({})).await;
    assert_eq!((status, b), (400, json!({"error": "Token required"})));
    let r = http(server.addr, "POST", "/auth/verify", &[], Some("not json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "Token required"}));

    let exp = now_secs() + 600;
    let token = jwt(&json!({"userId":"v-user","permissions":{},"exp":exp}));
    let (status, b) = post(server.addr, "/auth/verify", &json!({ "token": token })).await;
    assert_eq!(status, 200);
    assert_eq!(
        b,
        json!({"valid": true, "userId": "v-user", "expiresAt": exp})
    );
    let expired = jwt(&json!({"userId":"v-user","exp": now_secs() - 5}));
    let refresh = issue(TokenKind::Refresh, "r-user", now_secs());
    for bad in ["garbage", expired.as_str(), refresh.as_str()] {
        let (status, b) = post(server.addr, "/auth/verify", &json!({ "token": bad })).await;
        assert_eq!((status, b), (200, json!({"valid": false})), "{bad}");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn me_endpoint() {
    let server = start(open()).await;
    let access = issue(TokenKind::Access, "me-user", now_secs());
    let refresh = issue(TokenKind::Refresh, "me-user", now_secs());
    let cases: [(Option<String>, &str); 6] = [
        (None, "Missing Authorization header"),
        (
            Some(format!("Basic {access}")),
            "Invalid Authorization header format",
        ),
        (
            Some(format!("bearer {access}")),
            "Invalid Authorization header format",
        ),
        (Some(access.clone()), "Invalid Authorization header format"),
        (Some("Bearer garbage".into()), "Invalid or expired token"),
        (
            Some(format!("Bearer {refresh}")),
            "Invalid or expired token",
        ),
    ];
    for (header, error) in cases {
        let (status, b) = me(server.addr, header.as_deref()).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(b, json!({ "error": error }), "{header:?}");
    }
    let (status, b) = me(server.addr, Some(&format!("Bearer {access}"))).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        b,
        json!({
            "userId": "me-user",
            "email": "me-user@example.com",
            "permissions": {"canRead": ["doc-r"], "canWrite": ["doc-w"], "isAdmin": false},
        })
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn refresh_accepts_only_refresh_tokens() {
    let server = start(open()).await;
    for body in [
        json!({}),
        json!({"refreshToken": ""}),
        json!({"refreshToken": 5}),
    ] {
        let (status, b) = post(server.addr, "/auth/refresh", &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(b, json!({"error": "Refresh token required"}));
    }
    let access = issue(TokenKind::Access, "r-user", now_secs());
    let untyped = jwt(&json!({"userId":"r-user","exp": now_secs() + 60}));
    let expired = issue(TokenKind::Refresh, "r-user", now_secs() - 8 * 24 * 3600);
    for bad in [
        access.as_str(),
        untyped.as_str(),
        expired.as_str(),
        "garbage",
    ] {
        let (status, b) = post(
            server.addr,
            "/auth/refresh",
            &json!({ "refreshToken": bad }),
        )
        .await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(b, json!({"error": "Invalid or expired refresh token"}));
    }
    let refresh = issue(TokenKind::Refresh, "r-user", now_secs());
    let (status, b) = post(
        server.addr,
        "/auth/refresh",
        &json!({ "refreshToken": refresh }),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let keys: Vec<&String> = b.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["accessToken", "refreshToken"]);
    let new_access = b["accessToken"].as_str().expect("accessToken");
    let new_refresh = b["refreshToken"].as_str().expect("refreshToken");
    // The new access token keeps identity, email and permissions...
    let (status, who) = me(server.addr, Some(&format!("Bearer {new_access}"))).await;
    assert_eq!(status, 200);
    assert_eq!(who["userId"], "r-user");
    assert_eq!(who["email"], "r-user@example.com");
    assert_eq!(
        who["permissions"],
        json!({"canRead": ["doc-r"], "canWrite": ["doc-w"], "isAdmin": false})
    );
    // ...and cannot itself refresh; the new refresh token can, and is no access token.
    let (status, _) = post(
        server.addr,
        "/auth/refresh",
        &json!({ "refreshToken": new_access }),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        server.addr,
        "/auth/refresh",
        &json!({ "refreshToken": new_refresh }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = me(server.addr, Some(&format!("Bearer {new_refresh}"))).await;
    assert_eq!(status, 401);
    server.shutdown.cancel();
}

#[tokio::test]
async fn test_clear_only_in_test_mode() {
    let server = start(open()).await;
    assert_eq!(
        http(server.addr, "POST", "/_test/clear", &[], Some("{}"))
            .await
            .status,
        404
    );
    server.shutdown.cancel();
    let mut config = open();
    config.test_mode = true;
    let server = start(config).await;
    let r = http(server.addr, "POST", "/_test/clear", &[], Some("{}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"success": true}));
    server.shutdown.cancel();
}

/// `/metrics` is rendered from the same numbers as `/stats`: every metric of the
/// table equals the `/stats` field it reads, on a live server with traffic.
#[tokio::test]
async fn metrics_and_stats_come_from_one_table() {
    let (server, admin) = start_with_admin(open()).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"subscribe","documentId":"room:t"}))
        .await;
    c.expect("sync_response").await;
    c.send(json!({"type":"delta","documentId":"room:t","field":"f","value":1,"messageId":"m1"}))
        .await;
    c.expect("ack").await;
    let m = scrape(admin).await;
    let s: synckit::testing::admin_api::Stats =
        serde_json::from_value(http(admin, "GET", "/stats", &[], None).await.json())
            .expect("typed /stats");
    for def in synckit::server::stats::METRICS {
        if let synckit::server::stats::Source::Value(read) = &def.source {
            let Some(from_stats) = read(&s) else { continue };
            let name = def.sample_name();
            let scraped = m
                .get(&name)
                .copied()
                .unwrap_or_else(|| panic!("{name} exported"));
            // Gauges like uptime move between the two requests; counters here do not.
            if def.name != "synckit_uptime" && def.name != "synckit_pubsub_ping" {
                assert_eq!(scraped, from_stats, "{name}");
            }
        }
    }
    assert_eq!(m["synckit_messages_in_total{type=\"delta\"}"], 1.0);
    assert_eq!(
        s.messages.inbound.as_ref().and_then(|i| i.get("delta")),
        Some(&1)
    );
    assert_eq!(s.host, synckit::testing::admin_api::host_name());
    assert_eq!(s.instances.len(), 1, "itself");
    assert!(s.instances[0].is_self);
    server.shutdown.cancel();
}
