//! Wire tests for admission limits, frame/message size, rate limit, document ids and
//! malformed input (docs/protocol.md §1, §2, §11, §12).

use crate::common;

use std::time::Duration;

use common::{frame, open_config, start, Client, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ENCODINGS: [bool; 2] = [true, false];

async fn expect_error(c: &mut Client, error: &str, details: Value) {
    let m = c.recv().await;
    assert_eq!(m["type"], "error", "expected error {error:?}, got {m}");
    assert_eq!(m["error"], error, "{m}");
    assert_eq!(
        m.get("details").cloned().unwrap_or(Value::Null),
        details,
        "{m}"
    );
}

/// Connect from `ip` until the server admits it (slots are released asynchronously
/// after a close); panics after ~2 s.
async fn connect_when_admitted(server: &TestServer, ip: &str) -> Client {
    for _ in 0..200 {
        let mut c = Client::connect_from(server, ip, true).await;
        // A refused socket may already be closed: ignore a failed send.
        let ping = Message::Binary(frame(0x30, &json!({})).into());
        if futures_util::SinkExt::send(&mut c.ws, ping).await.is_ok()
            && c.recv_timeout(Duration::from_secs(2))
                .await
                .is_some_and(|m| m["type"] == "pong")
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{ip} never admitted again");
}

#[tokio::test]
async fn per_ip_limit_closes_the_excess_connection_with_1008() {
    let mut config = open_config();
    config.max_connections_per_ip = 2;
    let server = start(config).await;
    let mut a = Client::connect_from(&server, "10.0.0.1", true).await;
    let mut b = Client::connect_from(&server, "10.0.0.1", false).await;
    a.assert_alive().await;
    b.assert_alive().await;
    let mut c = Client::connect_from(&server, "10.0.0.1", true).await;
    c.expect_close(1008, "Too many connections from your IP")
        .await;
    // The right-most X-Forwarded-For entry outside the trusted proxies is the
    // client (what a client puts before it proves nothing); other IPs are unaffected.
    let mut d = Client::connect_from(&server, "10.0.0.1, 10.0.0.2", true).await;
    d.assert_alive().await;
    let mut e = Client::connect_from(&server, "10.0.0.2, 10.0.0.1", true).await;
    e.expect_close(1008, "Too many connections from your IP")
        .await;
    // A refused connection does not hold a slot; a closed one gives its slot back.
    drop(a);
    let mut again = connect_when_admitted(&server, "10.0.0.1").await;
    again.assert_alive().await;
    b.assert_alive().await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn forwarded_headers_are_ignored_unless_trusted() {
    let mut config = open_config();
    config.max_connections_per_ip = 1;
    config.trust_proxy_headers = false;
    let server = start(config).await;
    let mut a = Client::connect_from(&server, "10.2.0.1", true).await;
    a.assert_alive().await;
    // Both come from 127.0.0.1 whatever the header says.
    let mut b = Client::connect_from(&server, "10.2.0.2", true).await;
    b.expect_close(1008, "Too many connections from your IP")
        .await;
    a.assert_alive().await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn total_capacity_closes_with_1008_after_the_per_ip_check() {
    let mut config = open_config();
    config.max_connections = 2;
    config.max_connections_per_ip = 1;
    let server = start(config).await;
    let mut a = Client::connect_from(&server, "10.1.0.1", true).await;
    let mut b = Client::connect_from(&server, "10.1.0.2", false).await;
    a.assert_alive().await;
    b.assert_alive().await;
    // Over both limits: the per-IP reason wins (TS order).
    let mut c = Client::connect_from(&server, "10.1.0.1", true).await;
    c.expect_close(1008, "Too many connections from your IP")
        .await;
    let mut d = Client::connect_from(&server, "10.1.0.3", false).await;
    d.expect_close(1008, "Server at maximum capacity").await;
    drop(b);
    let mut e = connect_when_admitted(&server, "10.1.0.3").await;
    e.assert_alive().await;
    a.assert_alive().await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_1009() {
    let mut config = open_config();
    config.max_frame_bytes = 1024;
    let server = start(config).await;
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        // Just under the limit is processed normally.
        let pad = "x".repeat(900);
        c.send(json!({"type":"sync_request","id":"r1","documentId":"d","pad":pad}))
            .await;
        assert_eq!(c.expect("sync_response").await["requestId"], "r1");
        let pad = "x".repeat(2000);
        let big = json!({"type":"sync_request","id":"r2","documentId":"d","pad":pad});
        if binary {
            let mut payload = big.clone();
            payload.as_object_mut().expect("object").remove("type");
            c.send_raw(Message::Binary(frame(0x12, &payload).into()))
                .await;
        } else {
            c.send_raw(Message::Text(big.to_string().into())).await;
        }
        c.expect_close(1009, "Message too large").await;
    }
    server.shutdown.cancel();
}

/// A `sync_request` whose JSON payload (binary) or text (JSON) is exactly `len` bytes.
fn sized_request(binary: bool, id: &str, len: usize) -> Vec<u8> {
    let base = if binary {
        json!({"id": id, "documentId": "doc-size", "pad": ""})
    } else {
        json!({"type": "sync_request", "id": id, "documentId": "doc-size", "pad": ""})
    };
    let fixed = serde_json::to_vec(&base).expect("json").len();
    assert!(len >= fixed);
    let mut msg = base;
    msg["pad"] = json!("p".repeat(len - fixed));
    let bytes = serde_json::to_vec(&msg).expect("json");
    assert_eq!(bytes.len(), len);
    if binary {
        frame(0x12, &msg)
    } else {
        bytes
    }
}

async fn send_bytes(c: &mut Client, bytes: Vec<u8>) {
    if c.binary {
        c.send_raw(Message::Binary(bytes.into())).await;
    } else {
        c.send_raw(Message::Text(
            String::from_utf8(bytes).expect("utf-8").into(),
        ))
        .await;
    }
}

#[tokio::test]
async fn message_over_max_message_bytes_is_an_error_and_the_connection_stays() {
    let mut config = open_config();
    config.sync.max_message_bytes = 200;
    let server = start(config).await;
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        send_bytes(&mut c, sized_request(binary, "ok", 200)).await;
        let sr = c.recv().await;
        assert_eq!(sr["type"], "sync_response", "at the limit is fine: {sr}");
        assert_eq!(sr["requestId"], "ok");
        send_bytes(&mut c, sized_request(binary, "big", 201)).await;
        expect_error(
            &mut c,
            "Message too large (201 bytes, max 200)",
            json!({"code": "INVALID_MESSAGE"}),
        )
        .await;
        // A too-large write is not applied either.
        let pad = "p".repeat(300);
        c.send(json!({"type":"delta","documentId":"doc-size","field":"f","value":pad,"messageId":"m1"}))
            .await;
        let m = c.recv().await;
        assert_eq!(m["type"], "error", "{m}");
        assert!(
            m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("Message too large (")),
            "{m}"
        );
        c.assert_alive().await;
        c.send(json!({"type":"sync_request","id":"after","documentId":"doc-size"}))
            .await;
        let sr = c.recv().await;
        assert_eq!(sr["requestId"], "after", "{sr}");
        assert_eq!(sr["state"], json!({}));
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn rate_limit_rejects_excess_messages_but_never_pings() {
    let mut config = open_config();
    config.sync.max_messages_per_minute = 5;
    let server = start(config).await;
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        for _ in 0..20 {
            c.assert_alive().await;
        }
        for i in 0..5 {
            let id = format!("r{i}");
            c.send(json!({"type":"sync_request","id":id,"documentId":"doc-rl"}))
                .await;
            let sr = c.recv().await;
            assert_eq!(
                sr["type"], "sync_response",
                "message {i} is within the limit: {sr}"
            );
            assert_eq!(sr["requestId"], id.as_str());
        }
        c.send(
            json!({"type":"delta","documentId":"doc-rl","field":"f","value":1,"messageId":"m1"}),
        )
        .await;
        expect_error(
            &mut c,
            "Too many messages. Please slow down.",
            json!({"code": "RATE_LIMIT_EXCEEDED"}),
        )
        .await;
        // The rejected write was dropped: no ack, no broadcast. The next refusals
        // within a second are silent (a flood gets no reply flood); after that the
        // error is sent again.
        c.expect_silence(Duration::from_millis(120)).await;
        c.send(json!({"type":"subscribe","documentId":"doc-rl"}))
            .await;
        c.expect_silence(Duration::from_millis(120)).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        c.send(json!({"type":"subscribe","documentId":"doc-rl"}))
            .await;
        expect_error(
            &mut c,
            "Too many messages. Please slow down.",
            json!({"code": "RATE_LIMIT_EXCEEDED"}),
        )
        .await;
        // Pings are still answered and the connection stays open.
        c.assert_alive().await;
        // Limits are per connection.
        let mut other = Client::connect(&server, binary).await;
        other
            .send(json!({"type":"sync_request","id":"o","documentId":"doc-rl"}))
            .await;
        let sr = other.recv().await;
        assert_eq!(
            sr["state"],
            json!({}),
            "the rate-limited delta did not apply"
        );
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn document_id_rules_apply_to_every_document_message() {
    let server = start(open_config()).await;
    let long = "a".repeat(256);
    let longest = "b".repeat(255);
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        c.send(json!({"type":"subscribe","id":"s1","documentId":longest}))
            .await;
        let sr = c.recv().await;
        assert_eq!(sr["type"], "sync_response", "255 characters are fine: {sr}");
        assert_eq!(sr["documentId"], longest.as_str());
        for msg in [
            json!({"type":"subscribe","documentId":long}),
            json!({"type":"sync_request","id":"r","documentId":long}),
            json!({"type":"delta","documentId":long,"field":"f","value":1}),
            json!({"type":"delta_batch","documentId":long,"deltas":[{"type":"set","field":"f","value":1}]}),
            json!({"type":"awareness_subscribe","documentId":long}),
            json!({"type":"awareness_update","documentId":long,"clientId":"c","state":{},"clock":1}),
        ] {
            c.send(msg.clone()).await;
            let m = c.recv().await;
            assert_eq!(m["type"], "error", "{msg}: {m}");
            assert_eq!(m["error"], "Document ID too long", "{m}");
        }
        for (id, error) in [
            (json!(""), "Invalid document ID"),
            (json!(5), "Invalid document ID"),
            (Value::Null, "Invalid document ID"),
            (json!("a/b"), "Document ID contains invalid characters"),
            (json!("a b"), "Document ID contains invalid characters"),
            (json!("dóc"), "Document ID contains invalid characters"),
        ] {
            c.send(json!({"type":"subscribe","documentId":id})).await;
            expect_error(&mut c, error, Value::Null).await;
        }
        c.send(json!({"type":"subscribe","documentId":"ok_doc:1-A"}))
            .await;
        assert_eq!(c.recv().await["documentId"], "ok_doc:1-A");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn malformed_json_and_unknown_types_keep_the_connection_usable() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    for (text, error, details) in [
        ("not json", "Invalid message format", Value::Null),
        ("{\"type\":", "Invalid message format", Value::Null),
        ("[1,2]", "Invalid message format", Value::Null),
        ("{\"id\":\"x\"}", "Invalid message format", Value::Null),
        ("{\"type\":5}", "Invalid message format", Value::Null),
        (
            "{\"type\":\"bogus\",\"id\":\"x\",\"timestamp\":1}",
            "Invalid message type: bogus",
            json!({"code": "INVALID_MESSAGE"}),
        ),
        (
            "{\"type\":\"sync_response\",\"documentId\":\"d\"}",
            "Invalid message type: sync_response",
            json!({"code": "INVALID_MESSAGE"}),
        ),
        (
            "{\"type\":\"auth_success\"}",
            "Invalid message type: auth_success",
            json!({"code": "INVALID_MESSAGE"}),
        ),
    ] {
        c.send_raw(Message::Text(text.into())).await;
        expect_error(&mut c, error, details).await;
    }
    c.assert_alive().await;
    c.send(json!({"type":"sync_request","id":"r1","documentId":"doc-ok"}))
        .await;
    assert_eq!(c.recv().await["requestId"], "r1");

    // Binary: unknown code, truncated header, length past the end, non-object payload.
    let mut b = Client::connect(&server, true).await;
    let mut past_end = frame(0x30, &json!({}));
    past_end[12] = 0xFF;
    for bad in [
        frame(0x99, &json!({})),
        vec![0x12, 0, 0, 0],
        past_end,
        frame(0x12, &json!("string")),
        {
            let mut f = frame(0x12, &json!({}));
            f.truncate(13);
            f.extend_from_slice(b"\xff\xfe");
            f[12] = 2;
            f
        },
    ] {
        b.send_raw(Message::Binary(bad.into())).await;
        expect_error(&mut b, "Invalid message format", Value::Null).await;
    }
    b.send_raw(Message::Binary(
        frame(0x13, &json!({"documentId":"d"})).into(),
    ))
    .await;
    expect_error(
        &mut b,
        "Invalid message type: sync_response",
        json!({"code": "INVALID_MESSAGE"}),
    )
    .await;
    b.assert_alive().await;
    b.send(json!({"type":"subscribe","documentId":"doc-ok"}))
        .await;
    assert_eq!(b.recv().await["type"], "sync_response");
    server.shutdown.cancel();
}
