//! The admission layer over real sockets (issue 11): each hostile input is refused
//! with its named error or close code, nothing of it is applied, broadcast or
//! stored (PostgreSQL where storage is involved), the refusal is counted in
//! `/metrics`, and a well-behaved client on the same server keeps its acks.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    http, jwt, now_secs, open_config, pg_storage, start_with, user_token, Client, TestServer,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::PgPool;
use synckit::server::{Backends, ServerConfig};
use synckit::testing::awareness::MemoryAwarenessStore;
use synckit::testing::pubsub::LocalPubSub;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------
// Helpers

pub(crate) fn memory(config: &ServerConfig) -> Backends {
    Backends::in_memory(config)
}

pub(crate) fn postgres(config: &ServerConfig, pool: &PgPool) -> Backends {
    Backends {
        storage: pg_storage(pool),
        awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
        pubsub: Arc::new(LocalPubSub::single_instance()),
        postgres: None,
    }
}

pub(crate) async fn start(
    config: ServerConfig,
    backends: Backends,
) -> (TestServer, std::net::SocketAddr) {
    let (server, admin) = start_with(config, backends, true).await;
    (server, admin.expect("admin listener"))
}

pub(crate) async fn stop(server: TestServer) {
    server.shutdown.cancel();
    assert!(server.done.await.expect("server task"), "drained");
}

/// One series of `/metrics` (open on the admin listener), e.g.
/// `synckit_connections_open`.
pub(crate) async fn metric(admin: std::net::SocketAddr, series: &str) -> Option<f64> {
    let body = http(admin, "GET", "/metrics", &[], None).await.body;
    let prefix = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}

/// `synckit_refusals_total{reason}` from `/metrics`.
pub(crate) async fn refusals(admin: std::net::SocketAddr, reason: &str) -> u64 {
    let series = format!("synckit_refusals_total{{reason=\"{reason}\"}}");
    metric(admin, &series)
        .await
        .unwrap_or_else(|| panic!("no {series} in /metrics")) as u64
}

/// A well-behaved client: subscribes `doc` and writes a field, acked.
pub(crate) async fn good_client(server: &TestServer, doc: &str) -> Client {
    let mut c = Client::connect(server, true).await;
    common::subscribe(&mut c, doc).await;
    write_acked(&mut c, doc, "good", json!("before"), "g0").await;
    c
}

/// Write `field` and wait for its ack (the write's own broadcast may come first).
pub(crate) async fn write_acked(c: &mut Client, doc: &str, field: &str, value: Value, id: &str) {
    c.send(json!({"type":"delta","documentId":doc,"field":field,"value":value,"messageId":id}))
        .await;
    loop {
        let m = c.recv().await;
        assert_ne!(m["type"], "error", "a good write was refused: {m}");
        if m["type"] == "ack" && m["messageId"] == id {
            return;
        }
    }
}

/// The next message is the named refusal with `details`.
pub(crate) async fn expect_refusal(c: &mut Client, error: &str, details: Value) {
    let m = c.recv().await;
    assert_eq!(m["type"], "error", "expected {error:?}, got {m}");
    assert_eq!(m["error"], error, "{m}");
    assert_eq!(m["details"], details, "{m}");
}

/// Nothing but what `allowed` accepts reaches `c` before its pong.
pub(crate) async fn nothing_about(c: &mut Client, what: &str, forbidden: impl Fn(&Value) -> bool) {
    tokio::time::sleep(Duration::from_millis(150)).await; // past the batch window
    for m in c.messages_before_pong().await {
        assert!(!forbidden(&m), "{what}: {m}");
    }
}

pub(crate) fn field_delta(m: &Value, field: &str) -> bool {
    m["type"] == "delta" && (m["field"] == field || m["delta"].get(field).is_some())
}

pub(crate) async fn state_of(server: &TestServer, doc: &str) -> Value {
    let mut c = Client::connect(server, false).await;
    common::subscribe(&mut c, doc).await["state"].clone()
}

/// `[[…[1]…]]` with `levels` arrays.
pub(crate) fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

pub(crate) async fn stored_fields(pool: &PgPool, doc: &str) -> Value {
    let state: Option<Value> = sqlx::query_scalar("SELECT state FROM documents WHERE id = $1")
        .bind(doc)
        .fetch_optional(pool)
        .await
        .expect("query");
    state.map_or(Value::Null, |s| s["fields"].clone())
}

pub(crate) fn auth_config() -> ServerConfig {
    ServerConfig::for_tests(true)
}

pub(crate) async fn authed(server: &TestServer, token: &str, binary: bool) -> Client {
    let mut c = Client::connect(server, binary).await;
    c.send(json!({"type":"auth","token":token})).await;
    let m = c.recv().await;
    assert_eq!(m["type"], "auth_success", "{m}");
    c
}

// ---------------------------------------------------------------------------------
// 1. Deep values

#[sqlx::test(migrations = false)]
async fn a_too_deep_value_is_refused_whole_and_never_stored(pool: PgPool) {
    let config = open_config();
    let (server, admin) = start(config.clone(), postgres(&config, &pool)).await;
    let mut good = good_client(&server, "deepdoc").await;
    let mut bad = Client::connect(&server, false).await;
    // The issue's poison (126 levels), and a deep field next to a plain one in the
    // same message: both refused whole.
    for msg in [
        json!({"type":"delta","documentId":"deepdoc","field":"f","value":nested(126),"messageId":"m"}),
        json!({"type":"delta","documentId":"deepdoc","delta":{"f": nested(40), "g": 1},"messageId":"m"}),
    ] {
        bad.send(msg).await;
        expect_refusal(
            &mut bad,
            "Message nested too deeply (max 32 levels)",
            json!({"code":"INVALID_MESSAGE","documentId":"deepdoc"}),
        )
        .await;
    }
    // At the limit (the message object is level 1) a value is fine; one more is not.
    bad.send(json!({"type":"delta","documentId":"deepdoc","field":"edge",
        "value": nested(31),"messageId":"edge"}))
        .await;
    bad.expect("ack").await;
    bad.send(json!({"type":"delta","documentId":"deepdoc","field":"over",
        "value": nested(32),"messageId":"over"}))
        .await;
    let m = bad.expect("error").await;
    assert_eq!(m["error"], "Message nested too deeply (max 32 levels)");
    nothing_about(&mut good, "refused fields broadcast", |m| {
        field_delta(m, "f") || field_delta(m, "g") || field_delta(m, "over")
    })
    .await;
    write_acked(&mut good, "deepdoc", "good", json!("after"), "g1").await;
    assert!(refusals(admin, "json_depth").await >= 2);
    stop(server).await;

    // After a restart the document loads and every field is reachable.
    let fields = stored_fields(&pool, "deepdoc").await;
    assert_eq!(fields["good"], "after");
    assert_eq!(fields["edge"], nested(31));
    assert!(fields.get("f").is_none() && fields.get("g").is_none() && fields.get("over").is_none());
    let (server, _) = start(config.clone(), postgres(&config, &pool)).await;
    let state = state_of(&server, "deepdoc").await;
    assert_eq!(state["good"], "after");
    assert!(state.get("g").is_none());
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 2. Vector clocks

async fn clock_rows(pool: &PgPool, doc: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM vector_clocks WHERE document_id = $1")
        .bind(doc)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrations = false)]
async fn client_clocks_cannot_inflate_or_freeze_a_document(pool: PgPool) {
    let mut config = auth_config();
    config.sync.limits.max_clock_entries_per_message = 100;
    config.sync.limits.max_clock_entries_per_document = 8;
    let (server, admin) = start(config.clone(), postgres(&config, &pool)).await;
    let writer = user_token("w", &["doc"], &["doc"], false);
    let mut good = authed(&server, &writer, true).await;
    common::subscribe(&mut good, "doc").await;
    write_acked(&mut good, "doc", "f", json!(1), "g0").await;
    let rows = clock_rows(&pool, "doc").await;

    // A reader's sync_request with 60,000 entries: answered, nothing merged.
    let reader = user_token("r", &["doc"], &[], false);
    let mut r = authed(&server, &reader, false).await;
    let big: serde_json::Map<String, Value> =
        (0..60_000).map(|i| (format!("r{i}"), json!(1))).collect();
    r.send(json!({"type":"sync_request","id":"s","documentId":"doc","vectorClock":big}))
        .await;
    let sr = r.expect("sync_response").await;
    assert!(
        sr["clock"].as_object().expect("clock").len() <= 2,
        "{}",
        sr["clock"]
    );

    // Writers: too many entries in one message, a value past 2^53−1, a jump that
    // would freeze max(clock): each refused whole.
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("w{i}"), json!(1))).collect();
    let mut w = authed(&server, &writer, false).await;
    w.send(
        json!({"type":"delta","documentId":"doc","field":"x","value":1,
        "vectorClock":many,"messageId":"m1"}),
    )
    .await;
    expect_refusal(
        &mut w,
        "Vector clock too large (101 entries, max 100)",
        json!({"code":"CLOCK_LIMIT","documentId":"doc"}),
    )
    .await;
    for (clock, what) in [
        (json!({"w": 9_007_199_254_740_992u64}), "above 2^53-1"),
        (json!({"w": 9_007_199_254_740_991u64}), "a jump to 2^53-1"),
        (json!({"w": -1}), "negative"),
    ] {
        w.send(
            json!({"type":"delta_batch","documentId":"doc","messageId":"m2","deltas":[
            {"type":"set","field":"x","value":2,"clientId":"w","clock":clock}]}),
        )
        .await;
        let m = w.expect("error").await;
        assert!(
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("Invalid vector clock")),
            "{what}: {m}"
        );
        assert_eq!(m["details"]["code"], "CLOCK_LIMIT", "{m}");
    }
    // (A document whose clock is full still takes writes: wire_admission_bounds.)
    nothing_about(&mut good, "refused writes broadcast", |m| {
        field_delta(m, "x")
    })
    .await;
    assert_eq!(
        clock_rows(&pool, "doc").await,
        rows,
        "no clock row was added"
    );

    // The good client's one-field write still reaches subscribers as a small delta.
    write_acked(&mut good, "doc", "f", json!(2), "g1").await;
    let mut sub = authed(&server, &reader, true).await;
    common::subscribe(&mut sub, "doc").await;
    write_acked(&mut good, "doc", "f", json!(3), "g2").await;
    let d = sub.expect("delta").await;
    assert!(
        d.to_string().len() < 400,
        "a one-field delta stays small: {d}"
    );
    assert!(refusals(admin, "clock_invalid").await >= 4);
    let state = state_of_authed(&server, &writer, "doc").await;
    assert!(state.get("x").is_none(), "{state}");
    stop(server).await;
}

async fn state_of_authed(server: &TestServer, token: &str, doc: &str) -> Value {
    let mut c = authed(server, token, false).await;
    common::subscribe(&mut c, doc).await["state"].clone()
}

// ---------------------------------------------------------------------------------
// 3. NUL characters

#[sqlx::test(migrations = false)]
async fn a_nul_anywhere_refuses_the_whole_write_before_postgres_sees_it(pool: PgPool) {
    let config = open_config();
    let (server, admin) = start(config.clone(), postgres(&config, &pool)).await;
    let mut good = good_client(&server, "nuldoc").await;
    let mut bad = Client::connect(&server, true).await;
    for msg in [
        json!({"type":"delta","documentId":"nuldoc","delta":{"bad":"a\u{0}b","also":1},"messageId":"m2"}),
        json!({"type":"delta","documentId":"nuldoc","delta":{"k\u{0}":1,"also":1},"messageId":"m3"}),
        json!({"type":"delta_batch","documentId":"nuldoc","messageId":"m4","deltas":[
            {"type":"set","field":"also","value":1},
            {"type":"set","field":"deep","value":{"a":["\u{0}"]}}]}),
    ] {
        bad.send(msg).await;
        expect_refusal(
            &mut bad,
            "Message contains a NUL character",
            json!({"code":"INVALID_MESSAGE","documentId":"nuldoc"}),
        )
        .await;
    }
    nothing_about(&mut good, "a refused field broadcast", |m| {
        field_delta(m, "also") || field_delta(m, "bad") || field_delta(m, "deep")
    })
    .await;
    // Not served either, and the connection still works.
    let state = state_of(&server, "nuldoc").await;
    assert!(state.get("also").is_none(), "{state}");
    write_acked(&mut bad, "nuldoc", "fine", json!("ok"), "m5").await;
    write_acked(&mut good, "nuldoc", "good", json!("after"), "g1").await;
    assert_eq!(refusals(admin, "nul_character").await, 3);
    stop(server).await;
    let fields = stored_fields(&pool, "nuldoc").await;
    assert_eq!(fields, json!({"good":"after","fine":"ok"}));
}

// ---------------------------------------------------------------------------------
// 4. Chunks

pub(crate) fn chunk(id: &str, total: u64, index: u64, data: &[u8]) -> Value {
    use base64::Engine;
    json!({"type":"delta_batch_chunk","chunkId":id,"totalChunks":total,"chunkIndex":index,
        "data": base64::engine::general_purpose::STANDARD.encode(data)})
}

#[tokio::test]
async fn chunks_need_auth_fit_one_budget_and_count_against_the_rate() {
    let mut config = auth_config();
    config.sync.max_message_bytes = 1000;
    config.sync.max_messages_per_minute = 12;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let token = user_token("u", &["*"], &["*"], false);
    let mut good = authed(&server, &token, true).await;
    common::subscribe(&mut good, "cdoc").await;
    write_acked(&mut good, "cdoc", "good", json!(1), "g0").await;

    let whole =
        json!({"type":"delta","documentId":"cdoc","field":"chunked","value":"v","messageId":"c1"})
            .to_string();
    let (head, tail) = whole.as_bytes().split_at(10);
    // Before auth: refused, and not kept (completing the set later does nothing).
    let mut c = Client::connect(&server, false).await;
    c.send(chunk("s", 2, 0, head)).await;
    expect_refusal(&mut c, "Not authenticated", json!({"code":"AUTH_REQUIRED"})).await;
    c.send(json!({"type":"auth","token":token})).await;
    c.expect("auth_success").await;
    c.send(chunk("s", 2, 1, tail)).await;
    c.assert_alive().await;
    // The full set after auth is one message, acked.
    c.send(chunk("s", 2, 0, head)).await;
    c.expect("ack").await;
    // One budget (the message limit) across every open set of the connection.
    c.send(chunk("a", 2, 0, &[b'x'; 600])).await;
    c.send(chunk("b", 2, 0, &[b'y'; 600])).await;
    let m = c.expect("error").await;
    assert_eq!(
        (&m["error"], m.get("details")),
        (&json!("Invalid chunk"), None),
        "{m}"
    );
    assert!(refusals(admin, "chunk_unauthenticated").await >= 1);
    assert!(refusals(admin, "chunk_invalid").await >= 1);
    // Chunks count against the rate limit like any message (pings do not).
    let mut limited = Client::connect(&server, false).await;
    limited.send(json!({"type":"auth","token":token})).await;
    limited.expect("auth_success").await;
    for i in 0..11 {
        limited.send(chunk(&format!("p{i}"), 2, 0, b"x")).await;
    }
    limited.assert_alive().await;
    limited.send(chunk("over", 2, 0, b"x")).await;
    expect_refusal(
        &mut limited,
        "Too many messages. Please slow down.",
        json!({"code":"RATE_LIMIT_EXCEEDED"}),
    )
    .await;
    write_acked(&mut good, "cdoc", "good", json!(2), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 5. Per-IP limit behind a proxy

#[tokio::test]
async fn forwarded_for_cannot_dodge_the_per_ip_limit() {
    // The serve default: proxy headers are not believed at all.
    let (mut child, server) = common::spawn_serve(&[("SYNCKIT_MAX_CONNECTIONS_PER_IP", "8")]).await;
    let mut open = Vec::new();
    for i in 0..8 {
        let mut c = Client::connect_from(&server, &format!("10.9.{i}.1"), true).await;
        c.assert_alive().await;
        open.push(c);
    }
    let mut ninth = Client::connect_from(&server, "10.9.8.1", true).await;
    ninth
        .expect_close(1008, "Too many connections from your IP")
        .await;
    for c in &mut open {
        c.assert_alive().await;
    }
    let _ = child.kill().await;

    // Trusted (the proxy on loopback): the client's own first entry is ignored,
    // the address the proxy appended counts.
    let mut config = open_config();
    config.max_connections_per_ip = 8;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut open = Vec::new();
    for i in 0..8 {
        let xff = format!("10.9.{i}.1, 203.0.113.5");
        let mut c = Client::connect_from(&server, &xff, true).await;
        c.assert_alive().await;
        open.push(c);
    }
    let mut ninth = Client::connect_from(&server, "10.9.99.1, 203.0.113.5", true).await;
    ninth
        .expect_close(1008, "Too many connections from your IP")
        .await;
    let mut other = Client::connect_from(&server, "203.0.113.6", true).await;
    other.assert_alive().await;
    assert_eq!(
        metric(admin, "synckit_connections_rejected_per_ip_total").await,
        Some(1.0)
    );
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 6. JWT claims

#[tokio::test]
async fn tokens_with_untyped_times_or_missing_configured_claims_are_refused() {
    let mut config = auth_config();
    config.jwt.issuer = Some("issuer".into());
    config.jwt.audience = Some("app".into());
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let good_claims = |extra: Value| {
        let mut c = json!({"userId":"u","permissions":{"canRead":["*"],"canWrite":["*"]},
            "iss":"issuer","aud":"app","exp": now_secs() + 3600});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() && k.starts_with('-') {
                c.as_object_mut().expect("object").remove(&k[1..]);
            } else {
                c[k] = v.clone();
            }
        }
        jwt(&c)
    };
    let mut good = authed(&server, &good_claims(json!({})), true).await;
    common::subscribe(&mut good, "jdoc").await;
    for (extra, what) in [
        (json!({"exp":"1"}), "exp as a string"),
        (json!({"exp":-1}), "negative exp"),
        (json!({"exp":null}), "null exp"),
        (json!({"exp":true}), "boolean exp"),
        (json!({"nbf":"9999999999"}), "nbf as a string"),
        (json!({"-iss":null}), "no iss"),
        (json!({"-aud":null}), "no aud"),
    ] {
        let mut c = Client::connect(&server, false).await;
        c.send(json!({"type":"auth","token":good_claims(extra)}))
            .await;
        let m = c.recv().await;
        assert_eq!(m["type"], "auth_error", "{what}: {m}");
        c.expect_close(1008, "Authentication failed").await;
        // The upgrade-URL form is held to the same rules.
        let bad = good_claims(json!({"exp":"1"}));
        let mut q = Client::connect_path(&server, &format!("/ws?token={bad}"), true).await;
        q.expect_close(1008, "Authentication failed").await;
    }
    write_acked(&mut good, "jdoc", "f", json!(1), "g").await;
    let body = http(admin, "GET", "/metrics", &[], None).await.body;
    assert!(body.contains("synckit_auth_failures_total 14"), "{body}");
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 7. Awareness ownership

#[tokio::test]
async fn another_user_cannot_replace_or_remove_someones_presence() {
    let config = auth_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let alice_token = user_token("alice", &["adoc"], &[], false);
    let mut alice = authed(&server, &alice_token, true).await;
    let mut watcher = authed(&server, &user_token("w", &["adoc"], &[], false), false).await;
    watcher
        .send(json!({"type":"awareness_subscribe","documentId":"adoc"}))
        .await;
    watcher.expect("awareness_state").await;
    let update = |client: &str, state: Value, clock: u64| json!({"type":"awareness_update","documentId":"adoc","clientId":client,"state":state,"clock":clock});
    alice
        .send(update("alice-client", json!({"name":"Alice"}), 1))
        .await;
    assert_eq!(
        watcher.expect("awareness_update").await["state"]["name"],
        "Alice"
    );

    let mut mallory = authed(
        &server,
        &user_token("mallory", &["adoc"], &[], false),
        false,
    )
    .await;
    for (state, clock) in [
        (json!({"name":"not Alice"}), 9_007_199_254_740_991u64),
        (Value::Null, 0),
    ] {
        mallory.send(update("alice-client", state, clock)).await;
        expect_refusal(
            &mut mallory,
            "Awareness client id belongs to another connection",
            json!({"code":"NOT_OWNER","documentId":"adoc"}),
        )
        .await;
    }
    nothing_about(&mut watcher, "a spoofed update broadcast", |m| {
        m["type"] == "awareness_update"
    })
    .await;
    // Alice's next update still counts; a newcomer sees only her real state.
    alice
        .send(update(
            "alice-client",
            json!({"name":"Alice","cursor":2}),
            2,
        ))
        .await;
    assert_eq!(
        watcher.expect("awareness_update").await["state"]["cursor"],
        2
    );
    let mut late = authed(&server, &user_token("l", &["adoc"], &[], false), true).await;
    late.send(json!({"type":"awareness_subscribe","documentId":"adoc"}))
        .await;
    let states = late.expect("awareness_state").await["states"].clone();
    assert_eq!(
        states,
        json!([{"clientId":"alice-client","state":{"name":"Alice","cursor":2},"clock":2}])
    );

    // Alice reconnects with the same client id before the old socket is gone: her
    // new connection takes it over at once.
    let mut again = authed(&server, &alice_token, true).await;
    again
        .send(update(
            "alice-client",
            json!({"name":"Alice","back":true}),
            3,
        ))
        .await;
    assert_eq!(
        watcher.expect("awareness_update").await["state"]["back"],
        true
    );
    // Mallory may take an id once its owner left.
    again.send(update("alice-client", Value::Null, 4)).await;
    watcher.expect("awareness_update").await;
    mallory
        .send(update("alice-client", json!({"m":1}), 5))
        .await;
    assert_eq!(watcher.expect("awareness_update").await["state"]["m"], 1);
    assert_eq!(refusals(admin, "awareness_not_owner").await, 2);
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 8. Re-authentication and expiry

#[tokio::test]
async fn reauth_drops_what_the_new_token_does_not_allow_and_expiry_ends_the_session() {
    let config = auth_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut c = authed(&server, &user_token("root", &[], &[], true), true).await;
    common::subscribe(&mut c, "A").await;
    common::subscribe(&mut c, "B").await;
    c.send(json!({"type":"awareness_subscribe","documentId":"B"}))
        .await;
    c.expect("awareness_state").await;
    let narrow = user_token("root", &["A"], &[], false);
    c.send(json!({"type":"auth","token":narrow})).await;
    c.expect("auth_success").await;
    expect_refusal(
        &mut c,
        "Subscription revoked: permission denied",
        json!({"code":"SUBSCRIPTION_REVOKED","documentId":"B"}),
    )
    .await;
    let mut writer = authed(&server, &user_token("w", &["*"], &["*"], false), false).await;
    common::subscribe(&mut writer, "B").await;
    write_acked(&mut writer, "B", "secret", json!(1), "w1").await;
    writer
        .send(json!({"type":"awareness_update","documentId":"B","clientId":"wc","state":{},"clock":1}))
        .await;
    write_acked(&mut writer, "A", "open", json!(1), "w2").await;
    let seen = c.collect_until(&["delta"]).await;
    for m in &seen {
        assert_ne!(m["documentId"], "B", "B reached a revoked subscriber: {m}");
    }
    nothing_about(&mut c, "B after revocation", |m| m["documentId"] == "B").await;
    assert_eq!(refusals(admin, "subscription_revoked").await, 1);

    // A token that expires in a moment ends the session then.
    let short =
        jwt(&json!({"userId":"brief","permissions":{"canRead":["*"]},"exp": now_secs() + 2}));
    let mut brief = authed(&server, &short, false).await;
    brief.assert_alive().await;
    let m = brief
        .recv_timeout(Duration::from_secs(4))
        .await
        .expect("closed within 4 s");
    assert_eq!(m["type"], "__close", "{m}");
    assert_eq!(m["code"], 1008);
    assert_eq!(m["reason"], "Token expired");
    assert_eq!(refusals(admin, "token_expired").await, 1);
    write_acked(&mut writer, "A", "open", json!(2), "w3").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 9. Admin listener

#[tokio::test]
async fn admin_reads_need_the_credential_and_a_local_host() {
    let mut config = open_config();
    config.admin_reads_open = false;
    config.admin_allowed_hosts = vec!["synckit.internal".into()];
    config.jwt.api_keys = vec!["key-1".into()];
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "secret-doc").await;
    let admin_jwt = user_token("ops", &[], &[], true);
    let user_jwt = user_token("user", &["*"], &["*"], false);
    let bearer = |t: &str| format!("Bearer {t}");
    let paths = [
        "/admin/documents/secret-doc",
        "/admin/sessions",
        "/admin/documents",
        "/admin/awareness",
        "/stats",
        "/rooms",
        "/maintenance",
    ];
    for path in paths {
        let none = http(admin, "GET", path, &[], None).await;
        assert_eq!(none.status, 401, "{path}: {}", none.body);
        assert!(
            !none.body.contains("before"),
            "{path} leaked: {}",
            none.body
        );
        let user = http(
            admin,
            "GET",
            path,
            &[("authorization", &bearer(&user_jwt))],
            None,
        )
        .await;
        assert_eq!(user.status, 403, "{path}");
        for credential in [&admin_jwt, "key-1"] {
            let ok = http(
                admin,
                "GET",
                path,
                &[("authorization", &bearer(credential))],
                None,
            )
            .await;
            assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        }
        // A rebound name is refused even with the credential; configured names work.
        let rebound = http(
            admin,
            "GET",
            path,
            &[
                ("host", "evil.example:9091"),
                ("authorization", &bearer(&admin_jwt)),
            ],
            None,
        )
        .await;
        assert_eq!(rebound.status, 421, "{path}");
        for host in ["synckit.internal:9091", "localhost", "[::1]:9091"] {
            let named = http(
                admin,
                "GET",
                path,
                &[("host", host), ("authorization", &bearer(&admin_jwt))],
                None,
            )
            .await;
            assert_eq!(named.status, 200, "{path} via {host}");
        }
    }
    let detail = http(
        admin,
        "GET",
        paths[0],
        &[("authorization", &bearer(&admin_jwt))],
        None,
    )
    .await;
    assert_eq!(detail.json()["fields"]["good"], "before");
    // Probes and the metrics scrape stay open, whatever the Host.
    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        let r = http(admin, "GET", path, &[("host", "probe.example")], None).await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert!(refusals(admin, "admin_unauthorized").await >= 14);
    assert!(refusals(admin, "admin_host").await >= 7);
    write_acked(&mut good, "secret-doc", "good", json!("after"), "g1").await;
    stop(server).await;

    // Opted out (a loopback-only host): reads without a credential; the Host
    // check and the actions' credential remain.
    let mut config = open_config();
    config.admin_reads_open = true;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    assert_eq!(
        http(admin, "GET", "/admin/sessions", &[], None)
            .await
            .status,
        200
    );
    let rebound = http(admin, "GET", "/stats", &[("host", "evil.example")], None).await;
    assert_eq!(rebound.status, 421);
    let action = http(
        admin,
        "POST",
        "/admin/actions/prune-awareness",
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(action.status, 401);
    stop(server).await;
}

#[tokio::test]
async fn the_console_feed_reads_with_its_credential() {
    use synckit::console::credential::Credential;
    use synckit::console::feed::{FeedConfig, Poller};
    use synckit::console::model::SourceState;
    let mut config = open_config();
    config.admin_reads_open = false;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let _good = good_client(&server, "feed-doc").await;
    let feed = |credential| {
        Poller::new(FeedConfig {
            servers: vec![format!("http://{admin}")],
            database_url: None,
            redis_url: None,
            channel_prefix: "synckit:".into(),
            credential,
        })
    };
    let without = feed(Credential::default()).instances().await;
    assert!(
        matches!(&without[0].state, SourceState::Down { error } if error.contains("admin credential")),
        "{:?}",
        without[0].state
    );
    let minted = synckit::testing::auth::Authenticator::new(config.jwt.clone());
    for credential in [
        Credential::token(user_token("ops", &[], &[], true)),
        Credential::new(None, Some(Arc::new(minted))),
    ] {
        let with = feed(credential).instances().await;
        assert!(
            matches!(with[0].state, SourceState::Up { .. }),
            "{:?}",
            with[0].state
        );
        assert!(with[0].documents.iter().any(|d| d.id == "feed-doc"));
        assert_eq!(with[0].sessions.len(), 1);
    }
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 10. Close codes reach a client that keeps sending

/// A client with a small receive buffer that sends `before` pings (their pongs back
/// up in the server's send queue), then `trigger`, then keeps sending pings, and
/// only then reads: the close code it gets to see. A server that closes its socket
/// with unread input resets the connection, and the reset discards the queued
/// replies and the close frame behind them.
async fn close_code_seen_by_a_busy_client(server: &TestServer, trigger: Message) -> Option<u16> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", server.addr), stream)
        .await
        .expect("handshake");
    let (mut tx, mut rx) = ws.split();
    let ping = Message::Binary(common::frame(0x30, &json!({"pad": "p".repeat(200)})).into());
    for i in 0..1200 {
        let frame = if i == 600 {
            trigger.clone()
        } else {
            ping.clone()
        };
        if tx.send(frame).await.is_err() {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = rx.next().await {
            match m {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(e) => panic!("the socket failed before the close frame arrived: {e}"),
            }
        }
        None
    })
    .await
    .expect("a close within 10 s")
}

#[tokio::test]
async fn a_client_still_sending_reads_the_close_code() {
    let mut config = auth_config();
    config.max_frame_bytes = 64 * 1024;
    config.sync.max_messages_per_minute = 0;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    for round in 0..3 {
        // 1009: a frame over the limit, with more frames behind it.
        let big = Message::Binary(vec![0x30; 200 * 1024].into());
        assert_eq!(
            close_code_seen_by_a_busy_client(&server, big).await,
            Some(1009),
            "round {round}"
        );
        // 1008: a bad token, and an auth without credentials.
        for trigger in [json!({"token": "not-a-jwt"}), json!({})] {
            let frame = Message::Binary(common::frame(0x01, &trigger).into());
            assert_eq!(
                close_code_seen_by_a_busy_client(&server, frame).await,
                Some(1008),
                "round {round}, auth {trigger}"
            );
        }
    }
    // Each close is counted by its reason (a bad token as an auth failure).
    assert_eq!(refusals(admin, "frame_too_large").await, 3);
    assert_eq!(refusals(admin, "not_authenticated").await, 3);
    assert_eq!(
        metric(admin, "synckit_auth_failures_total").await,
        Some(3.0)
    );
    let mut good = authed(&server, &user_token("g", &["*"], &["*"], false), true).await;
    common::subscribe(&mut good, "close-doc").await;
    write_acked(&mut good, "close-doc", "f", json!(1), "g").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// 11. Log and reply floods

#[tokio::test]
async fn floods_get_neither_a_reply_flood_nor_a_log_flood() {
    // The real binary, so its log is what an operator would read.
    let (child, server) = common::spawn_serve_logged(
        &[
            ("SYNCKIT_MAX_MESSAGES_PER_MINUTE", "5"),
            ("LOG_FORMAT", "json"),
        ],
        std::process::Stdio::piped(),
    )
    .await;
    let mut child = child;
    let mut good = good_client(&server, "flood-doc").await;
    let mut c = Client::connect(&server, false).await;
    for i in 0..5 {
        c.send(json!({"type":"sync_request","id":format!("r{i}"),"documentId":"d"}))
            .await;
        c.expect("sync_response").await;
    }
    // 2,000 undecodable frames past the limit: they count against it, and the
    // refusal is answered at most once a second.
    for _ in 0..2_000 {
        c.send_raw(Message::Text("garbage".into())).await;
    }
    let replies = c.messages_before_pong().await;
    assert!(
        (1..=3).contains(&replies.len()),
        "{} replies to 2,000 refused frames",
        replies.len()
    );
    assert!(replies
        .iter()
        .all(|m| m["error"] == "Too many messages. Please slow down."));
    write_acked(&mut good, "flood-doc", "good", json!(1), "g1").await;
    drop(c);
    let _ = child.start_kill();
    let out = child.wait_with_output().await.expect("log");
    let log = String::from_utf8_lossy(&out.stderr);
    let refusal_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("client input refused"))
        .collect();
    // One line per reason per connection per minute: rate_limited here.
    assert_eq!(refusal_lines.len(), 1, "{log}");
    assert!(refusal_lines[0].contains("rate_limited"), "{log}");
}
