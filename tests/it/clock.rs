//! Wall time comes from the server's clock, not from the start time advanced by
//! monotonic time: a `TestClock` stepped forward (as an NTP step or a resume from
//! suspend steps the system clock) expires awareness at once and moves reply
//! timestamps (ARCHITECTURE.md "Time"). The scheduler's side is in `scheduler.rs`.

use std::time::Duration;

use serde_json::json;
use synckit::clock::{Clock, TestClock};
use synckit::server::{Backends, Server};
use tokio_util::sync::CancellationToken;

use crate::common::{open_config, Client, TestServer};

async fn start_with_clock(clock: std::sync::Arc<TestClock>) -> TestServer {
    let mut config = open_config();
    config.awareness_sweep_interval = Duration::from_millis(50);
    let backends = Backends::in_memory(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = Server::with_clock(config, backends, clock);
    let done = tokio::spawn(server.run(listener, None, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        done,
    }
}

#[tokio::test]
async fn a_stepped_clock_expires_awareness_and_moves_timestamps() {
    let clock = TestClock::starting_at(synckit::clock::system_ms());
    let server = start_with_clock(clock.clone()).await;
    let mut watcher = Client::connect(&server, false).await;
    watcher
        .send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    watcher.expect("awareness_state").await;
    let mut alice = Client::connect(&server, false).await;
    alice
        .send(
            json!({"type":"awareness_update","documentId":"room","clientId":"alice",
                     "state":{"name":"Alice"},"clock":1}),
        )
        .await;
    let joined = watcher.expect("awareness_update").await;
    assert_eq!(joined["clientId"], "alice");
    // The awareness timeout is 30 s: nothing expires by itself in this test.
    watcher.expect_silence(Duration::from_millis(300)).await;

    // The wall clock steps 31 s forward: alice's `expiresAt` is now in the past.
    clock.step(Duration::from_secs(31));
    let stepped = clock.now_ms();
    let leave = tokio::time::timeout(Duration::from_secs(5), watcher.expect("awareness_update"))
        .await
        .expect("alice expires once the clock is stepped");
    assert_eq!(leave["clientId"], "alice");
    assert!(leave["state"].is_null(), "{leave}");

    // Replies carry the stepped wall time.
    let mut late = Client::connect(&server, false).await;
    late.send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    let state = late.expect("awareness_state").await;
    assert_eq!(state["states"], json!([]), "{state}");
    let timestamp = state["timestamp"].as_i64().expect("timestamp");
    assert!(
        timestamp >= stepped,
        "reply timestamp {timestamp} before the stepped clock {stepped}"
    );
    server.shutdown.cancel();
}
