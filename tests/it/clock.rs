//! Wall time comes from the server's clock, not from the start time advanced by
//! monotonic time: a `TestClock` stepped forward (as an NTP step or a resume from
//! suspend steps the system clock) expires awareness at once and moves reply
//! timestamps (ARCHITECTURE.md "Time"). The scheduler's side is in `scheduler.rs`.

use std::time::Duration;

use serde_json::json;
use synckit::server::{Backends, Server};
use synckit::testing::clock::{Clock, TestClock};

use crate::common::{alice_joins_room, open_config, run_server, Client, TestServer};

async fn start_with_clock(clock: std::sync::Arc<TestClock>) -> TestServer {
    let mut config = open_config();
    config.awareness_sweep_interval = Duration::from_millis(50);
    let backends = Backends::in_memory(&config);
    run_server(Server::with_clock(config, backends, clock)).await
}

#[tokio::test]
async fn a_stepped_clock_expires_awareness_and_moves_timestamps() {
    let clock = TestClock::starting_at(synckit::testing::clock::system_ms());
    let server = start_with_clock(clock.clone()).await;
    let (mut watcher, _alice, joined) = alice_joins_room(&server).await;
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
