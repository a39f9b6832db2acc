//! The admission layer's second round over real sockets: the bounds a security
//! review found missing or wrong (a client that stops reading, clock sizes,
//! awareness, chunk ids, batches, upgrade requests). Each test shows the refusal,
//! that nothing of it was applied or broadcast, that it is counted in `/metrics` by
//! reason, and that a well-behaved client on the same server kept its acks.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{open_config, Client, TestServer};
use crate::wire_admission::{good_client, memory, metric, refusals, start, stop, write_acked};
use futures_util::{SinkExt, StreamExt};

/// Poll `series` until it equals `want` or `within` passes; returns the last value.
async fn wait_metric(
    admin: std::net::SocketAddr,
    series: &str,
    want: f64,
    within: Duration,
) -> Option<f64> {
    let until = Instant::now() + within;
    loop {
        let v = metric(admin, series).await;
        if v == Some(want) || Instant::now() >= until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WebSocket whose receive buffer is tiny, so the server's writes to it block as
/// soon as it stops reading.
async fn non_reading_socket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}/ws", server.addr);
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    ws
}

// ---------------------------------------------------------------------------------
// A client that never reads

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let mut config = open_config();
    config.write_timeout = Duration::from_secs(1);
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "other-doc").await;
    let mut writer = Client::connect(&server, false).await;
    write_acked(
        &mut writer,
        "big-doc",
        "big",
        json!("x".repeat(64 * 1024)),
        "w0",
    )
    .await;

    // Ask for the 64 KB document over and over and never read: the socket fills,
    // then the outbox, then the session would wait on its replies.
    let mut stuck = non_reading_socket(&server).await;
    let flood = tokio::spawn(async move {
        for i in 0..600 {
            let msg = json!({"type":"sync_request","id":format!("r{i}"),"documentId":"big-doc"});
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                stuck.send(Message::Text(msg.to_string().into())),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
        stuck
    });
    let mut stuck = flood.await.expect("flood");

    // Closed within the write timeout (plus slack), while the good client is served.
    write_acked(&mut good, "other-doc", "good", json!("during"), "g1").await;
    let open = wait_metric(
        admin,
        "synckit_connections_open",
        2.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(open, Some(2.0), "the non-reading client is still connected");
    assert_eq!(refusals(admin, "slow_client").await, 1);
    // Its socket is gone: reading drains what the kernel holds, then ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stuck.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stuck client's socket stayed open");
    write_acked(&mut good, "other-doc", "good", json!("after"), "g2").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Vector clocks: broadcast size, SDK batches, full documents

/// A batch of one-field ops by `writers` distinct client ids (`<prefix><i>`, padded
/// to `id_len` bytes), acked.
async fn many_writers(c: &mut Client, doc: &str, prefix: &str, writers: usize, id_len: usize) {
    let ops: Vec<serde_json::Value> = (0..writers)
        .map(|i| {
            let id = format!("{prefix}{i:0>width$}", width = id_len - prefix.len());
            json!({"type":"set","field":format!("{prefix}f{i}"),"value":i,"clientId":id})
        })
        .collect();
    let id = format!("{prefix}-batch");
    c.send(json!({"type":"delta_batch","documentId":doc,"messageId":id,"deltas":ops}))
        .await;
    loop {
        let m = c.recv().await;
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "ack" && m["messageId"] == id.as_str() {
            return;
        }
    }
}

fn clock_max(clock: &serde_json::Value) -> u64 {
    clock
        .as_object()
        .expect("clock object")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .max()
        .expect("a non-empty clock")
}

#[tokio::test]
async fn a_broadcast_delta_stays_small_however_many_writers_the_document_had() {
    let config = open_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut writer = Client::connect(&server, false).await;
    // 1000 writers with 200-byte ids: a whole clock of ~210 KB.
    many_writers(&mut writer, "wide-doc", "w", 1000, 200).await;
    let mut sub = Client::connect(&server, false).await;
    let sr = crate::common::subscribe(&mut sub, "wide-doc").await;
    assert_eq!(sr["clock"].as_object().expect("clock").len(), 1000);
    let doc_max = clock_max(&sr["clock"]);

    write_acked(&mut writer, "wide-doc", "title", json!("hello"), "t1").await;
    let d = sub.expect("delta").await;
    let bytes = d.to_string().len();
    assert!(
        bytes < 600,
        "one field reached a subscriber as {bytes} bytes"
    );
    // SDK clients order by max(clock): the compact clock keeps the document's max.
    assert!(clock_max(&d["clock"]) >= doc_max, "{d}");
    // A client id's own entry rides along.
    write_acked(&mut writer, "wide-doc", "title", json!("again"), "t2").await;
    let d = sub.expect("delta").await;
    assert!(d.to_string().len() < 600, "{d}");
    assert_eq!(
        metric(admin, "synckit_refusals_total{reason=\"slow_client\"}").await,
        Some(0.0)
    );
    stop(server).await;
}

#[tokio::test]
async fn an_sdk_batch_repeating_the_document_clock_on_every_op_is_accepted() {
    let mut config = open_config();
    config.sync.limits.max_clock_entries_per_message = 100;
    config.sync.limits.max_clock_entries_per_document = 100;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "sdk-doc").await;
    let mut w = Client::connect(&server, false).await;
    many_writers(&mut w, "sdk-doc", "c", 60, 8).await;
    let clock = crate::common::subscribe(&mut w, "sdk-doc").await["clock"].clone();
    // Five ops each carrying the whole 61-entry clock: 305 entries, 61 distinct.
    let ops: Vec<serde_json::Value> = (0..5)
        .map(|i| json!({"type":"set","field":format!("s{i}"),"value":i,"clock":clock}))
        .collect();
    w.send(json!({"type":"delta_batch","documentId":"sdk-doc","messageId":"b1","deltas":ops}))
        .await;
    let replies = w.collect_until(&["ack"]).await;
    assert!(
        replies.iter().all(|m| m["type"] != "error"),
        "an SDK batch was refused: {replies:?}"
    );
    // 101 distinct entries are still too many, refused whole and counted.
    let before = refusals(admin, "clock_invalid").await;
    let big: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("n{i}"), json!(1))).collect();
    let ops = vec![
        json!({"type":"set","field":"n-a","value":1,"clock":clock}),
        json!({"type":"set","field":"n-b","value":1,"clock":big}),
    ];
    w.send(json!({"type":"delta_batch","documentId":"sdk-doc","messageId":"b2","deltas":ops}))
        .await;
    let m = w.expect("error").await;
    assert_eq!(
        m["error"], "Vector clock too large (162 entries, max 100)",
        "{m}"
    );
    assert_eq!(refusals(admin, "clock_invalid").await, before + 1);
    crate::wire_admission::nothing_about(&mut good, "a refused batch was broadcast", |m| {
        crate::wire_admission::field_delta(m, "n-a")
    })
    .await;
    write_acked(&mut good, "sdk-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

#[sqlx::test(migrations = false)]
async fn a_document_whose_clock_is_full_still_takes_new_writers(pool: sqlx::PgPool) {
    let mut config = open_config();
    config.sync.limits.max_clock_entries_per_document = 8;
    let backends = crate::wire_admission::postgres(&config, &pool);
    let (server, admin) = start(config.clone(), backends).await;
    let mut good = good_client(&server, "full-doc").await; // 1 entry
    let mut w = Client::connect(&server, false).await;
    many_writers(&mut w, "full-doc", "c", 7, 4).await; // 8 entries: full
    let before = refusals(admin, "document_clock_full").await;

    // A new writer, with a clock naming itself and a stranger (what an SDK sends):
    // applied, acked, broadcast and stored; its tick goes to the shared entry.
    let mut late = Client::connect(&server, false).await;
    late.send(
        json!({"type":"delta","documentId":"full-doc","field":"late","value":1,
        "clientId":"late-writer","vectorClock":{"late-writer":1,"stranger":1},"messageId":"l1"}),
    )
    .await;
    let replies = late.collect_until(&["ack"]).await;
    assert!(replies.iter().all(|m| m["type"] != "error"), "{replies:?}");
    let d = loop {
        let d = good.expect("delta").await;
        if d["field"] == "late" {
            break d;
        }
    };
    assert!(clock_max(&d["clock"]) >= 1);
    let sr = crate::common::subscribe(&mut late, "full-doc").await;
    assert_eq!(sr["state"]["late"], 1);
    let clock = sr["clock"].as_object().expect("clock");
    assert_eq!(clock.len(), 9, "8 writers and the shared entry: {clock:?}");
    assert!(clock.contains_key("overflow"), "{clock:?}");
    assert!(!clock.contains_key("late-writer") && !clock.contains_key("stranger"));
    assert_eq!(refusals(admin, "document_clock_full").await, before + 1);
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM vector_clocks WHERE document_id = 'full-doc'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(rows, 9);
    assert_eq!(
        crate::wire_admission::stored_fields(&pool, "full-doc").await["late"],
        json!(1)
    );
    write_acked(&mut good, "full-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Awareness bounds

fn awareness(doc: &str, client: &str, state: serde_json::Value, clock: u64) -> serde_json::Value {
    json!({"type":"awareness_update","documentId":doc,"clientId":client,"state":state,"clock":clock})
}

/// Every awareness_update `c` receives before its pong.
async fn awareness_seen(c: &mut Client) -> Vec<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.messages_before_pong()
        .await
        .into_iter()
        .filter(|m| m["type"] == "awareness_update")
        .collect()
}

#[tokio::test]
async fn awareness_client_ids_and_state_sizes_are_bounded() {
    let mut config = open_config();
    config.sync.limits.max_awareness_clients_per_document = 3;
    config.sync.limits.max_awareness_clients_per_connection = 2;
    config.sync.limits.max_awareness_state_bytes = 100;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "pdoc").await;
    let mut watcher = Client::connect(&server, false).await;
    watcher
        .send(json!({"type":"awareness_subscribe","documentId":"pdoc"}))
        .await;
    watcher.expect("awareness_state").await;

    // A state over the byte cap.
    let mut a = Client::connect(&server, false).await;
    a.send(awareness("pdoc", "a1", json!({"blob": "x".repeat(200)}), 1))
        .await;
    crate::wire_admission::expect_refusal(
        &mut a,
        "Awareness state too large (211 bytes, max 100)",
        json!({"code":"AWARENESS_LIMIT","documentId":"pdoc"}),
    )
    .await;
    assert_eq!(refusals(admin, "awareness_state_too_large").await, 1);

    // Two client ids per connection; updates of those and leaves still pass.
    a.send(awareness("pdoc", "a1", json!({"n":1}), 1)).await;
    a.send(awareness("pdoc", "a2", json!({"n":2}), 1)).await;
    a.send(awareness("pdoc", "a3", json!({"n":3}), 1)).await;
    crate::wire_admission::expect_refusal(
        &mut a,
        "Too many awareness clients on this connection (max 2)",
        json!({"code":"AWARENESS_LIMIT","documentId":"pdoc"}),
    )
    .await;
    a.send(awareness("pdoc", "a1", json!({"n":11}), 2)).await;
    a.assert_alive().await;

    // Three client ids per document, whichever connections hold them.
    let mut b = Client::connect(&server, false).await;
    b.send(awareness("pdoc", "b1", json!({"n":4}), 1)).await;
    b.send(awareness("pdoc", "b2", json!({"n":5}), 1)).await;
    crate::wire_admission::expect_refusal(
        &mut b,
        "Too many awareness clients in this document (max 3)",
        json!({"code":"AWARENESS_LIMIT","documentId":"pdoc"}),
    )
    .await;
    assert_eq!(refusals(admin, "awareness_client_limit").await, 2);
    let seen: Vec<String> = awareness_seen(&mut watcher)
        .await
        .iter()
        .map(|m| m["clientId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        seen,
        ["a1", "a2", "a1", "b1"],
        "only admitted updates broadcast"
    );

    // A leave frees the slots: of the connection and of the document.
    a.send(awareness("pdoc", "a2", serde_json::Value::Null, 2))
        .await;
    a.send(awareness("pdoc", "a4", json!({"n":6}), 1)).await;
    a.assert_alive().await;
    b.send(awareness("pdoc", "b2", json!({"n":5}), 1)).await;
    crate::wire_admission::expect_refusal(
        &mut b,
        "Too many awareness clients in this document (max 3)",
        json!({"code":"AWARENESS_LIMIT","documentId":"pdoc"}),
    )
    .await;
    let mut late = Client::connect(&server, false).await;
    late.send(json!({"type":"awareness_subscribe","documentId":"pdoc"}))
        .await;
    let states = late.expect("awareness_state").await["states"].clone();
    let mut ids: Vec<&str> = states
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["clientId"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a1", "a4", "b1"], "{states}");
    write_acked(&mut good, "pdoc", "good", json!("after"), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Chunk ids

#[tokio::test]
async fn a_chunk_id_is_bounded_like_a_document_id() {
    let config = open_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "chunk-doc").await;
    let mut c = Client::connect(&server, false).await;
    let whole = json!({"type":"delta","documentId":"chunk-doc","field":"chunked","value":1,
        "messageId":"c1"})
    .to_string();
    // A one-chunk set is a complete message: with a bad id, nothing of it applies.
    for id in ["x".repeat(256), "bad id".to_owned(), "a/b".to_owned()] {
        let before = refusals(admin, "chunk_invalid").await;
        c.send(crate::wire_admission::chunk(&id, 1, 0, whole.as_bytes()))
            .await;
        let m = c.expect("error").await;
        assert_eq!(m["error"], "Invalid chunk", "{id}: {m}");
        assert_eq!(refusals(admin, "chunk_invalid").await, before + 1, "{id}");
    }
    crate::wire_admission::nothing_about(&mut good, "a refused chunk applied", |m| {
        crate::wire_admission::field_delta(m, "chunked")
    })
    .await;
    // The longest valid id still works.
    c.send(crate::wire_admission::chunk(
        &"y".repeat(255),
        1,
        0,
        whole.as_bytes(),
    ))
    .await;
    c.expect("ack").await;
    write_acked(&mut good, "chunk-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Subscriptions per connection

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let mut config = open_config();
    config.sync.limits.max_subscriptions_per_connection = 3;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "s-good").await;
    let mut c = Client::connect(&server, false).await;
    for doc in ["s0", "s1", "s2"] {
        crate::common::subscribe(&mut c, doc).await;
    }
    let cached = metric(admin, "synckit_documents_cached").await;
    for msg in [
        json!({"type":"subscribe","documentId":"s3"}),
        json!({"type":"sync_request","documentId":"s3"}),
    ] {
        c.send(msg).await;
        crate::wire_admission::expect_refusal(
            &mut c,
            "Too many subscriptions (max 3)",
            json!({"code":"SUBSCRIPTION_LIMIT","documentId":"s3"}),
        )
        .await;
    }
    // Refused before the document is loaded; one already held passes.
    assert_eq!(metric(admin, "synckit_documents_cached").await, cached);
    crate::common::subscribe(&mut c, "s1").await;
    // A write past the cap is applied and acked, without subscribing the writer.
    write_acked(&mut c, "s4", "f", json!(1), "w1").await;
    write_acked(&mut good, "s4", "f", json!(2), "w2").await;
    crate::wire_admission::nothing_about(&mut c, "a delta of an unsubscribed document", |m| {
        m["type"] == "delta" && m["documentId"] == "s4"
    })
    .await;
    assert_eq!(refusals(admin, "subscription_limit").await, 2);
    // Unsubscribing frees a slot.
    c.send(json!({"type":"unsubscribe","documentId":"s0"}))
        .await;
    crate::common::subscribe(&mut c, "s3").await;
    write_acked(&mut good, "s-good", "good", json!("after"), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Upgrade requests, admin HEAD, proxy headers, anonymous presence

/// Send a raw upgrade request with `key` and return the status code.
async fn upgrade_status(addr: std::net::SocketAddr, key: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("status line in time")
            .expect("read");
        assert_eq!(n, 1, "closed before a status line");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code")
}

#[tokio::test]
async fn a_websocket_key_must_be_sixteen_bytes_of_base64() {
    let config = open_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "key-doc").await;
    for bad in [
        "short",
        "dGhlIHNhbXBsZSBub25jZQ",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        assert_eq!(upgrade_status(server.addr, bad).await, 400, "{bad}");
    }
    assert_eq!(refusals(admin, "invalid_upgrade").await, 4);
    assert_eq!(
        metric(admin, "synckit_connections_accepted_total").await,
        Some(1.0),
        "no refused upgrade became a connection"
    );
    assert_eq!(
        upgrade_status(server.addr, "dGhlIHNhbXBsZSBub25jZQ==").await,
        101
    );
    write_acked(&mut good, "key-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

#[tokio::test]
async fn head_requests_need_the_admin_credential_like_gets() {
    let mut config = open_config();
    config.admin_reads_open = false;
    config.jwt.api_keys = vec!["key-1".into()];
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "head-doc").await;
    for path in [
        "/admin/sessions",
        "/admin/documents/head-doc",
        "/stats",
        "/rooms",
    ] {
        for method in ["HEAD", "GET"] {
            let r = crate::common::http(admin, method, path, &[], None).await;
            assert_eq!(r.status, 401, "{method} {path}");
        }
        let r = crate::common::http(
            admin,
            "HEAD",
            path,
            &[("Authorization", "Bearer key-1")],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "HEAD {path} with the credential");
        assert!(r.body.is_empty(), "HEAD has no body");
    }
    assert_eq!(refusals(admin, "admin_unauthorized").await, 8);
    write_acked(&mut good, "head-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

#[tokio::test]
async fn x_real_ip_is_believed_only_from_a_trusted_proxy() {
    // Loopback (the test's own address) is not a trusted proxy here.
    let mut config = open_config();
    config.max_connections_per_ip = 2;
    config.trusted_proxies = synckit::server::proxy::parse_networks("10.0.0.0/8").expect("nets");
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut open = Vec::new();
    for i in 0..2 {
        let ip = format!("192.0.2.{i}");
        let mut c =
            crate::common::try_connect_with(server.addr, "/ws", &[("x-real-ip", &ip)], false)
                .await
                .expect("connect");
        c.assert_alive().await;
        open.push(c);
    }
    let mut third =
        crate::common::try_connect_with(server.addr, "/ws", &[("x-real-ip", "192.0.2.9")], false)
            .await
            .expect("connect");
    third
        .expect_close(1008, "Too many connections from your IP")
        .await;
    assert_eq!(
        metric(admin, "synckit_connections_rejected_per_ip_total").await,
        Some(1.0)
    );
    for c in &mut open {
        c.assert_alive().await;
    }
    stop(server).await;
}

#[tokio::test]
async fn an_anonymous_client_of_another_address_cannot_take_over_presence() {
    // Auth disabled: each address is its own anonymous user (the test config trusts
    // X-Forwarded-For from loopback, standing in for clients behind a proxy).
    let config = open_config();
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut watcher = Client::connect_from(&server, "10.0.0.9", false).await;
    watcher
        .send(json!({"type":"awareness_subscribe","documentId":"anon-doc"}))
        .await;
    watcher.expect("awareness_state").await;
    let mut owner = Client::connect_from(&server, "10.0.0.1", false).await;
    owner
        .send(awareness("anon-doc", "anon-client", json!({"name":"A"}), 1))
        .await;
    owner.assert_alive().await;
    assert_eq!(awareness_seen(&mut watcher).await.len(), 1);

    let mut other = Client::connect_from(&server, "10.0.0.2", false).await;
    for (state, clock) in [(json!({"name":"B"}), 9u64), (serde_json::Value::Null, 10)] {
        other
            .send(awareness("anon-doc", "anon-client", state, clock))
            .await;
        crate::wire_admission::expect_refusal(
            &mut other,
            "Awareness client id belongs to another connection",
            json!({"code":"NOT_OWNER","documentId":"anon-doc"}),
        )
        .await;
    }
    assert!(
        awareness_seen(&mut watcher).await.is_empty(),
        "a takeover was broadcast"
    );
    assert_eq!(refusals(admin, "awareness_not_owner").await, 2);
    // The owner keeps updating.
    owner
        .send(awareness(
            "anon-doc",
            "anon-client",
            json!({"name":"A2"}),
            2,
        ))
        .await;
    let seen = awareness_seen(&mut watcher).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["state"]["name"], "A2");
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Batches are refused whole

#[sqlx::test(migrations = false)]
async fn a_batch_with_one_bad_op_applies_nothing(pool: sqlx::PgPool) {
    let mut config = crate::wire_admission::auth_config();
    config.sync.limits.max_text_ops_per_batch = 2;
    let backends = crate::wire_admission::postgres(&config, &pool);
    let (server, admin) = start(config.clone(), backends).await;
    let token = crate::common::user_token("u", &["bdoc"], &["bdoc"], false);
    let mut good = crate::wire_admission::authed(&server, &token, true).await;
    crate::common::subscribe(&mut good, "bdoc").await;
    write_acked(&mut good, "bdoc", "good", json!(1), "g0").await;
    let mut c = crate::wire_admission::authed(&server, &token, false).await;
    let set = |field: &str| json!({"type":"set","field":field,"value":1});
    let text = |doc: &str| json!({"type":"text-state","documentId":doc,"state":"{}","timestamp":1});
    let invalid = refusals(admin, "invalid_message").await;
    let denied = refusals(admin, "permission_denied").await;
    for (ops, error) in [
        (vec![set("a1"), set("")], "Invalid field name"),
        (
            vec![set("a2"), json!(5)],
            "Invalid delta batch: missing or empty deltas array",
        ),
        (vec![set("a3"), text("other")], "Permission denied"),
        (
            vec![set("a4"), text("bdoc"), text("bdoc"), text("bdoc")],
            "Too many text states in one batch (3, max 2)",
        ),
    ] {
        c.send(json!({"type":"delta_batch","documentId":"bdoc","messageId":"b","deltas":ops}))
            .await;
        let replies = c.messages_before_pong().await;
        assert!(
            replies
                .iter()
                .any(|m| m["type"] == "error" && m["error"] == error),
            "{error}: {replies:?}"
        );
        assert!(
            replies
                .iter()
                .all(|m| m["type"] != "ack" && m["type"] != "delta"),
            "{error}: part of a refused batch applied: {replies:?}"
        );
    }
    crate::wire_admission::nothing_about(&mut good, "a refused batch broadcast", |m| {
        m["type"] == "delta" || m["type"] == "delta_batch"
    })
    .await;
    let stored = crate::wire_admission::stored_fields(&pool, "bdoc").await;
    for f in ["a1", "a2", "a3", "a4"] {
        assert!(stored.get(f).is_none(), "{f} stored: {stored}");
    }
    assert_eq!(refusals(admin, "invalid_message").await, invalid + 3);
    assert_eq!(refusals(admin, "permission_denied").await, denied + 1);
    write_acked(&mut good, "bdoc", "good", json!(2), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Every refusal is counted

#[tokio::test]
async fn refusals_before_auth_and_of_malformed_messages_are_counted() {
    let mut config = crate::wire_admission::auth_config();
    config.sync.auth_timeout = Duration::from_millis(500);
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let token = crate::common::user_token("u", &["*"], &["*"], false);
    let mut good = crate::wire_admission::authed(&server, &token, false).await;
    crate::common::subscribe(&mut good, "count-doc").await;

    let mut early = Client::connect(&server, false).await;
    early
        .send(json!({"type":"subscribe","documentId":"count-doc"}))
        .await;
    assert_eq!(early.expect("error").await["error"], "Not authenticated");
    early.close_and_wait().await;
    let mut idle = Client::connect(&server, false).await;
    idle.expect_close(1008, "Authentication timeout").await;
    assert_eq!(refusals(admin, "not_authenticated").await, 2);

    let mut c = crate::wire_admission::authed(&server, &token, false).await;
    c.send(json!({"type":"sync_response","documentId":"count-doc"}))
        .await;
    let m = c.expect("error").await;
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Invalid message type")),
        "{m}"
    );
    c.send(json!({"type":"delta","documentId":"count-doc","messageId":"d"}))
        .await;
    c.expect("error").await;
    c.send(json!({"type":"awareness_update","documentId":"count-doc","clientId":"x","state":5,"clock":1}))
        .await;
    assert_eq!(
        c.expect("error").await["error"],
        "Invalid awareness state format"
    );
    assert_eq!(refusals(admin, "invalid_message").await, 3);
    write_acked(&mut good, "count-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_counted() {
    let mut config = open_config();
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(400);
    let (server, admin) = start(config.clone(), memory(&config)).await;
    // Never sends (nor answers pings: it does not read).
    let _silent = non_reading_socket(&server).await;
    let counted = wait_metric(
        admin,
        "synckit_refusals_total{reason=\"heartbeat_timeout\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(counted, Some(1.0));
    let mut good = Client::connect(&server, false).await;
    write_acked(&mut good, "silent-doc", "good", json!(1), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Slow request heads

/// Send `head` a byte every `gap`; returns how long the server kept the connection
/// (None: it was still open when the whole head had been sent).
async fn slow_head(addr: std::net::SocketAddr, head: &str, gap: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for byte in head.bytes() {
        if s.write_all(&[byte]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 256];
        // A closed connection reads as EOF (or a reset) at once.
        match tokio::time::timeout(gap, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => return Some(started.elapsed()),
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut_off() {
    let mut config = open_config();
    config.header_read_timeout = Duration::from_secs(1);
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "slow-doc").await;
    // 40 bytes at 100 ms: 4 s for the whole upgrade head, far past the timeout.
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
        server.addr
    );
    let mut slow = Vec::new();
    for listener in [server.addr, admin] {
        let kept = slow_head(listener, &head, Duration::from_millis(100)).await;
        let kept = kept.expect("a slowloris head was never cut off");
        assert!(kept < Duration::from_secs(3), "cut off after {kept:?}");
        slow.push(kept);
    }
    assert_eq!(refusals(admin, "header_timeout").await, 2, "{slow:?}");
    // A head sent at once is served as before.
    let r = crate::common::http(server.addr, "GET", "/health", &[], None).await;
    assert_eq!(r.status, 200);
    write_acked(&mut good, "slow-doc", "good", json!("after"), "g1").await;
    stop(server).await;
}

// ---------------------------------------------------------------------------------
// Frames are bounded by the message limit

#[tokio::test]
async fn the_default_frame_limit_follows_the_message_limit() {
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let (mut child, server) = crate::common::spawn_serve(&[
        ("SYNCKIT_MAX_MESSAGE_BYTES", "100000"),
        // The frame limit follows the larger of the two message limits (text states
        // may be far bigger than other messages); pin both to see it follow.
        ("SYNCKIT_MAX_TEXT_MESSAGE_BYTES", "100000"),
        ("SYNCKIT_ADMIN_LISTEN", &admin_listen),
    ])
    .await;
    let admin: std::net::SocketAddr = admin_listen.parse().expect("addr");
    let mut good = good_client(&server, "frame-doc").await;
    let mut c = Client::connect(&server, false).await;
    let pad =
        |n: usize| json!({"type":"sync_request","documentId":"frame-doc","pad":"p".repeat(n)});
    // A little over the message limit: the error reply, and the connection stays.
    c.send(pad(120_000)).await;
    let m = c.expect("error").await;
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Message too large")),
        "{m}"
    );
    c.assert_alive().await;
    // Far over it (but far under the old 10 MiB frame limit): closed unread.
    c.send(pad(300_000)).await;
    c.expect_close(1009, "Message too large").await;
    assert_eq!(refusals(admin, "message_too_large").await, 1);
    assert_eq!(refusals(admin, "frame_too_large").await, 1);
    write_acked(&mut good, "frame-doc", "good", json!("after"), "g1").await;
    let _ = child.kill().await;
}

// ---------------------------------------------------------------------------------
// IPv6 clients are counted per network

#[tokio::test]
async fn ipv6_addresses_of_one_network_share_the_per_ip_limit() {
    let mut config = open_config();
    config.max_connections_per_ip = 2;
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut open = Vec::new();
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::7"] {
        let mut c = Client::connect_from(&server, ip, false).await;
        c.assert_alive().await;
        open.push(c);
    }
    // A third address of the same /64 is the same client.
    let mut third = Client::connect_from(&server, "2001:db8:1:2:dead:beef::1", false).await;
    third
        .expect_close(1008, "Too many connections from your IP")
        .await;
    assert_eq!(
        metric(admin, "synckit_connections_rejected_per_ip_total").await,
        Some(1.0)
    );
    // Another /64 is another client; the first two keep working.
    let mut other = Client::connect_from(&server, "2001:db8:1:3::1", false).await;
    write_acked(&mut other, "v6-doc", "good", json!(1), "g1").await;
    for c in &mut open {
        c.assert_alive().await;
    }
    stop(server).await;
}
