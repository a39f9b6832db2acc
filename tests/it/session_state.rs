//! The session state machine driven directly, without sockets or real sleeps: a
//! `Session` fed frames, what it decides carried out as the connection does
//! (`carry_out`), its outbox read back, tokio's paused time and a `TestClock` for
//! time (CONTRIBUTING "Time"). Each test runs in milliseconds. The auth deadline
//! test also drives the connection loop (`serve_socket`) over an in-memory pipe:
//! the session decides the deadline, the loop keeps the timer. (The unit tests in
//! `src/sync/session/tests.rs` check the session's decisions as data.)

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use synckit::protocol::encode::EncodedFrame;
use synckit::protocol::errors::{AUTHENTICATION_TIMEOUT, RATE_LIMITED};
use synckit::protocol::ServerMessage;
use synckit::server::carry_out::carry_out;
use synckit::server::{AppState, Backends, Server, ServerConfig};
use synckit::sync::peer::Outbox;
use synckit::sync::{Outgoing, Peer, Session, SyncService};
use synckit::testing::clock::TestClock;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

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
        let session = Session::new(
            self.sync.clone(),
            peer.clone(),
            "127.0.0.1".into(),
            None,
            Instant::now(),
        );
        Client {
            sync: self.sync.clone(),
            session,
            peer,
            outbox,
        }
    }
}

struct Client {
    sync: Arc<SyncService>,
    session: Session,
    peer: Arc<Peer>,
    outbox: Outbox,
}

impl Client {
    async fn send(&mut self, msg: Value) {
        let text = msg.to_string();
        let now = Instant::now();
        let outcome = self.session.handle_frame(true, text.as_bytes(), now);
        let carried = carry_out(&self.sync, &self.peer, &mut self.session, outcome, now);
        if let Err(close) = carried.await {
            panic!("session closed: {} {}", close.code, close.reason);
        }
    }

    /// Every message queued now, decoded.
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(item) = self.outbox.try_recv() {
            let frames = match item {
                Outgoing::Frame(f) => vec![f],
                Outgoing::Frames(fs) => fs.frames(),
                Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Close { .. } => continue,
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

/// A WebSocket client of `serve_socket` over an in-memory pipe: the HTTP upgrade
/// and the connection loop are the server's own, the socket is not.
async fn connect_piped(
    state: Arc<AppState>,
) -> tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream> {
    use hyper_util::rt::TokioIo;
    use synckit::server::upgrade::Upgrade;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move {
                let mut request = request.map(axum::body::Body::new);
                let response = match Upgrade::from_request(&mut request) {
                    Ok(ws) => ws.respond(WebSocketConfig::default(), move |socket| {
                        synckit::server::connection::serve_socket(
                            state,
                            socket,
                            std::net::Ipv4Addr::LOCALHOST.into(),
                            None,
                            None,
                        )
                    }),
                    Err(refused) => axum::response::IntoResponse::into_response(refused),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .with_upgrades(),
    );
    let (ws, _) = tokio_tungstenite::client_async("ws://localhost/ws", client_io)
        .await
        .expect("upgrade");
    ws
}

/// The next application message, or the close frame as `("__close", code, reason)`;
/// WebSocket pings are skipped (the library answers them).
async fn next_piped(ws: &mut tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("JSON"),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((0, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return json!({"type": "__close", "code": code, "reason": reason});
            }
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    }
}

async fn send_piped(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    msg: Value,
) {
    ws.send(Message::text(msg.to_string())).await.expect("send");
}

/// The auth deadline (the connection loop's, on tokio's clock, here paused): an
/// unauthenticated connection is alive until the auth timeout and closed with 1008
/// once it passes; an authenticated one outlives it.
#[tokio::test(start_paused = true)]
async fn an_unauthenticated_session_is_closed_once_the_auth_timeout_passes() {
    let mut config = ServerConfig::for_tests(true);
    config.sync.auth_timeout = Duration::from_secs(10);
    let state = Server::new(config.clone(), Backends::in_memory(&config)).state;
    let timeout = state.config.sync.auth_timeout;
    assert!(
        timeout < state.config.heartbeat_interval,
        "no heartbeat in between"
    );
    let started = Instant::now();
    let mut idle = connect_piped(state.clone()).await;
    let mut authed = connect_piped(state.clone()).await;
    let token = crate::common::user_token("u", &["*"], &["*"], false);
    send_piped(&mut authed, json!({"type":"auth","id":"a1","token":token})).await;
    assert_eq!(next_piped(&mut authed).await["type"], "auth_success");

    // Just before the deadline: still served (an application ping is answered, and
    // does not count as authenticating).
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    send_piped(&mut idle, json!({"type":"ping","id":"p1"})).await;
    let m = next_piped(&mut idle).await;
    assert_eq!(m["type"], "pong", "closed before the auth timeout: {m}");

    // Paused time runs on to the next timer: the deadline.
    let closed = tokio::time::timeout(timeout, next_piped(&mut idle))
        .await
        .expect("closed once the auth timeout passed");
    assert_eq!(closed["type"], "__close", "{closed}");
    assert_eq!(closed["code"], 1008, "{closed}");
    assert_eq!(closed["reason"], AUTHENTICATION_TIMEOUT, "{closed}");
    assert!(
        started.elapsed() >= timeout,
        "closed early: {:?}",
        started.elapsed()
    );

    // The authenticated connection is still served past the deadline.
    send_piped(&mut authed, json!({"type":"ping","id":"p2"})).await;
    assert_eq!(next_piped(&mut authed).await["type"], "pong");
}

/// Acks leave in the order the writes arrived (docs/protocol.md §7.11): the ack of a
/// batch with nothing to store, decided at once, waits behind the ack of an earlier
/// delta whose persist is held (the storage writer is not running yet).
#[tokio::test(start_paused = true)]
async fn an_ack_decided_at_once_waits_behind_an_earlier_held_one() {
    // Every write goes through the queue, whose writer is not running yet.
    let mut h = Harness::new(|c| c.persistence.commit_at_once = false);
    let mut c = h.session();
    c.send(json!({"type":"subscribe","documentId":"doc"})).await;
    assert_eq!(c.types(), ["sync_response"]);

    c.send(json!({"type":"delta","documentId":"doc","delta":{"f":1},"messageId":"m1"}))
        .await;
    c.send(
        json!({"type":"delta_batch","documentId":"doc","messageId":"m2",
                   "deltas":[{"type":"increment","amount":1}]}),
    )
    .await;
    assert!(
        c.drain().iter().all(|m| m["type"] != "ack"),
        "no ack goes out directly"
    );
    assert!(c.session.has_pending_acks());
    let early = c.session.next_ack().now_or_never();
    assert!(early.is_none(), "an ack overtook m1's: {early:?}");

    // The writer takes m1: both acks leave, m1 first.
    let stop = CancellationToken::new();
    let writer = tokio::spawn(h.sync.hub.storage().clone().run(stop.clone()));
    let mut acks = Vec::new();
    for _ in 0..2 {
        match c.session.next_ack().await {
            ServerMessage::Ack { message_id } => acks.push(message_id),
            other => panic!("not an ack: {other:?}"),
        }
    }
    assert_eq!(acks, ["m1", "m2"]);
    assert!(!c.session.has_pending_acks());
    stop.cancel();
    writer.await.expect("writer");
}
