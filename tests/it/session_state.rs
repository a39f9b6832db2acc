//! The session state machine driven directly, without sockets or real sleeps: a
//! `Session` fed frames, its outbox read back, tokio's paused time and a
//! `TestClock` for time (CONTRIBUTING "Time"). Each test runs in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use synckit::clock::TestClock;
use synckit::protocol::encode::EncodedFrame;
use synckit::protocol::errors::RATE_LIMITED;
use synckit::server::{Backends, Server, ServerConfig};
use synckit::sync::peer::Outbox;
use synckit::sync::{Outgoing, Peer, Session, SyncService};

/// A server's sync service (in memory, not listening) and a way to open sessions
/// on it.
struct Harness {
    sync: Arc<SyncService>,
    clock: Arc<TestClock>,
    next_conn: u64,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
        let mut config = ServerConfig::for_tests(false);
        tweak(&mut config);
        let clock = TestClock::starting_at(1_767_225_600_000);
        let backends = Backends::in_memory(&config);
        let server = Server::with_clock(config, backends, clock.clone());
        Harness {
            sync: server.state.sync.clone(),
            clock,
            next_conn: 0,
        }
    }

    fn session(&mut self) -> Client {
        self.next_conn += 1;
        let (peer, outbox) = Peer::new(self.next_conn);
        let session = Session::new(self.sync.clone(), peer, "127.0.0.1".into(), None);
        Client { session, outbox }
    }
}

struct Client {
    session: Session,
    outbox: Outbox,
}

impl Client {
    async fn send(&mut self, msg: Value) {
        let text = msg.to_string();
        if let Err(close) = self.session.handle_frame(true, text.as_bytes()).await {
            panic!("session closed: {} {}", close.code, close.reason);
        }
    }

    /// Every message queued now, decoded.
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(item) = self.outbox.try_recv() {
            let frames = match item {
                Outgoing::Frame(f) => vec![f],
                Outgoing::Frames(fs) => fs.to_vec(),
                Outgoing::Ping | Outgoing::Close { .. } => continue,
            };
            for frame in frames {
                match frame {
                    EncodedFrame::Text(t) => out.push(serde_json::from_str(&t).expect("JSON")),
                    EncodedFrame::Binary(_) => panic!("a JSON client got a binary frame"),
                }
            }
        }
        out
    }

    fn types(&mut self) -> Vec<String> {
        self.drain()
            .iter()
            .map(|m| m["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_refuses_past_its_budget_and_refills_with_time() {
    let mut h = Harness::new(|c| c.sync.max_messages_per_minute = 3);
    let mut c = h.session();
    // Pings are not counted (a client's keep-alive never trips the limit).
    c.send(json!({"type":"ping"})).await;
    for doc in ["a", "b", "c"] {
        c.send(json!({"type":"subscribe","documentId":doc})).await;
    }
    assert_eq!(
        c.types(),
        ["pong", "sync_response", "sync_response", "sync_response"]
    );
    c.send(json!({"type":"subscribe","documentId":"d"})).await;
    let refused = c.drain();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["type"], "error");
    assert_eq!(refused[0]["error"], RATE_LIMITED);

    // Two minutes later (paused time: no real wait) the sliding window has
    // forgotten them.
    tokio::time::advance(Duration::from_secs(121)).await;
    c.send(json!({"type":"subscribe","documentId":"d"})).await;
    assert_eq!(c.types(), ["sync_response"]);
}

#[tokio::test(start_paused = true)]
async fn awareness_expires_by_the_servers_clock() {
    let mut h = Harness::new(|_| {});
    let timeout = h.sync.settings.awareness_timeout;
    let mut alice = h.session();
    alice
        .send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    alice
        .send(json!({"type":"awareness_update","documentId":"room","clientId":"alice","state":{"name":"A"},"clock":1}))
        .await;
    alice.drain();

    let states = |c: &mut Client| -> Vec<String> {
        let msgs = c.drain();
        let state = msgs
            .iter()
            .find(|m| m["type"] == "awareness_state")
            .unwrap_or_else(|| panic!("no awareness_state in {msgs:?}"));
        state["states"]
            .as_array()
            .expect("states")
            .iter()
            .map(|s| s["clientId"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let mut bob = h.session();
    bob.send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    assert_eq!(states(&mut bob), ["alice"]);

    // Only the wall clock moves (as an NTP step would): expiry follows it.
    h.clock.step(timeout + Duration::from_secs(1));
    let mut carol = h.session();
    carol
        .send(json!({"type":"awareness_subscribe","documentId":"room"}))
        .await;
    assert!(states(&mut carol).is_empty(), "alice's entry expired");
}
