//! Document sync over a real socket (docs/protocol.md §7–§9, §14): `delta_batch` (0x50, the
//! 0x22 alias, JSON) with field and text-CRDT ops, text relays and their permission
//! checks, `sync_request` with `vectorClock`/`textState`, the `sync_step1` stub,
//! `delta_batch_chunk` reassembly and its bounds, batching across disconnects, and the
//! §14 checklist items tests/wire.rs does not cover.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{frame, fugue, of_type, open_config, start, subscribe, text_of, user_token, Client};
use serde_json::{json, Value};
use synckit::server::ServerConfig;
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(150);

async fn auth(c: &mut Client, token: &str) {
    c.send(json!({"type":"auth","token":token})).await;
    c.expect("auth_success").await;
}

/// A fresh `sync_request` answered with the full state (matched on `requestId`).
async fn state_of(c: &mut Client, doc: &str, id: &str) -> Value {
    c.send(json!({"type":"sync_request","id":id,"documentId":doc}))
        .await;
    loop {
        let m = c.expect("sync_response").await;
        if m["requestId"] == id {
            return m;
        }
    }
}

/// Receive `n` field deltas, sorted by field, checking the SDK shape of each.
async fn field_deltas(c: &mut Client, doc: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c.expect("delta").await;
        assert_eq!(m["documentId"], doc, "{m}");
        assert_eq!(m["clientId"], "server", "{m}");
        let clock = m["clock"].as_object().expect("clock object");
        assert!(!clock.is_empty(), "empty clock: {m}");
        assert!(clock.values().all(Value::is_u64), "integer clock: {m}");
        assert!(m["field"].is_string(), "{m}");
        out.push(m);
    }
    out.sort_by(|a, b| a["field"].as_str().cmp(&b["field"].as_str()));
    out
}

fn assert_integer_clock_if_state(sr: &Value) {
    let clock = sr["clock"].as_object().expect("clock is always present");
    assert!(clock.values().all(Value::is_u64), "{sr}");
    if !sr["state"].as_object().expect("state").is_empty() {
        assert!(!clock.is_empty(), "non-empty state needs a clock: {sr}");
    }
}

// ---------------------------------------------------------------------------
// delta_batch: fields

async fn batch_applies_acks_and_broadcasts(binary: bool) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, !binary).await;
    let doc = "batch-doc";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    a.send(json!({"type":"delta_batch","documentId":doc,"messageId":"mb-1","deltas":[
        {"type":"set","documentId":doc,"field":"title","value":"T","clock":{"client-a":5},"clientId":"client-a","timestamp":1},
        {"type":"set","documentId":doc,"field":"count","value":3,"clock":{"client-a":6},"clientId":"client-a","timestamp":2},
        {"type":"set","documentId":doc,"field":"nested","value":{"k":[1,null]},"clientId":"client-a","timestamp":3},
        {"type":"set","documentId":doc,"field":"nothing","value":null,"clientId":"client-a","timestamp":4}
    ]}))
    .await;
    assert_eq!(a.expect("ack").await["messageId"], "mb-1");
    for c in [&mut a, &mut b] {
        let ds = field_deltas(c, doc, 4).await;
        let got: Vec<(&str, &Value)> = ds
            .iter()
            .map(|d| (d["field"].as_str().expect("field"), &d["value"]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("count", &json!(3)),
                ("nested", &json!({"k":[1,null]})),
                ("nothing", &Value::Null),
                ("title", &json!("T")),
            ]
        );
        // The flush carries the full merged clock: at least the client's own 6.
        for d in &ds {
            assert!(d["clock"]["client-a"].as_u64().expect("int") >= 6, "{d}");
        }
        c.expect_silence(QUIET).await;
    }
    let sr = state_of(&mut b, doc, "r-state").await;
    assert_eq!(
        sr["state"],
        json!({"title":"T","count":3,"nested":{"k":[1,null]},"nothing":null})
    );
    assert_integer_clock_if_state(&sr);
    server.shutdown.cancel();
}

#[tokio::test]
async fn batch_applies_acks_and_broadcasts_binary() {
    batch_applies_acks_and_broadcasts(true).await;
}

#[tokio::test]
async fn batch_applies_acks_and_broadcasts_json() {
    batch_applies_acks_and_broadcasts(false).await;
}

#[tokio::test]
async fn batch_code_0x22_is_accepted_as_delta_batch() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let doc = "batch-22";
    subscribe(&mut a, doc).await;
    let payload = json!({"documentId":doc,"messageId":"m22","deltas":[{"type":"set","field":"go","value":"py","clientId":"g"}]});
    a.send_raw(Message::Binary(frame(0x22, &payload).into()))
        .await;
    let msgs = a.collect_until(&["ack", "delta"]).await;
    assert_eq!(of_type(&msgs, "ack")[0]["messageId"], "m22");
    let d = of_type(&msgs, "delta")[0];
    assert_eq!((&d["field"], &d["value"]), (&json!("go"), &json!("py")));
    assert_eq!(
        state_of(&mut a, doc, "r").await["state"],
        json!({"go":"py"})
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn batch_ack_falls_back_to_message_id_then_a_generated_one() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    let op = json!([{"type":"set","field":"f","value":1}]);
    c.send(
        json!({"type":"delta_batch","id":"jb-1","timestamp":1,"documentId":"ack-doc","deltas":op}),
    )
    .await;
    assert_eq!(c.expect("ack").await["messageId"], "jb-1");
    c.send(json!({"type":"delta_batch","id":"jb-2","documentId":"ack-doc","messageId":"payload-id","deltas":op}))
        .await;
    assert_eq!(c.expect("ack").await["messageId"], "payload-id");
    c.send(json!({"type":"delta_batch","documentId":"ack-doc","deltas":op}))
        .await;
    let ack = c.expect("ack").await;
    assert!(
        ack["messageId"].as_str().is_some_and(|s| !s.is_empty()),
        "{ack}"
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn batch_deletes_and_coalesces_per_field() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "batch-del";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    a.send(json!({"type":"delta_batch","documentId":doc,"messageId":"1","deltas":[
        {"type":"set","field":"x","value":1},{"type":"set","field":"y","value":2},{"type":"set","field":"z","value":3}
    ]}))
    .await;
    assert_eq!(field_deltas(&mut b, doc, 3).await.len(), 3);
    // Tombstone value, SDK `delete` op, then set-set of one field in one window.
    a.send(
        json!({"type":"delta_batch","documentId":doc,"messageId":"2","deltas":[
            {"type":"set","field":"x","value":{"__deleted":true}},
            {"type":"delete","field":"y"},
            {"type":"set","field":"n","value":1},
            {"type":"set","field":"n","value":2}
        ]}),
    )
    .await;
    let ds = field_deltas(&mut b, doc, 3).await;
    let got: Vec<(&str, &Value)> = ds
        .iter()
        .map(|d| (d["field"].as_str().expect("field"), &d["value"]))
        .collect();
    assert_eq!(
        got,
        vec![
            ("n", &json!(2)),
            ("x", &json!({"__deleted":true})),
            ("y", &json!({"__deleted":true})),
        ]
    );
    b.expect_silence(QUIET).await;
    assert_eq!(
        state_of(&mut b, doc, "s").await["state"],
        json!({"z":3,"n":2})
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn batch_validation_comes_before_auth() {
    let server = start(ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, true).await;
    for bad in [json!([]), json!({"a":1}), Value::Null] {
        c.send(json!({"type":"delta_batch","documentId":"d","deltas":bad}))
            .await;
        assert_eq!(
            c.expect("error").await["error"],
            "Invalid delta batch: missing or empty deltas array"
        );
    }
    c.send(json!({"type":"delta_batch","documentId":"d"})).await;
    assert_eq!(
        c.expect("error").await["error"],
        "Invalid delta batch: missing or empty deltas array"
    );
    c.send(json!({"type":"delta_batch","documentId":"d","deltas":[{"field":"f","value":1}]}))
        .await;
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// delta_batch: text CRDT relay

async fn text_state_is_merged_and_relayed_to_others(binary: bool) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, !binary).await;
    let mut c = Client::connect(&server, binary).await;
    let doc = "text-doc";
    for x in [&mut a, &mut b, &mut c] {
        subscribe(x, doc).await;
    }
    let hello = fugue("client-a", "Hello");
    a.send(json!({"type":"delta_batch","documentId":doc,"messageId":"t1","deltas":[
        {"type":"text-state","documentId":doc,"state":hello,"clientId":"client-a","timestamp":1000,"clock":{"client-a":1}}
    ]}))
    .await;
    a.send(json!({"type":"ping"})).await;
    let own = a.collect_until(&["ack", "pong"]).await;
    assert!(
        of_type(&own, "delta_batch").is_empty(),
        "sender excluded: {own:?}"
    );
    assert_eq!(of_type(&own, "ack")[0]["messageId"], "t1");
    for x in [&mut b, &mut c] {
        let m = x.expect("delta_batch").await;
        assert_eq!(m["documentId"], doc);
        assert_eq!(m["isTextOperation"], true);
        let ops = m["deltas"].as_array().expect("deltas");
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0]["type"], "text-state");
        assert_eq!(ops[0]["clientId"], "client-a");
        assert_eq!(ops[0]["timestamp"], 1000);
        assert_eq!(ops[0]["state"], hello, "first state is stored as is");
    }

    // A concurrent edit from another replica: the relay carries the merged state.
    let world = fugue("client-b", "World");
    b.send(json!({"type":"delta_batch","documentId":doc,"messageId":"t2","deltas":[
        {"type":"text-state","documentId":doc,"state":world,"clientId":"client-b","timestamp":2000}
    ]}))
    .await;
    b.send(json!({"type":"ping"})).await;
    let own = b.collect_until(&["ack", "pong"]).await;
    assert!(
        of_type(&own, "delta_batch").is_empty(),
        "sender excluded: {own:?}"
    );
    let mut merged = String::new();
    for x in [&mut a, &mut c] {
        let m = x.expect("delta_batch").await;
        let op = &m["deltas"][0];
        assert_eq!(op["clientId"], "client-b");
        let text = text_of(&op["state"]);
        assert_eq!(text.chars().count(), 10, "{text}");
        assert!(text.contains("Hello") && text.contains("World"), "{text}");
        merged = text;
    }
    // No field deltas for text-only batches.
    a.expect_silence(QUIET).await;

    // Late joiners get the merged state through subscribe and sync_request.
    let mut d = Client::connect(&server, binary).await;
    let sr = subscribe(&mut d, doc).await;
    assert_eq!(sr["state"], json!({}));
    assert_eq!(text_of(&sr["textState"]), merged);
    assert_eq!(sr["textClock"], 2000);
    let sr = state_of(&mut d, doc, "req-text").await;
    assert_eq!(text_of(&sr["textState"]), merged);
    assert_eq!(sr["textClock"], 2000);
    server.shutdown.cancel();
}

#[tokio::test]
async fn text_state_is_merged_and_relayed_to_others_binary() {
    text_state_is_merged_and_relayed_to_others(true).await;
}

#[tokio::test]
async fn text_state_is_merged_and_relayed_to_others_json() {
    text_state_is_merged_and_relayed_to_others(false).await;
}

#[tokio::test]
async fn text_relay_fills_client_id_and_older_clock_keeps_text_clock() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "text-anon";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    a.send(json!({"type":"delta_batch","documentId":doc,"deltas":[
        {"type":"text-state","state":fugue("x","abc"),"timestamp":5000}
    ]}))
    .await;
    let m = b.expect("delta_batch").await;
    let client = m["deltas"][0]["clientId"]
        .as_str()
        .expect("clientId filled");
    assert!(client.starts_with("conn-"), "{client}");
    a.send(json!({"type":"delta_batch","documentId":doc,"deltas":[
        {"type":"text-state","state":fugue("y","d"),"timestamp":10,"clientId":"y"}
    ]}))
    .await;
    b.expect("delta_batch").await;
    let sr = state_of(&mut b, doc, "r").await;
    assert_eq!(sr["textClock"], 5000, "textClock is the max");
    assert_eq!(text_of(&sr["textState"]).len(), 4);
    server.shutdown.cancel();
}

#[tokio::test]
async fn positional_text_is_relayed_and_crdt_ops_are_skipped_by_default() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, false).await;
    let doc = "ops-doc";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    let text_op =
        json!({"type":"text","operation":"insert","position":0,"value":"x","clientId":"ca"});
    a.send(json!({"type":"delta_batch","documentId":doc,"messageId":"o1","deltas":[
        text_op,
        {"type":"counter","operation":"increment","value":1,"documentId":doc,"clientId":"ca","clock":{"ca":1}},
        {"type":"set","operation":"add","value":"tag","documentId":doc,"clientId":"ca"},
        {"type":"richtext","operation":"format","opId":"o","start":0,"end":1,"attributes":{"bold":true},"documentId":doc,"clientId":"ca"}
    ]}))
    .await;
    assert_eq!(a.expect("ack").await["messageId"], "o1");
    let m = b.expect("delta_batch").await;
    assert_eq!(m["deltas"], json!([text_op]));
    assert_eq!(m["isTextOperation"], true);
    b.expect_silence(QUIET).await;
    // A SyncSet op (`type:"set"` without `field`) is not a field write.
    assert_eq!(state_of(&mut b, doc, "r").await["state"], json!({}));
    server.shutdown.cancel();
}

#[tokio::test]
async fn crdt_ops_are_relayed_to_others_when_enabled() {
    let mut config = open_config();
    config.sync.relay_crdt_ops = true;
    let server = start(config).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "ops-relay";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    let counter = json!({"type":"counter","operation":"increment","value":2,"documentId":doc,"clientId":"ca","clock":{"ca":1}});
    let set_op =
        json!({"type":"set","operation":"remove","value":"tag","documentId":doc,"clientId":"ca"});
    a.send(
        json!({"type":"delta_batch","documentId":doc,"messageId":"o2","deltas":[counter, set_op]}),
    )
    .await;
    a.send(json!({"type":"ping"})).await;
    let own = a.collect_until(&["ack", "pong"]).await;
    assert!(
        of_type(&own, "delta_batch").is_empty(),
        "never echoed: {own:?}"
    );
    let m = b.expect("delta_batch").await;
    assert_eq!(m["deltas"], json!([counter, set_op]));
    assert!(m.get("isTextOperation").is_none(), "{m}");
    b.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn text_op_for_another_document_needs_write_permission_there() {
    let server = start(ServerConfig::for_tests(true)).await;
    let mut admin = Client::connect(&server, true).await;
    auth(&mut admin, &user_token("admin", &[], &[], true)).await;
    subscribe(&mut admin, "doc-b").await;
    subscribe(&mut admin, "doc-c").await;
    let mut limited = Client::connect(&server, true).await;
    auth(
        &mut limited,
        &user_token("u1", &["doc-a", "doc-c"], &["doc-a", "doc-c"], false),
    )
    .await;

    limited
        .send(json!({"type":"delta_batch","documentId":"doc-a","messageId":"p1","deltas":[
            {"type":"text-state","documentId":"doc-b","state":fugue("u1","intruder"),"clientId":"u1","timestamp":1},
            {"type":"set","field":"f","value":1,"clientId":"u1"}
        ]}))
        .await;
    let msgs = limited.collect_until(&["error"]).await;
    let e = of_type(&msgs, "error")[0];
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":"doc-b"}));
    // The batch is refused whole: its own field op does not apply either.
    limited.expect_silence(QUIET).await;
    admin.expect_silence(QUIET).await;
    let sr = state_of(&mut admin, "doc-b", "rb").await;
    assert!(sr.get("textState").is_none(), "doc-b untouched: {sr}");
    let sr = state_of(&mut admin, "doc-a", "ra").await;
    assert_eq!(sr["state"], json!({}));

    // A document the token may write: merged there and relayed to its subscribers.
    limited
        .send(json!({"type":"delta_batch","documentId":"doc-a","messageId":"p2","deltas":[
            {"type":"text-state","documentId":"doc-c","state":fugue("u1","ok"),"clientId":"u1","timestamp":1}
        ]}))
        .await;
    let msgs = limited.collect_until(&["ack"]).await;
    assert!(of_type(&msgs, "error").is_empty(), "{msgs:?}");
    let m = admin.expect("delta_batch").await;
    assert_eq!(m["documentId"], "doc-c");
    assert_eq!(text_of(&m["deltas"][0]["state"]), "ok");
    assert_eq!(
        text_of(&state_of(&mut admin, "doc-c", "rc").await["textState"]),
        "ok"
    );

    // No write permission on the batch's document at all: error and no ack.
    limited
        .send(json!({"type":"delta_batch","documentId":"doc-x","messageId":"p3","deltas":[{"field":"f","value":1}]}))
        .await;
    let e = limited.expect("error").await;
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":"doc-x"}));
    let rest = limited.messages_before_pong().await;
    limited.expect_silence(QUIET).await;
    assert!(of_type(&rest, "ack").is_empty(), "{rest:?}");
    server.shutdown.cancel();
}

#[tokio::test]
async fn wildcard_token_grants_every_document_and_write_does_not_imply_read() {
    let server = start(ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, false).await;
    auth(&mut c, &user_token("w", &["*"], &["*"], false)).await;
    subscribe(&mut c, "any-doc-1").await;
    c.send(json!({"type":"delta_batch","documentId":"any-doc-2","messageId":"w1","deltas":[{"field":"f","value":1}]}))
        .await;
    assert_eq!(c.expect("ack").await["messageId"], "w1");
    let mut wo = Client::connect(&server, false).await;
    auth(&mut wo, &user_token("wo", &[], &["doc-w"], false)).await;
    wo.send(json!({"type":"subscribe","documentId":"doc-w"}))
        .await;
    let e = wo.expect("error").await;
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":"doc-w"}));
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// sync_request / sync_step1 / unsubscribe

#[tokio::test]
async fn sync_request_subscribes_and_returns_clock_without_merging_the_clients() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, false).await;
    let doc = "sr-doc";
    a.send(
        json!({"type":"delta_batch","documentId":doc,"messageId":"w","deltas":[
            {"type":"set","field":"f","value":1,"clientId":"ca","clock":{"ca":2}}
        ]}),
    )
    .await;
    a.expect("ack").await;
    b.send(
        json!({"type":"sync_request","id":"r1","timestamp":1,"documentId":doc,
        "vectorClock":{"peer-z":42,"neg":-1,"str":"x","frac":1.5,"big":9_007_199_254_740_992u64}}),
    )
    .await;
    let sr = b.expect("sync_response").await;
    assert_eq!(sr["requestId"], "r1");
    assert_eq!(sr["documentId"], doc);
    assert_eq!(sr["state"], json!({"f":1}));
    assert_eq!(sr["deltas"], json!([]));
    assert!(sr.get("textState").is_none(), "{sr}");
    let clock = sr["clock"].as_object().expect("clock");
    assert!(clock["ca"].as_u64().expect("ca") >= 2);
    // A read never changes the document: the request's clock is not merged.
    for ignored in ["peer-z", "neg", "str", "frac", "big"] {
        assert!(!clock.contains_key(ignored), "{ignored} not merged: {sr}");
    }
    assert_integer_clock_if_state(&sr);

    // sync_request subscribed b.
    a.send(json!({"type":"delta","documentId":doc,"field":"f","value":2,"messageId":"w2"}))
        .await;
    let d = field_deltas(&mut b, doc, 1).await;
    assert_eq!(d[0]["value"], 2);

    // Without an id (SDK requestSync) the requestId is generated; the reader's clock
    // left no trace in the document.
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"sync_request","documentId":doc}))
        .await;
    let sr = c.expect("sync_response").await;
    assert!(sr["requestId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(sr["clock"].get("peer-z").is_none(), "{sr}");
    assert_eq!(sr["state"], json!({"f":2}));
    server.shutdown.cancel();
}

#[tokio::test]
async fn sync_step1_replies_with_the_step2_stub_and_does_not_subscribe() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, false).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "step-doc";
    a.send(json!({"type":"sync_step1","id":"s1","documentId":doc,"stateVector":{"x":1}}))
        .await;
    let m = a.expect("sync_step2").await;
    assert_eq!(m["documentId"], doc);
    assert_eq!(m["operations"], json!([]));
    b.send(json!({"type":"delta","documentId":doc,"field":"f","value":1,"messageId":"m"}))
        .await;
    b.collect_until(&["ack", "delta"]).await;
    a.expect_silence(QUIET).await;
    a.send(json!({"type":"sync_step1","documentId":"bad id"}))
        .await;
    assert_eq!(
        a.expect("error").await["error"],
        "Document ID contains invalid characters"
    );
    server.shutdown.cancel();

    let server = start(ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"sync_step1","documentId":doc})).await;
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    auth(&mut c, &user_token("u", &["other"], &[doc], false)).await;
    c.send(json!({"type":"sync_step1","documentId":doc})).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"], "Permission denied");
    assert_eq!(e["details"], json!({"documentId":doc}));
    server.shutdown.cancel();
}

#[tokio::test]
async fn unsubscribe_has_no_reply_and_stops_broadcasts() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let doc = "unsub-doc";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    b.send(json!({"type":"unsubscribe","documentId":doc})).await;
    assert!(b.messages_before_pong().await.is_empty());
    a.send(json!({"type":"delta","documentId":doc,"field":"f","value":1,"messageId":"m"}))
        .await;
    a.collect_until(&["ack", "delta"]).await;
    b.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// delta_batch_chunk

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Split an encoded message into `parts` chunk messages, in index order.
fn chunks(id: &str, whole: &[u8], parts: usize) -> Vec<Value> {
    let size = whole.len().div_ceil(parts);
    whole
        .chunks(size)
        .enumerate()
        .map(|(i, slice)| {
            json!({"type":"delta_batch_chunk","chunkId":id,"totalChunks":parts,"chunkIndex":i,"data":b64(slice)})
        })
        .collect()
}

fn big_batch(doc: &str, message_id: &str, field: &str, len: usize) -> Value {
    json!({"documentId":doc,"messageId":message_id,"deltas":[
        {"type":"set","field":field,"value":"x".repeat(len),"clientId":"ca","clock":{"ca":1}}
    ]})
}

async fn chunks_reassemble_and_apply_once(binary: bool, order: &[usize]) {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, binary).await;
    let mut b = Client::connect(&server, binary).await;
    let doc = "chunk-doc";
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    let payload = big_batch(doc, "mc-1", "big", 3000);
    let whole = if binary {
        frame(0x50, &payload)
    } else {
        let mut p = payload.clone();
        p["type"] = json!("delta_batch");
        p.to_string().into_bytes()
    };
    let parts = chunks("set-1", &whole, order.len());
    for (n, &i) in order.iter().enumerate() {
        a.send(parts[i].clone()).await;
        if n + 1 < order.len() {
            // No per-chunk reply, nothing applied yet.
            assert!(a.messages_before_pong().await.is_empty());
        }
    }
    let msgs = a.collect_until(&["ack", "delta"]).await;
    assert_eq!(of_type(&msgs, "ack")[0]["messageId"], "mc-1");
    let d = b.expect("delta").await;
    assert_eq!(d["field"], "big");
    assert_eq!(d["value"].as_str().map(str::len), Some(3000));
    // Applied exactly once.
    for c in [&mut a, &mut b] {
        c.expect_silence(QUIET).await;
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn chunks_in_order_binary() {
    chunks_reassemble_and_apply_once(true, &[0, 1, 2]).await;
}

#[tokio::test]
async fn chunks_out_of_order_json() {
    chunks_reassemble_and_apply_once(false, &[2, 0, 3, 1]).await;
}

#[tokio::test]
async fn chunks_carrying_json_on_a_binary_connection_reply_in_binary() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut payload = big_batch("chunk-mixed", "mj", "f", 10);
    payload["type"] = json!("delta_batch");
    for part in chunks("mixed", payload.to_string().as_bytes(), 2) {
        a.send(part).await;
    }
    // The harness fails on a text frame to a binary client.
    assert_eq!(a.expect("ack").await["messageId"], "mj");
    server.shutdown.cancel();
}

async fn expect_invalid_chunk(c: &mut Client, msg: Value) {
    c.send(msg.clone()).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"], "Invalid chunk", "{msg}");
    c.assert_alive().await;
}

#[tokio::test]
async fn invalid_chunks_error_and_the_connection_stays_usable() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    let data = b64(b"abc");
    let ck = |id: Value, total: Value, index: Value, data: Value| {
        let mut m = json!({"type":"delta_batch_chunk"});
        for (k, v) in [
            ("chunkId", id),
            ("totalChunks", total),
            ("chunkIndex", index),
            ("data", data),
        ] {
            if !v.is_null() {
                m[k] = v;
            }
        }
        m
    };
    let d = json!(data);
    for bad in [
        ck(json!("c"), json!(2), json!(2), d.clone()), // index == total
        ck(json!("c"), json!(2), json!(7), d.clone()), // index > total
        ck(json!("c"), json!(0), json!(0), d.clone()), // no chunks
        ck(json!("c"), json!(1001), json!(0), d.clone()), // over 1000
        ck(json!("c"), json!(-1), json!(0), d.clone()),
        ck(json!("c"), json!("2"), json!(0), d.clone()),
        ck(json!("c"), json!(2), json!(-1), d.clone()),
        ck(json!("c"), json!(2), json!(0.5), d.clone()),
        ck(Value::Null, json!(2), json!(0), d.clone()), // missing chunkId
        ck(json!(""), json!(2), json!(0), d.clone()),
        ck(json!(5), json!(2), json!(0), d.clone()),
        ck(json!("c"), Value::Null, json!(0), d.clone()),
        ck(json!("c"), json!(2), Value::Null, d.clone()),
        ck(json!("c"), json!(2), json!(0), Value::Null), // missing data
        ck(json!("c"), json!(2), json!(0), json!("***not base64***")),
        ck(json!("c"), json!(2), json!(0), json!(42)),
    ] {
        expect_invalid_chunk(&mut c, bad).await;
    }
    // 1000 chunks is the largest accepted set.
    c.send(ck(json!("max"), json!(1000), json!(999), d.clone()))
        .await;
    assert!(c.messages_before_pong().await.is_empty());
    server.shutdown.cancel();
}

#[tokio::test]
async fn an_invalid_chunk_drops_its_set() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    let whole = frame(0x50, &big_batch("chunk-drop", "md", "f", 10));
    let parts = chunks("s", &whole, 2);
    c.send(parts[0].clone()).await;
    // Same set, inconsistent total.
    let mut bad = parts[1].clone();
    bad["totalChunks"] = json!(3);
    expect_invalid_chunk(&mut c, bad).await;
    // The set is gone: chunk 1 starts a new set instead of completing the old one.
    c.send(parts[1].clone()).await;
    assert!(c.messages_before_pong().await.is_empty());
    c.expect_silence(QUIET).await;
    c.send(parts[0].clone()).await;
    assert_eq!(c.expect("ack").await["messageId"], "md");
    // The writer is auto-subscribed: it gets its own field back once.
    assert_eq!(c.expect("delta").await["field"], "f");
    // A bad index in a started set also drops it.
    c.send(parts[0].clone()).await;
    let mut bad = parts[1].clone();
    bad["chunkIndex"] = json!(2);
    expect_invalid_chunk(&mut c, bad).await;
    c.send(parts[1].clone()).await;
    assert!(c.messages_before_pong().await.is_empty());
    c.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn chunk_reassembly_is_bounded_by_the_message_size() {
    let mut config = open_config();
    config.sync.max_message_bytes = 4096;
    let server = start(config).await;
    let mut c = Client::connect(&server, true).await;
    let fits = frame(0x50, &big_batch("chunk-size", "fits", "f", 3900));
    assert!(fits.len() <= 4096);
    for part in chunks("ok", &fits, 3) {
        c.send(part).await;
    }
    assert_eq!(c.expect("ack").await["messageId"], "fits");
    let d = c.expect("delta").await;
    assert_eq!(d["value"].as_str().map(str::len), Some(3900));
    let too_big = frame(0x50, &big_batch("chunk-size", "big", "f", 4100));
    let parts = chunks("big", &too_big, 2);
    c.send(parts[0].clone()).await;
    expect_invalid_chunk(&mut c, parts[1].clone()).await;
    c.expect_silence(QUIET).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn at_most_sixteen_chunk_sets_are_open_per_connection() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    let mut sets = Vec::new();
    for i in 0..16 {
        let whole = frame(0x50, &big_batch("chunk-sets", &format!("m{i}"), "f", 10));
        let parts = chunks(&format!("set-{i}"), &whole, 2);
        c.send(parts[0].clone()).await;
        sets.push(parts);
    }
    assert!(c.messages_before_pong().await.is_empty());
    let extra = chunks(
        "set-16",
        &frame(0x50, &big_batch("chunk-sets", "m16", "f", 10)),
        2,
    );
    expect_invalid_chunk(&mut c, extra[0].clone()).await;
    // Completing one set frees a slot.
    c.send(sets[3][1].clone()).await;
    assert_eq!(c.expect("ack").await["messageId"], "m3");
    c.send(extra[0].clone()).await;
    c.send(extra[1].clone()).await;
    assert_eq!(c.expect("ack").await["messageId"], "m16");
    server.shutdown.cancel();
}

#[tokio::test]
async fn chunk_sets_are_per_connection() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, true).await;
    let parts = chunks(
        "shared",
        &frame(0x50, &big_batch("chunk-conn", "m", "f", 10)),
        2,
    );
    a.send(parts[0].clone()).await;
    b.send(parts[1].clone()).await;
    assert!(a.messages_before_pong().await.is_empty());
    assert!(b.messages_before_pong().await.is_empty());
    a.expect_silence(QUIET).await;
    b.expect_silence(Duration::ZERO).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn reassembled_messages_are_decoded_and_checked_like_any_other() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    // Not a message.
    c.send(json!({"type":"delta_batch_chunk","chunkId":"g","totalChunks":1,"chunkIndex":0,"data":b64(b"\x50garbage")}))
        .await;
    assert_eq!(c.expect("error").await["error"], "Invalid message format");
    // A chunk inside a chunk set.
    let inner = frame(
        0x23,
        &json!({"chunkId":"in","totalChunks":1,"chunkIndex":0,"data":b64(b"{}")}),
    );
    expect_invalid_chunk(
        &mut c,
        json!({"type":"delta_batch_chunk","chunkId":"n","totalChunks":1,"chunkIndex":0,"data":b64(&inner)}),
    )
    .await;
    // Any message type can travel in chunks; validation still applies.
    let sub = frame(0x10, &json!({"documentId":"bad id"}));
    c.send(json!({"type":"delta_batch_chunk","chunkId":"v","totalChunks":1,"chunkIndex":0,"data":b64(&sub)}))
        .await;
    assert_eq!(
        c.expect("error").await["error"],
        "Document ID contains invalid characters"
    );
    server.shutdown.cancel();

    // With auth required, a reassembled write from an unauthenticated client is refused.
    let server = start(ServerConfig::for_tests(true)).await;
    let mut c = Client::connect(&server, true).await;
    let whole = frame(0x50, &big_batch("chunk-auth", "m", "f", 10));
    for part in chunks("a", &whole, 2) {
        c.send(part).await;
    }
    assert_eq!(c.expect("error").await["error"], "Not authenticated");
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// Broadcast batching across disconnects (§8.6)

#[tokio::test]
async fn pending_batch_is_not_dropped_when_subscribers_leave_before_the_flush() {
    let mut config = open_config();
    config.batch_delay = Duration::from_millis(700);
    let server = start(config).await;
    let mut writer = Client::connect(&server, true).await;
    let mut stays = Client::connect(&server, false).await;
    let mut leaves = Client::connect(&server, true).await;
    let doc = "leave-doc";
    for c in [&mut writer, &mut stays, &mut leaves] {
        subscribe(c, doc).await;
    }
    writer
        .send(
            json!({"type":"delta_batch","documentId":doc,"messageId":"m","deltas":[
                {"type":"set","field":"kept","value":"yes","clientId":"w","clock":{"w":1}}
            ]}),
        )
        .await;
    writer.expect("ack").await;
    let acked = Instant::now();
    // Another subscriber and then the writer itself disconnect before the flush.
    leaves.close_and_wait().await;
    writer.close_and_wait().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        acked.elapsed() < Duration::from_millis(600),
        "disconnects must happen inside the batch window"
    );
    let d = field_deltas(&mut stays, doc, 1).await;
    assert_eq!(d[0]["field"], "kept");
    assert_eq!(d[0]["value"], "yes");
    assert!(
        acked.elapsed() >= Duration::from_millis(400),
        "delivered by the flush, not before"
    );
    server.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// §14 checklist items not covered by tests/wire.rs

#[tokio::test]
async fn binary_anonymous_auth_gets_auth_success() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"auth","id":"a1"})).await;
    let m = c.expect("auth_success").await;
    assert_eq!(m["userId"], "anonymous");
    assert_eq!(
        m["permissions"],
        json!({"canRead":["*"],"canWrite":["*"],"isAdmin":false})
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn json_ping_is_answered_at_once() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    let t = Instant::now();
    c.send(json!({"type":"ping","id":"p-1","timestamp":1}))
        .await;
    let m = c.recv().await;
    assert_eq!(m["type"], "pong");
    assert_eq!(m["id"], "p-1", "pong echoes the ping id");
    assert!(m["timestamp"]
        .as_i64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert!(t.elapsed() < Duration::from_secs(1));
    server.shutdown.cancel();
}

#[tokio::test]
async fn reply_encoding_is_fixed_by_the_first_data_frame() {
    let server = start(open_config()).await;
    // Binary first: later JSON text frames are understood, replies stay binary.
    let mut c = Client::connect(&server, true).await;
    c.send(json!({"type":"ping"})).await;
    c.expect("pong").await;
    c.send_raw(Message::Text(r#"{"type":"ping","id":"x"}"#.into()))
        .await;
    assert_eq!(c.expect("pong").await["id"], "x");
    // JSON first: binary frames are understood, replies stay text.
    let mut j = Client::connect(&server, false).await;
    j.send(json!({"type":"ping"})).await;
    j.expect("pong").await;
    j.send_raw(Message::Binary(frame(0x30, &json!({"id":"y"})).into()))
        .await;
    assert_eq!(j.expect("pong").await["id"], "y");
    // A binary frame starting with `{` is JSON and makes the connection JSON.
    let mut k = Client::connect(&server, false).await;
    k.send_raw(Message::Binary(
        br#"{"type":"ping","id":"z"}"#.to_vec().into(),
    ))
    .await;
    assert_eq!(k.expect("pong").await["id"], "z");
    server.shutdown.cancel();
}

#[tokio::test]
async fn delta_ack_prefers_the_payload_message_id() {
    let server = start(open_config()).await;
    let mut j = Client::connect(&server, false).await;
    j.send(json!({"type":"delta","id":"x","timestamp":1,"documentId":"ack-d","delta":{"a":1},"vectorClock":{},"messageId":"m-x"}))
        .await;
    assert_eq!(j.expect("ack").await["messageId"], "m-x");
    // SDK op shape in JSON text.
    j.send(json!({"type":"delta","documentId":"ack-d","field":"b","value":2,"clock":{"c":1},"clientId":"c","timestamp":1,"messageId":"m-y"}))
        .await;
    assert_eq!(j.expect("ack").await["messageId"], "m-y");
    // Binary, id only.
    let mut b = Client::connect(&server, true).await;
    b.send(json!({"type":"delta","id":"only-id","documentId":"ack-d","delta":{"c":3}}))
        .await;
    assert_eq!(b.expect("ack").await["messageId"], "only-id");
    let sr = state_of(&mut b, "ack-d", "r").await;
    assert_eq!(sr["state"], json!({"a":1,"b":2,"c":3}));
    assert_integer_clock_if_state(&sr);
    server.shutdown.cancel();
}

#[tokio::test]
async fn broadcasts_reach_each_subscriber_in_its_own_encoding() {
    let server = start(open_config()).await;
    let mut bin = Client::connect(&server, true).await;
    let mut txt = Client::connect(&server, false).await;
    let doc = "mixed-doc";
    let sr = subscribe(&mut txt, doc).await;
    assert_integer_clock_if_state(&sr);
    subscribe(&mut bin, doc).await;
    bin.send(json!({"type":"delta","documentId":doc,"field":"f","value":"v","clock":{"cb":9},"clientId":"cb","messageId":"m"}))
        .await;
    for c in [&mut bin, &mut txt] {
        let d = field_deltas(c, doc, 1).await;
        assert_eq!(d[0]["value"], "v");
        assert!(d[0]["clock"]["cb"].as_u64().expect("int") >= 9);
    }
    // The JSON form is flat with type, id and timestamp.
    txt.send(json!({"type":"delta","documentId":doc,"delta":{"g":1},"vectorClock":{}}))
        .await;
    let d = txt.expect("delta").await;
    assert!(d["id"].is_string() && d["timestamp"].is_i64(), "{d}");
    server.shutdown.cancel();
}

#[tokio::test]
async fn json_nested_payload_aliases_and_ignored_types() {
    let server = start(open_config()).await;
    let mut c = Client::connect(&server, false).await;
    // Nested form: payload keys are flattened, payload.type is dropped.
    c.send(json!({"type":"subscribe","id":"n1","timestamp":1,"payload":{"type":"delta","documentId":"nested-doc"}}))
        .await;
    let sr = c.expect("sync_response").await;
    assert_eq!(sr["requestId"], "n1");
    assert_eq!(sr["documentId"], "nested-doc");
    // Go/Python dialect: docId and changes.
    c.send(json!({"type":"delta","id":"g1","docId":"nested-doc","changes":{"k":"v"}}))
        .await;
    assert_eq!(c.expect("ack").await["messageId"], "g1");
    let d = field_deltas(&mut c, "nested-doc", 1).await;
    assert_eq!((&d[0]["field"], &d[0]["value"]), (&json!("k"), &json!("v")));
    // Accepted and ignored: no reply at all.
    for ty in [
        "connect",
        "snapshot_request",
        "snapshot_upload",
        "ack",
        "pong",
    ] {
        c.send(json!({ "type": ty, "messageId": "x" })).await;
    }
    assert!(c.messages_before_pong().await.is_empty());
    // Server-only types are refused.
    for ty in [
        "sync_response",
        "auth_success",
        "awareness_state",
        "sync_step2",
    ] {
        c.send(json!({ "type": ty })).await;
        let e = c.expect("error").await;
        assert_eq!(e["error"], format!("Invalid message type: {ty}"));
        assert_eq!(e["details"]["code"], "INVALID_MESSAGE");
    }
    server.shutdown.cancel();
}
