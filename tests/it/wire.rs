//! Wire tests: the real protocol over a real socket against an in-process server.

use crate::common;

use std::time::Duration;

use common::{open_config, start, Client};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sdk_binary_flow_subscribe_delta_ack_broadcast() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    a.send(json!({"type":"subscribe","documentId":"doc-1"}))
        .await;
    let sr = a.expect("sync_response").await;
    assert_eq!(sr["documentId"], "doc-1");
    assert_eq!(sr["state"], json!({}));
    assert_eq!(sr["deltas"], json!([]));
    b.send(json!({"type":"subscribe","documentId":"doc-1"}))
        .await;
    b.expect("sync_response").await;
    a.send(json!({"type":"delta","documentId":"doc-1","field":"title","value":"hi","clock":{"client-a":3},"clientId":"client-a","timestamp":1,"messageId":"m-1"})).await;
    let ack = a.expect("ack").await;
    assert_eq!(ack["messageId"], "m-1");
    for c in [&mut a, &mut b] {
        let d = c.expect("delta").await;
        assert_eq!(d["documentId"], "doc-1");
        assert_eq!(d["field"], "title");
        assert_eq!(d["value"], "hi");
        assert_eq!(d["clientId"], "server");
        assert!(
            d["clock"]["client-a"].as_u64().expect("int") >= 3,
            "clock merged: {d}"
        );
    }
    // A late joiner gets the state with a non-empty integer clock.
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"subscribe","documentId":"doc-1","id":"s1"}))
        .await;
    let sr = c.expect("sync_response").await;
    assert_eq!(sr["state"], json!({"title":"hi"}));
    assert_eq!(sr["requestId"], "s1");
    assert!(!sr["clock"].as_object().expect("clock").is_empty());
    server.shutdown.cancel();
}

#[tokio::test]
async fn json_client_gets_text_frames_and_tombstones_delete() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    c.send(json!({"type":"auth","id":"a1","timestamp":1})).await;
    let auth = c.expect("auth_success").await;
    assert_eq!(auth["userId"], "anonymous");
    assert_eq!(auth["permissions"]["canRead"], json!(["*"]));
    c.send(json!({"type":"sync_request","id":"r1","timestamp":1,"documentId":"doc-2"}))
        .await;
    let sr = c.expect("sync_response").await;
    assert_eq!(sr["requestId"], "r1");
    c.send(json!({"type":"delta","id":"d1","timestamp":1,"documentId":"doc-2","delta":{"a":1,"b":2},"vectorClock":{}})).await;
    assert_eq!(c.expect("ack").await["messageId"], "d1");
    c.send(json!({"type":"delta","id":"d2","timestamp":1,"documentId":"doc-2","delta":{"a":{"__deleted":true}},"vectorClock":{}})).await;
    assert_eq!(c.expect("ack").await["messageId"], "d2");
    tokio::time::sleep(Duration::from_millis(120)).await;
    c.send(json!({"type":"sync_request","id":"r2","timestamp":1,"documentId":"doc-2"}))
        .await;
    let sr = loop {
        let m = c.expect("sync_response").await;
        if m["requestId"] == "r2" {
            break m;
        }
    };
    assert_eq!(sr["state"], json!({"b":2}));
    server.shutdown.cancel();
}

#[tokio::test]
async fn ping_pong_and_malformed_input_keep_the_connection() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    for bad in [
        vec![0x30u8, 0, 0],
        vec![0x77; 20],
        common::frame(0x30, &json!([1])),
    ] {
        c.send_raw(Message::Binary(bad.into())).await;
        let e = c.expect("error").await;
        assert_eq!(e["error"], "Invalid message format");
    }
    c.send(json!({"type":"error","error":"x"})).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"], "Invalid message type: error");
    assert_eq!(e["details"]["code"], "INVALID_MESSAGE");
    c.send(json!({"type":"subscribe","documentId":"bad id"}))
        .await;
    assert_eq!(
        c.expect("error").await["error"],
        "Document ID contains invalid characters"
    );
    c.send(json!({"type":"delta","documentId":"d","delta":{}}))
        .await;
    assert_eq!(
        c.expect("error").await["error"],
        "Invalid delta message: missing or empty delta"
    );
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn auth_required_rejects_unauthenticated_and_bad_tokens() {
    let server = start(synckit::server::ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"subscribe","documentId":"d"})).await;
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    c.send(json!({"type":"auth","token":"not-a-jwt"})).await;
    assert_eq!(
        c.expect("auth_error").await["error"],
        "Authentication failed"
    );
    let close = c.expect("__close").await;
    assert_eq!(close["code"], 1008);
    let mut d = Client::connect(&server, true).await;
    d.send(json!({"type":"auth"})).await;
    let e = d.expect("error").await;
    assert_eq!(e["error"], "Authentication required");
    assert_eq!(d.expect("__close").await["code"], 1008);
    server.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_flushes_batches_and_closes_with_1001() {
    let mut config = open_config();
    config.batch_delay = Duration::from_secs(5);
    let server = start(config).await;
    let mut a = Client::connect(&server, true).await;
    a.send(json!({"type":"subscribe","documentId":"doc-s"}))
        .await;
    a.expect("sync_response").await;
    a.send(json!({"type":"delta","documentId":"doc-s","field":"f","value":1,"messageId":"m"}))
        .await;
    a.expect("ack").await;
    server.shutdown.cancel();
    let d = a.expect("delta").await;
    assert_eq!(d["field"], "f", "pending batch flushed on shutdown");
    let close = a.expect("__close").await;
    assert_eq!(close["code"], 1001);
    assert_eq!(close["reason"], "Server shutdown");
    assert!(server.done.await.expect("join"), "drained");
}

/// The server's writer sends every byte itself (the WebSocket library only reads):
/// a protocol ping is answered with its payload, in order with the replies queued
/// before it, and the connection goes on.
#[tokio::test]
async fn a_protocol_ping_is_answered_with_its_payload() {
    use futures_util::StreamExt;
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    c.send(json!({"type":"ping"})).await;
    c.send_raw(Message::Ping(b"are you there".to_vec().into()))
        .await;
    let mut texts = 0;
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => break payload,
            Ok(Some(Ok(Message::Text(_)))) => texts += 1,
            other => panic!("expected a pong, got {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    assert_eq!(
        texts, 1,
        "the application pong came before the protocol pong"
    );
    c.assert_alive().await;
    server.shutdown.cancel();
}

/// A client's close is answered with its own code and reason (RFC 6455 §5.5.1), and
/// a close without a code with one without a code.
#[tokio::test]
async fn a_client_close_is_echoed() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    c.assert_alive().await;
    c.send_raw(Message::Close(Some(CloseFrame {
        code: 4001u16.into(),
        reason: "bye".into(),
    })))
    .await;
    c.expect_close(4001, "bye").await;

    let mut bare = Client::connect(&server, true).await;
    bare.assert_alive().await;
    bare.send_raw(Message::Close(None)).await;
    let m = bare.recv().await;
    assert_eq!(m["type"], "__close", "{m}");
    assert_eq!(m["code"], serde_json::Value::Null, "{m}");
    server.shutdown.cancel();
}
