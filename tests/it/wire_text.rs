//! SyncText states over a real socket: hostile states are answered with an `error`
//! naming the problem — fast, nothing applied or relayed, the connection kept —
//! while other clients keep getting acks; deep typing chains that crashed the
//! SDK core's recursive walk sync.

use crate::common;

use std::time::{Duration, Instant};

use common::{open_config, start, subscribe, Client};

#[path = "../support/text_gen.rs"]
mod text_gen;
use serde_json::{json, Value};
use synckit::text::{parse, Limits, TextDoc};

fn id(client: &str, clock: u64) -> Value {
    json!({"client_id": client, "clock": clock, "offset": 0})
}

fn block(client: &str, clock: u64, text: &str, left: Value, right: Value) -> Value {
    json!([id(client, clock), {"id": id(client, clock), "text": text,
        "left_origin": left, "right_origin": right, "deleted": false}])
}

fn state(blocks: Vec<Value>, clock: u64, client: &str) -> String {
    json!({"blocks": blocks, "clock": {"value": clock}, "client_id": client}).to_string()
}

/// `n` characters typed one at a time by `client` from clock `from` on, each its
/// own block whose left origin is the previous one (what the SDK writes), the
/// first hanging on `first_left`.
pub fn typing_chain(client: &str, from: u64, n: u64, first_left: Value) -> String {
    let mut blocks = Vec::with_capacity(n as usize);
    for clock in from..from + n {
        let left = if clock == from {
            first_left.clone()
        } else {
            id(client, clock - 1)
        };
        blocks.push(block(client, clock, "x", left, Value::Null));
    }
    state(blocks, from + n - 1, client)
}

/// The hostile state of the issue: origins forming a cycle (p ↔ x) and a block
/// pointing into it. It hung a worker of the server inside the document lock.
fn cycle_state() -> String {
    state(
        vec![
            block("p", 1, "P", id("x", 1), Value::Null),
            block("r", 1, "R", Value::Null, Value::Null),
            block("x", 1, "X", id("p", 1), Value::Null),
            block("z", 2, "Z", id("r", 1), id("x", 1)),
        ],
        2,
        "evil",
    )
}

fn text_batch(doc: &str, msg: &str, state: &str) -> Value {
    json!({"type":"delta_batch","documentId":doc,"messageId":msg,"deltas":[
        {"type":"text-state","documentId":doc,"clientId":"c","timestamp":1,"state":state}
    ]})
}

/// The visible text of a `textState`, by the engine (the SDK core's recursive walk
/// overflows on deep chains).
fn text_of(state: &Value) -> String {
    let limits = Limits::default();
    let parsed = parse(state.as_str().expect("a state string"), &limits).expect("valid");
    TextDoc::from_state(parsed, &limits).expect("valid").text()
}

/// Send a field delta on `doc` and wait for its ack.
async fn acked(c: &mut Client, doc: &str, n: usize) -> Duration {
    let t = Instant::now();
    let msg = format!("ok-{n}");
    c.send(json!({"type":"delta","documentId":doc,"messageId":msg,"delta":{"f": n}}))
        .await;
    loop {
        let m = c.expect("ack").await;
        if m["messageId"] == msg {
            return t.elapsed();
        }
    }
}

#[tokio::test]
async fn the_issue_cycle_is_refused_and_the_document_stays_usable() {
    let server = start(open_config()).await;
    let mut evil = Client::connect(&server, false).await;
    evil.send(text_batch("d1", "m1", &cycle_state())).await;
    let e = evil.expect("error").await;
    assert_eq!(e["details"]["code"], "TEXT_STATE_INVALID", "{e}");
    assert_eq!(e["details"]["documentId"], "d1", "{e}");
    assert!(
        e["error"].as_str().is_some_and(|s| s.contains("cycle")),
        "{e}"
    );
    // The second client of the reproduction: it subscribes and is answered.
    let mut other = Client::connect(&server, true).await;
    let sr = subscribe(&mut other, "d1").await;
    assert!(sr.get("textState").is_none(), "nothing applied: {sr}");
    // The hostile connection is kept.
    evil.assert_alive().await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn hostile_states_get_an_error_within_100ms_while_others_get_acks() {
    let mut config = open_config();
    config.sync.limits.text.max_blocks = 100;
    let server = start(config).await;
    let mut evil = Client::connect(&server, false).await;
    let mut good = Client::connect(&server, true).await;
    subscribe(&mut good, "good-doc").await;
    let mut watcher = Client::connect(&server, false).await;
    subscribe(&mut watcher, "hostile").await;
    let chain_past_cap = typing_chain("t", 1, 101, Value::Null);
    let cases: Vec<(&str, String, &str)> = vec![
        ("cycle", cycle_state(), "cycle"),
        (
            "dangling",
            state(
                vec![block("a", 1, "A", id("ghost", 7), Value::Null)],
                1,
                "a",
            ),
            "names no block",
        ),
        (
            "self reference",
            state(vec![block("a", 2, "AB", id("a", 1), Value::Null)], 2, "a"),
            "the block itself",
        ),
        (
            "duplicate ids",
            state(
                vec![
                    block("a", 1, "A", Value::Null, Value::Null),
                    block("a", 1, "A", Value::Null, Value::Null),
                ],
                1,
                "a",
            ),
            "duplicate id",
        ),
        (
            "huge clock",
            state(
                vec![block("a", 1 << 60, "A", Value::Null, Value::Null)],
                1,
                "a",
            ),
            "2^53-1",
        ),
        (
            "chain past the block cap",
            chain_past_cap,
            "too many blocks",
        ),
    ];
    for (n, (what, hostile, reason)) in cases.iter().enumerate() {
        let msg = text_batch("hostile", &format!("h{n}"), hostile);
        let t = Instant::now();
        evil.send(msg).await;
        let e = evil.expect("error").await;
        let took = t.elapsed();
        let message = e["error"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{what}: {e}");
        assert!(
            took < Duration::from_millis(100),
            "{what}: answered after {took:?}"
        );
        // Another client on the same server is served meanwhile.
        let ack = acked(&mut good, "good-doc", n).await;
        assert!(
            ack < Duration::from_millis(100),
            "{what}: ack after {ack:?}"
        );
    }
    // Nothing was applied or relayed, and nothing acked for the hostile messages.
    let sr = subscribe(&mut Client::connect(&server, false).await, "hostile").await;
    assert!(sr.get("textState").is_none(), "{sr}");
    let seen = watcher.messages_before_pong().await;
    assert!(seen.iter().all(|m| m["type"] != "delta_batch"), "{seen:?}");
    let own = evil.messages_before_pong().await;
    assert!(own.iter().all(|m| m["type"] != "ack"), "{own:?}");
    server.shutdown.cancel();
}

/// A document typed one character at a time by two successive clients: each
/// state is 5,000 blocks deep, merged they are 10,000 deep. The SDK core's
/// recursive walk overflowed the server's stack here.
#[tokio::test]
async fn a_ten_thousand_deep_typing_chain_syncs() {
    let server = start(open_config()).await;
    let mut a = Client::connect(&server, true).await;
    let mut b = Client::connect(&server, false).await;
    a.send(text_batch(
        "deep",
        "a1",
        &typing_chain("a", 1, 5_000, Value::Null),
    ))
    .await;
    assert_eq!(a.expect("ack").await["messageId"], "a1");
    let second = typing_chain("b", 5_001, 5_000, id("a", 5_000));
    b.send(text_batch("deep", "b1", &second)).await;
    assert_eq!(b.expect("ack").await["messageId"], "b1");
    let mut late = Client::connect(&server, true).await;
    let sr = subscribe(&mut late, "deep").await;
    assert_eq!(text_of(&sr["textState"]), "x".repeat(10_000));
    server.shutdown.cancel();
}

/// A real document's size: 100,000 blocks (~23 MB of state, ~26 MB as a message),
/// far past the ordinary message limit, syncs in one message; other large messages
/// are still refused at the ordinary limit.
#[tokio::test]
async fn a_hundred_thousand_block_document_syncs_in_one_message() {
    let server = start(open_config()).await;
    let state = text_gen::typing("client-with-a-long-id-0123", 100_000);
    assert!(state.len() > 20_000_000, "{}", state.len());
    for binary in [true, false] {
        let doc = format!("big-{binary}");
        let mut a = Client::connect(&server, binary).await;
        a.send(text_batch(&doc, "big", &state)).await;
        let m = a
            .recv_timeout(Duration::from_secs(60))
            .await
            .expect("a reply");
        assert_eq!(m["type"], "ack", "{m}");
        let mut late = Client::connect(&server, binary).await;
        late.send(json!({"type":"subscribe","documentId":doc}))
            .await;
        let sr = late
            .recv_timeout(Duration::from_secs(60))
            .await
            .expect("sync_response");
        assert_eq!(sr["type"], "sync_response");
        assert_eq!(sr["textState"].as_str().map(str::len), Some(state.len()));
    }
    // A 3 MB field write is not a text state: the ordinary limit applies.
    let mut c = Client::connect(&server, false).await;
    c.send(
        json!({"type":"delta_batch","documentId":"f","messageId":"m","deltas":[
            {"type":"set","field":"f","value":"y".repeat(3_000_000)},
            {"type":"text-state","documentId":"f","state":"{}"}
        ]}),
    )
    .await;
    let e = c.expect("error").await;
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|s| s.contains("Message too large")),
        "{e}"
    );
    assert!(
        e["error"].as_str().is_some_and(|s| s.contains("2000000")),
        "{e}"
    );
    server.shutdown.cancel();
}

/// While a 100,000-block state is parsed and merged (seconds in a debug build),
/// other documents' writes are acked at once and the big document itself still
/// answers readers: the work holds neither the runtime nor the document lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_merge_blocks_neither_other_documents_nor_readers() {
    let server = start(open_config()).await;
    let state = text_gen::typing("typist", 100_000);
    let mut writer = Client::connect(&server, true).await;
    let mut other = Client::connect(&server, false).await;
    let mut reader = Client::connect(&server, true).await;
    subscribe(&mut other, "small").await;
    subscribe(&mut reader, "big").await;
    let msg = text_batch("big", "big", &state);
    let started = Instant::now();
    writer.send(msg).await;
    let writer_done = tokio::spawn(async move {
        let m = writer
            .recv_timeout(Duration::from_secs(120))
            .await
            .expect("a reply");
        assert_eq!(m["type"], "ack", "{m}");
        Instant::now()
    });
    let mut acks_during = 0;
    let mut slowest = Duration::ZERO;
    for n in 0..40 {
        slowest = slowest.max(acked(&mut other, "small", n).await);
        if writer_done.is_finished() {
            break;
        }
        acks_during += 1;
        // The big document answers a reader meanwhile (its last state: none yet).
        reader
            .send(json!({"type":"sync_request","id":format!("r{n}"),"documentId":"big"}))
            .await;
        let t = Instant::now();
        let sr = reader.expect("sync_response").await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(sr["documentId"], "big");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = writer_done.await.expect("writer");
    assert!(
        acks_during >= 3,
        "only {acks_during} acks while the merge ran ({:?})",
        done - started
    );
    assert!(
        slowest < Duration::from_millis(250),
        "slowest answer {slowest:?}"
    );
    server.shutdown.cancel();
}
