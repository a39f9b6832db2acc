//! Awareness (presence) over a real socket, in both encodings (docs/protocol.md §7.13–§7.16):
//! `awareness_subscribe` → `awareness_state`, `awareness_update` fan-out to awareness ∪
//! document subscribers excluding the sender, the monotonic-clock rule, `null` leaves,
//! expiry after the awareness timeout, and leaves for a closed connection's clients.

use crate::common;

use std::time::{Duration, Instant};

use common::{open_config, start, Client, TestServer};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(150);

/// `states` of an `awareness_state`, sorted by client id (the order is unspecified).
fn states(msg: &Value) -> Vec<Value> {
    assert_eq!(msg["type"], "awareness_state", "{msg}");
    let mut s = msg["states"].as_array().expect("states array").clone();
    s.sort_by(|a, b| {
        a["clientId"]
            .as_str()
            .unwrap_or("")
            .cmp(b["clientId"].as_str().unwrap_or(""))
    });
    s
}

async fn awareness_subscribe(c: &mut Client, doc: &str) -> Vec<Value> {
    c.send(json!({"type":"awareness_subscribe","documentId":doc}))
        .await;
    let m = c.expect("awareness_state").await;
    assert_eq!(m["documentId"], doc);
    states(&m)
}

async fn update(c: &mut Client, doc: &str, client: &str, state: Value, clock: u64) {
    c.send(json!({"type":"awareness_update","documentId":doc,"clientId":client,"state":state,"clock":clock}))
        .await;
}

/// Send an update and check that the sender itself gets nothing back for it (the
/// sender must have nothing else pending: everything before the pong is checked).
async fn update_no_echo(c: &mut Client, doc: &str, client: &str, state: Value, clock: u64) {
    update(c, doc, client, state, clock).await;
    let before = c.messages_before_pong().await;
    assert!(before.is_empty(), "sender got {before:?}");
}

async fn connect_all(server: &TestServer, binary: bool, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Client::connect(server, binary).await);
    }
    out
}

async fn subscribe_update_and_stale_clock(binary: bool) {
    let server = start(open_config()).await;
    let mut cs = connect_all(&server, binary, 5).await;
    let [a, b, c, d, other] = &mut cs[..] else {
        unreachable!()
    };
    let doc = "aw-doc";
    assert!(awareness_subscribe(a, doc).await.is_empty());
    update_no_echo(a, doc, "client-a", json!({"name":"A","cursor":3}), 1).await;

    // A late awareness subscriber gets the current states.
    let current = awareness_subscribe(b, doc).await;
    assert_eq!(
        current,
        vec![json!({"clientId":"client-a","state":{"name":"A","cursor":3},"clock":1})]
    );
    // A document subscriber (no awareness_subscribe) also receives updates (§7.13
    // union); a subscriber of another document receives nothing.
    c.send(json!({"type":"subscribe","documentId":doc})).await;
    c.expect("sync_response").await;
    assert!(awareness_subscribe(other, "aw-elsewhere").await.is_empty());

    update_no_echo(b, doc, "client-b", json!({"name":"B"}), 1).await;
    for peer in [&mut *a, &mut *c] {
        let mut m = peer.expect("awareness_update").await;
        let envelope = m.as_object_mut().expect("object");
        let id = envelope.remove("id");
        assert!(id.is_some_and(|id| id.as_str().is_some_and(|s| !s.is_empty())));
        envelope.remove("timestamp");
        assert_eq!(
            m,
            json!({"type":"awareness_update","documentId":doc,"clientId":"client-b","state":{"name":"B"},"clock":1})
        );
    }

    // Stale or equal clocks are dropped: no broadcast, stored state unchanged.
    update(a, doc, "client-a", json!({"name":"stale"}), 1).await;
    update(a, doc, "client-a", json!({"name":"older"}), 0).await;
    a.messages_before_pong().await;
    b.expect_silence(QUIET).await;
    c.expect_silence(QUIET).await;
    let current = awareness_subscribe(d, doc).await;
    assert_eq!(
        current,
        vec![
            json!({"clientId":"client-a","state":{"name":"A","cursor":3},"clock":1}),
            json!({"clientId":"client-b","state":{"name":"B"},"clock":1}),
        ]
    );

    // A newer clock is accepted and broadcast to everyone but the sender.
    update_no_echo(a, doc, "client-a", json!({"name":"A2"}), 5).await;
    for peer in [&mut *b, &mut *c, &mut *d] {
        let m = peer.expect("awareness_update").await;
        assert_eq!(m["clientId"], "client-a");
        assert_eq!(m["state"], json!({"name":"A2"}));
        assert_eq!(m["clock"], 5);
    }
    other.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn subscribe_update_and_stale_clock_binary() {
    subscribe_update_and_stale_clock(true).await;
}

#[tokio::test]
async fn subscribe_update_and_stale_clock_json() {
    subscribe_update_and_stale_clock(false).await;
}

async fn null_state_leaves(binary: bool) {
    let server = start(open_config()).await;
    let mut cs = connect_all(&server, binary, 3).await;
    let [a, b, late] = &mut cs[..] else {
        unreachable!()
    };
    let doc = "aw-leave";
    awareness_subscribe(a, doc).await;
    awareness_subscribe(b, doc).await;
    update_no_echo(a, doc, "client-a", json!({"x":1}), 7).await;
    assert_eq!(b.expect("awareness_update").await["clientId"], "client-a");
    update_no_echo(b, doc, "client-b", json!({"y":1}), 3).await;
    assert_eq!(a.expect("awareness_update").await["clientId"], "client-b");

    // An explicit leave is broadcast with state null and removes the entry.
    update_no_echo(a, doc, "client-a", Value::Null, 8).await;
    let m = b.expect("awareness_update").await;
    assert_eq!(m["clientId"], "client-a");
    assert_eq!(m["state"], Value::Null);
    assert_eq!(m["clock"], 8);

    // A leave wins whatever its clock (here lower than the stored 3).
    update_no_echo(b, doc, "client-b", Value::Null, 0).await;
    let m = a.expect("awareness_update").await;
    assert_eq!(m["clientId"], "client-b");
    assert_eq!(m["state"], Value::Null);

    assert!(awareness_subscribe(late, doc).await.is_empty());

    // After leaving, the same client may come back with any clock.
    update_no_echo(a, doc, "client-a", json!({"back":true}), 1).await;
    let m = b.expect("awareness_update").await;
    assert_eq!(m["state"], json!({"back":true}));
    assert_eq!(late.expect("awareness_update").await["clock"], 1);
    server.shutdown.cancel();
}

#[tokio::test]
async fn null_state_leaves_binary() {
    null_state_leaves(true).await;
}

#[tokio::test]
async fn null_state_leaves_json() {
    null_state_leaves(false).await;
}

async fn invalid_updates_are_refused(binary: bool) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, binary).await;
    let doc = "aw-invalid";
    awareness_subscribe(&mut b, doc).await;
    for bad in [
        json!({"type":"awareness_update","documentId":doc,"clientId":"c","state":"online","clock":1}),
        json!({"type":"awareness_update","documentId":doc,"clientId":"c","state":[1],"clock":1}),
        json!({"type":"awareness_update","documentId":doc,"state":{"a":1},"clock":1}),
        json!({"type":"awareness_update","documentId":doc,"clientId":"c","state":{"a":1}}),
        json!({"type":"awareness_update","documentId":doc,"clientId":"c","state":{"a":1},"clock":-1}),
    ] {
        a.send(bad.clone()).await;
        let e = a.expect("error").await;
        assert_eq!(e["error"], "Invalid awareness state format", "{bad}");
    }
    a.send(json!({"type":"awareness_update","documentId":"bad id","clientId":"c","state":{},"clock":1}))
        .await;
    assert_eq!(
        a.expect("error").await["error"],
        "Document ID contains invalid characters"
    );
    b.expect_silence(QUIET).await;
    // Nothing was stored.
    assert!(awareness_subscribe(&mut a, doc).await.is_empty());
    server.shutdown.cancel();
}

#[tokio::test]
async fn invalid_updates_are_refused_binary() {
    invalid_updates_are_refused(true).await;
}

#[tokio::test]
async fn invalid_updates_are_refused_json() {
    invalid_updates_are_refused(false).await;
}

async fn expiry_broadcasts_a_leave(binary: bool) {
    let mut config = open_config();
    config.sync.awareness_timeout = Duration::from_millis(300);
    config.awareness_sweep_interval = Duration::from_millis(40);
    let server = start(config).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, binary).await;
    let doc = "aw-expiry";
    awareness_subscribe(&mut a, doc).await;
    awareness_subscribe(&mut b, doc).await;
    update_no_echo(&mut a, doc, "client-a", json!({"here":true}), 4).await;
    let seen = b.expect("awareness_update").await;
    assert_eq!(seen["state"], json!({"here":true}));
    let since = Instant::now();

    // Both subscribers (the owner included) get a null leave with clock + 1.
    for c in [&mut b, &mut a] {
        let m = c
            .recv_timeout(Duration::from_secs(3))
            .await
            .expect("a leave after the awareness timeout");
        assert_eq!(m["type"], "awareness_update", "{m}");
        assert_eq!(m["documentId"], doc);
        assert_eq!(m["clientId"], "client-a");
        assert_eq!(m["state"], Value::Null);
        assert_eq!(m["clock"], 5);
    }
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "expired too early: {waited:?}"
    );
    assert!(awareness_subscribe(&mut b, doc).await.is_empty());
    // Exactly one leave.
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn expiry_broadcasts_a_leave_binary() {
    expiry_broadcasts_a_leave(true).await;
}

#[tokio::test]
async fn expiry_broadcasts_a_leave_json() {
    expiry_broadcasts_a_leave(false).await;
}

/// Each accepted update restarts the expiry timer (encoding-independent: binary only).
#[tokio::test]
async fn updates_keep_an_entry_alive() {
    let mut config = open_config();
    config.sync.awareness_timeout = Duration::from_millis(300);
    config.awareness_sweep_interval = Duration::from_millis(30);
    let server = start(config).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "aw-alive";
    awareness_subscribe(&mut b, doc).await;
    // Four updates 120 ms apart: 480 ms in total, never 300 ms without one.
    for clock in 1..=4u64 {
        update_no_echo(&mut a, doc, "client-a", json!({"n":clock}), clock).await;
        let m = b.expect("awareness_update").await;
        assert_eq!(m["clock"], clock, "no leave in between: {m}");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let current = awareness_subscribe(&mut b, doc).await;
    assert_eq!(
        current,
        vec![json!({"clientId":"client-a","state":{"n":4},"clock":4})]
    );
    server.shutdown.cancel();
}

async fn close_broadcasts_leaves_for_its_clients(binary: bool) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, binary).await;
    let mut watcher = Client::connect(&server, binary).await;
    let doc = "aw-close";
    let doc2 = "aw-close-2";
    awareness_subscribe(&mut watcher, doc).await;
    awareness_subscribe(&mut watcher, doc2).await;
    // A owns two clients in one document and one in another; B owns one.
    update_no_echo(&mut a, doc, "tab-1", json!({"t":1}), 3).await;
    update_no_echo(&mut a, doc, "tab-2", json!({"t":2}), 9).await;
    update_no_echo(&mut a, doc2, "tab-1", json!({"t":1}), 1).await;
    update_no_echo(&mut b, doc, "tab-b", json!({"t":"b"}), 2).await;
    let mut joined = Vec::new();
    for _ in 0..4 {
        let m = watcher.expect("awareness_update").await;
        joined.push(format!(
            "{}/{}",
            m["documentId"].as_str().expect("doc"),
            m["clientId"].as_str().expect("client")
        ));
    }
    joined.sort();
    assert_eq!(
        joined,
        [
            "aw-close-2/tab-1",
            "aw-close/tab-1",
            "aw-close/tab-2",
            "aw-close/tab-b"
        ]
    );

    a.close_and_wait().await;
    let mut leaves = Vec::new();
    for _ in 0..3 {
        let m = watcher.expect("awareness_update").await;
        assert_eq!(m["state"], Value::Null, "{m}");
        leaves.push((
            m["documentId"].as_str().expect("doc").to_owned(),
            m["clientId"].as_str().expect("client").to_owned(),
            m["clock"].as_u64().expect("clock"),
        ));
    }
    leaves.sort();
    assert_eq!(
        leaves,
        vec![
            (doc.to_owned(), "tab-1".to_owned(), 4),
            (doc.to_owned(), "tab-2".to_owned(), 10),
            (doc2.to_owned(), "tab-1".to_owned(), 2),
        ]
    );
    // B's client is untouched.
    watcher.expect_silence(QUIET).await;
    assert_eq!(
        awareness_subscribe(&mut watcher, doc).await,
        vec![json!({"clientId":"tab-b","state":{"t":"b"},"clock":2})]
    );
    assert!(awareness_subscribe(&mut watcher, doc2).await.is_empty());
    server.shutdown.cancel();
}

#[tokio::test]
async fn close_broadcasts_leaves_for_its_clients_binary() {
    close_broadcasts_leaves_for_its_clients(true).await;
}

#[tokio::test]
async fn close_broadcasts_leaves_for_its_clients_json() {
    close_broadcasts_leaves_for_its_clients(false).await;
}

/// A client that already left explicitly gets no second leave when its connection
/// closes, and a client taken over by another connection is not removed.
#[tokio::test]
async fn close_sends_no_leave_for_clients_already_gone_or_taken_over() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, false).await;
    let mut watcher = Client::connect(&server, true).await;
    let doc = "aw-handover";
    awareness_subscribe(&mut watcher, doc).await;
    update_no_echo(&mut a, doc, "gone", json!({}), 1).await;
    update_no_echo(&mut a, doc, "gone", Value::Null, 2).await;
    update_no_echo(&mut a, doc, "moved", json!({"on":"a"}), 1).await;
    // The same client id continues on another connection (e.g. a reconnect).
    update_no_echo(&mut b, doc, "moved", json!({"on":"b"}), 2).await;
    for _ in 0..4 {
        watcher.expect("awareness_update").await;
    }
    a.close_and_wait().await;
    watcher.expect_silence(Duration::from_millis(250)).await;
    assert_eq!(
        awareness_subscribe(&mut watcher, doc).await,
        vec![json!({"clientId":"moved","state":{"on":"b"},"clock":2})]
    );
    server.shutdown.cancel();
}

/// Awareness needs authentication when auth is required (Rust IMPROVE, §5.5).
#[tokio::test]
async fn awareness_requires_auth_when_auth_is_required() {
    let server = start(synckit::server::ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"awareness_subscribe","documentId":"d"}))
        .await;
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    c.send(json!({"type":"awareness_update","documentId":"d","clientId":"x","state":{},"clock":1}))
        .await;
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    server.shutdown.cancel();
}

/// Clocks beyond JavaScript's safe integers (2^53 − 1) cannot come from an SDK and
/// must not break the leave that follows (`clock + 1`) when the connection closes.
async fn huge_clocks(binary: bool) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut watcher = Client::connect(&server, binary).await;
    let doc = "aw-huge";
    awareness_subscribe(&mut watcher, doc).await;
    for clock in [u64::MAX, 9_007_199_254_740_992] {
        update(&mut a, doc, "big", json!({}), clock).await;
        assert_eq!(
            a.expect("error").await["error"],
            "Invalid awareness state format",
            "clock {clock}"
        );
    }
    let max_safe = 9_007_199_254_740_991u64;
    update_no_echo(&mut a, doc, "big", json!({"ok":true}), max_safe).await;
    assert_eq!(watcher.expect("awareness_update").await["clock"], max_safe);
    a.close_and_wait().await;
    let leave = watcher.expect("awareness_update").await;
    assert_eq!(leave["clientId"], "big");
    assert_eq!(leave["state"], Value::Null);
    assert_eq!(leave["clock"], max_safe + 1);
    // The server is still serving.
    watcher.assert_alive().await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn huge_clocks_binary() {
    huge_clocks(true).await;
}

#[tokio::test]
async fn huge_clocks_json() {
    huge_clocks(false).await;
}

/// With auth on, awareness needs read permission on the document (§7.13 IMPROVE).
#[tokio::test]
async fn awareness_needs_read_permission() {
    let server = start(synckit::server::ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, false).await;
    c.send(json!({"type":"auth","token":common::user_token("u", &["doc-a"], &[], false)}))
        .await;
    c.expect("auth_success").await;
    assert!(awareness_subscribe(&mut c, "doc-a").await.is_empty());
    c.send(json!({"type":"awareness_subscribe","documentId":"doc-b"}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":"doc-b"}));
    update(&mut c, "doc-b", "me", json!({}), 1).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":"doc-b"}));
    // Read permission is enough to publish presence.
    update_no_echo(&mut c, "doc-a", "me", json!({"here":1}), 1).await;
    assert_eq!(
        awareness_subscribe(&mut c, "doc-a").await,
        vec![json!({"clientId":"me","state":{"here":1},"clock":1})]
    );
    server.shutdown.cancel();
}
