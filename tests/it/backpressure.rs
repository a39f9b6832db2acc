//! Backpressure instead of punishment: a fast writer is slowed by its own replies
//! (acks, the echo of its writes), never closed for them, and loses nothing; only a
//! subscriber that does not read its broadcasts is closed with `1013`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{open_config, start, Client};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

const DOC: &str = "fanout";

fn delta(i: usize, value: Value) -> Message {
    Message::Text(
        json!({"type": "delta", "documentId": DOC, "field": format!("f{i}"), "value": value,
               "clientId": "writer", "messageId": format!("m{i}")})
        .to_string()
        .into(),
    )
}

/// Subscribe and read until `n` deltas of the writer arrived; panics on a close.
async fn subscriber(mut c: Client, n: usize) -> usize {
    let mut seen = 0;
    while seen < n {
        let m = c
            .recv_timeout(Duration::from_secs(30))
            .await
            .expect("a broadcast within 30 s");
        match m["type"].as_str() {
            Some("delta") => seen += 1,
            Some("__close") => panic!("subscriber closed after {seen} deltas: {m}"),
            _ => {}
        }
    }
    seen
}

/// One writer keeping `window` deltas in flight (acks free slots) until `n` are
/// acknowledged; returns (acks, echoes) and panics on a close.
async fn writer(
    c: Client,
    n: usize,
    window: usize,
    value: impl Fn(usize) -> Value,
) -> (usize, usize) {
    let (mut tx, mut rx) = c.ws.split();
    let slots = Arc::new(Semaphore::new(window));
    let reader_slots = slots.clone();
    let reader = tokio::spawn(async move {
        let (mut acks, mut echoes) = (0, 0);
        while acks < n {
            let next = tokio::time::timeout(Duration::from_secs(30), rx.next())
                .await
                .expect("a reply within 30 s");
            match next {
                Some(Ok(Message::Text(t))) => {
                    let m: Value = serde_json::from_str(&t).expect("json");
                    match m["type"].as_str() {
                        Some("ack") => {
                            acks += 1;
                            reader_slots.add_permits(1);
                        }
                        Some("delta") => echoes += 1,
                        Some("error") => panic!("error reply: {m}"),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    panic!("writer closed after {acks} acks: {f:?}")
                }
                Some(Ok(_)) => {}
                other => panic!("writer connection ended after {acks} acks: {other:?}"),
            }
        }
        // The echoes of the last writes may trail their acks.
        while echoes < n {
            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"delta\"") => echoes += 1,
                Ok(Some(Ok(Message::Close(f)))) => panic!("writer closed: {f:?}"),
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        (acks, echoes)
    });
    for i in 0..n {
        slots.acquire().await.expect("slot").forget();
        tx.send(delta(i, value(i))).await.expect("send");
    }
    let counts = reader.await.expect("writer reader");
    let _ = tx.close().await;
    counts
}

/// The reproduction: `SYNC_BATCH_DELAY=0`, one writer keeping 200 deltas in flight
/// to a document with 50 subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_writer_to_fifty_subscribers_is_slowed_not_closed() {
    fast_writer_to_fifty_subscribers(256).await;
}

/// The same under a broadcast budget of 64: the writer must be paced to its
/// subscribers (it yields while one has half its budget waiting). Without that, a
/// writer whose acks the in-memory store decides at once outran subscribers that
/// read as fast as they could, and they were closed with 1013 in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_writer_is_paced_to_subscribers_under_a_tight_broadcast_budget() {
    fast_writer_to_fifty_subscribers(64).await;
}

/// One writer keeping 200 deltas in flight to 50 subscribers with batching off, each
/// allowed `broadcast_budget` broadcasts waiting: nothing is lost and nobody closed.
async fn fast_writer_to_fifty_subscribers(broadcast_budget: usize) {
    const SUBSCRIBERS: usize = 50;
    const DELTAS: usize = 2_000;
    let mut config = open_config();
    config.batch_delay = Duration::ZERO;
    config.sync.max_messages_per_minute = 0;
    config.public_stats = true;
    config.max_queued_broadcasts = broadcast_budget;
    config.max_connections_per_ip = SUBSCRIBERS + 10;
    let server = start(config).await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = Client::connect(&server, true).await;
        common::subscribe(&mut c, DOC).await;
        readers.push(tokio::spawn(subscriber(c, DELTAS)));
    }
    let mut w = Client::connect(&server, false).await;
    common::subscribe(&mut w, DOC).await;
    let (acks, echoes) = writer(w, DELTAS, 200, |i| json!(i)).await;
    assert_eq!(acks, DELTAS, "every write acknowledged");
    assert_eq!(echoes, DELTAS, "every echo delivered to the writer");
    for r in readers {
        assert_eq!(r.await.expect("subscriber"), DELTAS, "nothing lost");
    }
    let stats = common::http(server.addr, "GET", "/stats", &[], None)
        .await
        .json();
    assert_eq!(
        stats["broadcast"]["slowClientsClosed"], 0,
        "nobody closed: {}",
        stats["broadcast"]
    );
}

/// A client whose socket receive buffer is small and fixed (no autotuning), so what
/// it does not read backs up into the server quickly.
async fn connect_with_small_receive_buffer(server: &common::TestServer) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}/ws", server.addr);
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    Client { ws, binary: false }
}

/// The writer's own replies cannot leave while it does not read: the server stops
/// reading its socket (backpressure) instead of closing it, and everything arrives
/// once it reads again. Storage is unreachable meanwhile, so no ack comes between
/// the echoes of its writes (they alone fill its outbox).
#[tokio::test]
async fn a_writer_that_reads_its_replies_late_is_paused_not_closed() {
    const DELTAS: usize = 1_200;
    let mut config = open_config();
    config.batch_delay = Duration::ZERO;
    config.sync.max_messages_per_minute = 0;
    config.public_stats = true;
    config.persistence.retry_min = Duration::from_millis(20);
    config.persistence.retry_max = Duration::from_millis(100);
    let storage = Arc::new(synckit::testing::storage::MemoryStorage::new());
    let mut backends = synckit::server::Backends::in_memory(&config);
    backends.storage = storage.clone();
    let server = common::start_on(config, backends).await;
    let mut w = connect_with_small_receive_buffer(&server).await;
    common::subscribe(&mut w, DOC).await;
    storage.set_reachable(false);
    let (mut tx, mut rx) = w.ws.split();
    // 8 KiB values: the echoes fill the socket buffers, then the outbox.
    let big = "x".repeat(8 * 1024);
    let sender = tokio::spawn(async move {
        for i in 0..DELTAS {
            tx.send(delta(i, json!(big))).await.expect("send");
        }
        tx
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    storage.set_reachable(true);
    let (mut acks, mut echoes) = (0, 0);
    while acks < DELTAS || echoes < DELTAS {
        let next = tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .expect("replies keep coming");
        match next {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(&t).expect("json");
                match m["type"].as_str() {
                    Some("ack") => acks += 1,
                    Some("delta") => echoes += 1,
                    _ => panic!("unexpected {m}"),
                }
            }
            Some(Ok(Message::Close(f))) => {
                panic!("writer closed after {acks} acks, {echoes} echoes: {f:?}")
            }
            Some(Ok(_)) => {}
            other => panic!("writer connection ended after {acks} acks: {other:?}"),
        }
    }
    drop(sender.await.expect("sender"));
    let stats = common::http(server.addr, "GET", "/stats", &[], None)
        .await
        .json();
    assert_eq!(
        stats["broadcast"]["slowClientsClosed"], 0,
        "{}",
        stats["broadcast"]
    );
    server.shutdown.cancel();
    let _ = server.done.await;
}

/// A subscriber that does not read while a writer sends `DELTAS` large deltas with
/// batching off (every delta one broadcast), under a broadcast budget of `budget`.
/// Returns what the stuck subscriber then reads: how many deltas, and its close frame
/// if one came.
async fn stuck_subscriber_with_budget(budget: usize) -> (usize, Option<Value>) {
    const DELTAS: usize = 1_200;
    let mut config = open_config();
    config.batch_delay = Duration::ZERO;
    config.sync.max_messages_per_minute = 0;
    config.max_queued_broadcasts = budget;
    let server = start(config).await;
    let mut stuck = Client::connect(&server, false).await;
    common::subscribe(&mut stuck, DOC).await;
    let mut reading = Client::connect(&server, false).await;
    common::subscribe(&mut reading, DOC).await;
    let reader = tokio::spawn(subscriber(reading, DELTAS));
    let mut w = Client::connect(&server, false).await;
    common::subscribe(&mut w, DOC).await;
    // 8 KiB values (~10 MB in all): the stuck client's socket buffers fill (a few
    // MB on loopback), then its outbox.
    let big = "x".repeat(8 * 1024);
    let (acks, _) = writer(w, DELTAS, 64, move |_| json!(big)).await;
    assert_eq!(
        acks, DELTAS,
        "the writer is not held up by the stuck subscriber"
    );
    assert_eq!(reader.await.expect("reader"), DELTAS);
    // The stuck client finally reads: what was buffered, then 1013 if it was closed.
    let (mut deltas, mut closed) = (0, None);
    while let Some(m) = stuck.recv_timeout(Duration::from_secs(2)).await {
        match m["type"].as_str() {
            Some("delta") => deltas += 1,
            Some("__close") => {
                closed = Some(m);
                break;
            }
            _ => {}
        }
        if deltas == DELTAS {
            break;
        }
    }
    server.shutdown.cancel();
    let _ = server.done.await;
    (deltas, closed)
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_closed_as_too_slow() {
    let (deltas, closed) = stuck_subscriber_with_budget(256).await;
    let closed = closed.unwrap_or_else(|| panic!("a close frame after {deltas} deltas"));
    assert_eq!(closed["code"], 1013, "{closed}");
    assert_eq!(closed["reason"], "Client too slow", "{closed}");
    assert!(
        deltas < 1_200,
        "it missed what came after its outbox filled"
    );
}

/// `SYNCKIT_MAX_QUEUED_BROADCASTS` sets how far behind a subscriber may fall: with
/// room for every broadcast the same stuck subscriber is kept and gets them all.
#[tokio::test]
async fn a_larger_broadcast_budget_keeps_a_subscriber_that_falls_behind() {
    let (deltas, closed) = stuck_subscriber_with_budget(2_000).await;
    assert_eq!(closed, None, "not closed");
    assert_eq!(deltas, 1_200, "every broadcast arrives, late");
}

/// The socket read buffer is small (`SYNCKIT_WS_READ_BUFFER_BYTES`) and a drained
/// outbox gives its memory back: frames far larger than the buffer still arrive
/// whole, in both directions, and small ones keep working between and after them.
#[tokio::test]
async fn frames_larger_than_the_read_buffer_arrive_whole_between_small_ones() {
    let mut config = open_config();
    config.ws_read_buffer_bytes = 256;
    let server = start(config).await;
    let mut writer = Client::connect(&server, true).await;
    let mut reader = Client::connect(&server, false).await;
    common::subscribe(&mut writer, DOC).await;
    common::subscribe(&mut reader, DOC).await;
    for (i, len) in [10, 200_000, 3, 1_000_000, 40].into_iter().enumerate() {
        let value = "v".repeat(len);
        writer
            .send(
                json!({"type": "delta", "documentId": DOC, "field": format!("f{i}"),
                         "value": value, "clientId": "writer", "messageId": format!("m{i}")}),
            )
            .await;
        let ack = writer.expect("ack").await;
        assert_eq!(ack["messageId"], format!("m{i}"));
        for c in [&mut writer, &mut reader] {
            let m = c.expect("delta").await;
            assert_eq!(m["field"], format!("f{i}"));
            assert_eq!(m["value"].as_str().map(str::len), Some(len));
        }
    }
}
