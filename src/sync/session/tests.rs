//! Unit tests of the session state machine: what it decides, read as data — the
//! replies, broadcasts, effects and the I/O it waits on — with the time of every
//! step given to it and wall time from an injected [`TestClock`]. No socket, no
//! sleep: the I/O a test lets happen is the connection's own
//! ([`crate::server::carry_out::perform`]) on the in-memory backends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::auth::{Permissions, TokenKind};
use crate::clock::{Clock, TestClock};
use crate::protocol::MessageType;
use crate::server::carry_out::perform;
use crate::server::{Backends, Server, ServerConfig};

struct Harness {
    svc: Arc<SyncService>,
    clock: Arc<TestClock>,
    next_conn: u64,
}

impl Harness {
    fn new(auth_required: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
        let mut config = ServerConfig::for_tests(auth_required);
        tweak(&mut config);
        let clock = TestClock::starting_at(1_767_225_600_000);
        let backends = Backends::in_memory(&config);
        let server = Server::with_clock(config, backends, clock.clone());
        Harness {
            svc: server.state.sync.clone(),
            clock,
            next_conn: 0,
        }
    }

    fn session(&mut self, now: Instant) -> Session {
        self.next_conn += 1;
        let (peer, _outbox) = Peer::new(self.next_conn);
        Session::new(self.svc.clone(), peer, "127.0.0.1".into(), None, now)
    }

    /// A valid access token for user `u`, every document readable and writable.
    fn token(&self) -> String {
        self.token_reading(vec!["*".into()])
    }

    /// A valid access token for user `u`, every document writable, `can_read` readable.
    fn token_reading(&self, can_read: Vec<String>) -> String {
        let identity = Identity {
            user_id: "u".into(),
            email: None,
            permissions: Permissions {
                can_read,
                can_write: vec!["*".into()],
                is_admin: false,
            },
        };
        let now_secs = self.clock.now_ms() / 1000;
        self.svc
            .auth
            .issue(&identity, TokenKind::Access, now_secs)
            .expect("token")
    }

    /// Hand the I/O `outcome` asks for to the connection's own performer and its
    /// answer back to the session: the next step.
    async fn step(&self, session: &mut Session, outcome: &mut Outcome, now: Instant) -> Outcome {
        let io = outcome.io.take().expect("a step waiting on I/O");
        let done = perform(&self.svc, *io).await;
        session.resume(done, now)
    }

    /// Every step of a message until it is done, in order (their I/O taken).
    async fn finish(&self, session: &mut Session, outcome: Outcome, now: Instant) -> Vec<Outcome> {
        let mut steps = vec![outcome];
        while let Some(last) = steps.last_mut().filter(|o| o.io.is_some()) {
            let next = self.step(session, last, now).await;
            steps.push(next);
        }
        steps
    }
}

fn frame(session: &mut Session, msg: Value, now: Instant) -> Outcome {
    session.handle_frame(true, msg.to_string().as_bytes(), now)
}

fn kinds(outcome: &Outcome) -> Vec<MessageType> {
    outcome.messages().iter().map(|m| m.kind()).collect()
}

fn error_of(outcome: &Outcome) -> Option<&str> {
    outcome.messages().iter().find_map(|m| match m {
        ServerMessage::Error { error, .. } => Some(error.as_str()),
        _ => None,
    })
}

#[test]
fn an_unauthenticated_session_is_closed_at_its_auth_deadline_and_not_before() {
    let mut h = Harness::new(true, |c| c.sync.auth_timeout = Duration::from_secs(10));
    let opened = Instant::now();
    let idle = h.session(opened);
    let deadline = opened + Duration::from_secs(10);
    assert_eq!(idle.auth_deadline(), Some(deadline));
    assert_eq!(idle.on_auth_deadline(deadline - Duration::from_millis(1)), None);
    let refused_before = h.svc.metrics.refusals(Refusal::NotAuthenticated);
    assert_eq!(
        idle.on_auth_deadline(deadline),
        Some(CloseRequest {
            code: close::POLICY,
            reason: err::AUTHENTICATION_TIMEOUT,
        })
    );
    assert_eq!(
        h.svc.metrics.refusals(Refusal::NotAuthenticated),
        refused_before + 1,
        "counted"
    );

    // Authenticated within the timeout: no deadline any more.
    let mut signed_in = h.session(opened);
    let token = h.token();
    let outcome = frame(
        &mut signed_in,
        json!({"type":"auth","id":"a1","token":token}),
        opened + Duration::from_secs(9),
    );
    assert_eq!(kinds(&outcome), [MessageType::AuthSuccess]);
    assert!(outcome.close.is_none());
    assert!(matches!(outcome.effects[..], [Effect::SaveSession(_)]));
    assert_eq!(signed_in.auth_deadline(), None);
    assert_eq!(signed_in.on_auth_deadline(deadline), None);
}

#[test]
fn a_bad_token_is_answered_then_closes() {
    let mut h = Harness::new(true, |_| {});
    let now = Instant::now();
    let mut s = h.session(now);
    let outcome = frame(&mut s, json!({"type":"auth","token":"not-a-jwt"}), now);
    assert_eq!(kinds(&outcome), [MessageType::AuthError]);
    assert_eq!(
        outcome.close,
        Some(CloseRequest {
            code: close::POLICY,
            reason: err::AUTHENTICATION_FAILED,
        })
    );
    assert!(outcome.effects.is_empty(), "no session row");
}

#[test]
fn the_rate_limit_refuses_past_its_budget_and_refills_by_the_time_it_is_given() {
    let mut h = Harness::new(false, |c| c.sync.max_messages_per_minute = 2);
    let t0 = Instant::now();
    let mut s = h.session(t0);
    let step1 = json!({"type":"sync_step1","documentId":"d"});
    for _ in 0..2 {
        assert_eq!(kinds(&frame(&mut s, step1.clone(), t0)), [MessageType::SyncStep2]);
    }
    let refused = frame(&mut s, step1.clone(), t0);
    assert_eq!(error_of(&refused), Some(err::RATE_LIMITED), "{refused:?}");
    // Once the sliding minute has passed by the time handed in (no clock is read):
    // served again.
    let later = t0 + Duration::from_secs(121);
    assert_eq!(kinds(&frame(&mut s, step1, later)), [MessageType::SyncStep2]);
}

#[tokio::test]
async fn a_document_not_live_is_loaded_by_the_connection_and_then_answered() {
    let mut h = Harness::new(false, |_| {});
    let now = Instant::now();
    let mut first = h.session(now);
    let asked = frame(&mut first, json!({"type":"subscribe","documentId":"doc"}), now);
    assert!(asked.replies.is_empty(), "nothing before the load: {asked:?}");
    assert!(matches!(asked.io.as_deref(), Some(Io::Open(id)) if id == "doc"), "{asked:?}");
    // Mid-message, the session takes no other frame.
    let ignored = frame(&mut first, json!({"type":"ping"}), now);
    assert!(ignored.replies.is_empty() && ignored.io.is_none());

    let steps = h.finish(&mut first, asked, now).await;
    assert_eq!(steps.len(), 2);
    assert_eq!(kinds(&steps[1]), [MessageType::SyncResponse]);
    assert_eq!(first.subscriptions().collect::<Vec<_>>(), ["doc"]);

    // Live now: a second reader is answered in the same step, with no I/O.
    let mut second = h.session(now);
    let answered = frame(&mut second, json!({"type":"subscribe","documentId":"doc"}), now);
    assert!(answered.io.is_none());
    assert_eq!(kinds(&answered), [MessageType::SyncResponse]);
}

#[test]
fn a_refused_batch_loads_applies_and_subscribes_nothing() {
    let mut h = Harness::new(false, |_| {});
    let now = Instant::now();
    let mut s = h.session(now);
    let batch = json!({"type":"delta_batch","documentId":"doc","messageId":"m1",
        "deltas":[{"field":"a","value":1}, 7]});
    let outcome = frame(&mut s, batch, now);
    assert_eq!(error_of(&outcome), Some(err::INVALID_DELTA_BATCH));
    assert!(outcome.io.is_none(), "nothing loaded: {outcome:?}");
    assert!(h.svc.hub.get("doc").is_none());
    assert_eq!(s.subscriptions().count(), 0);
    assert!(!s.has_pending_acks());
}

#[tokio::test]
async fn an_ack_waits_in_the_queue_while_a_refusal_is_answered_at_once() {
    // Every write goes through the queue, whose writer is not running.
    let mut h = Harness::new(false, |c| c.persistence.commit_at_once = false);
    let now = Instant::now();
    let mut s = h.session(now);
    let write = |id: &str| json!({"type":"delta","documentId":"doc","delta":{"f":1},"messageId":id});
    let outcome = frame(&mut s, write("m1"), now);
    let steps = h.finish(&mut s, outcome, now).await;
    // The ack is not a reply of the step: it leaves from the queue, in order, once
    // durable (the storage writer is not running here, so it is still held).
    assert!(steps.iter().all(|o| o.replies.is_empty()), "{steps:?}");
    assert!(s.has_pending_acks());
    assert!(s.next_ack().now_or_never().is_none());

    // A write with nothing to store is decided at once, and still waits behind m1.
    let empty = frame(
        &mut s,
        json!({"type":"delta_batch","documentId":"doc","messageId":"m2",
               "deltas":[{"type":"increment","amount":1}]}),
        now,
    );
    assert!(empty.replies.is_empty() && empty.io.is_none(), "{empty:?}");
    assert!(s.next_ack().now_or_never().is_none(), "m2 overtook m1");

    // A refused write is answered in its own step.
    let refused = frame(
        &mut s,
        json!({"type":"delta","documentId":"doc","delta":{"":1},"messageId":"m3"}),
        now,
    );
    assert_eq!(error_of(&refused), Some(err::INVALID_FIELD_NAME));
}

#[tokio::test]
async fn an_awareness_update_is_bounded_by_the_store_then_stored_then_broadcast() {
    let mut h = Harness::new(false, |_| {});
    let now = Instant::now();
    let mut s = h.session(now);
    let update = |clock: u64| {
        json!({"type":"awareness_update","documentId":"room","clientId":"alice",
               "state":{"name":"A"},"clock":clock})
    };
    let mut first = frame(&mut s, update(1), now);
    // A client id new to this connection: the document's entries are read first
    // (its per-document bound), at the injected clock's time.
    match first.io.as_deref() {
        Some(Io::AwarenessRead {
            document_id,
            now_ms,
        }) => {
            assert_eq!(document_id, "room");
            assert_eq!(*now_ms, h.clock.now_ms());
        }
        other => panic!("not an awareness read: {other:?}"),
    }
    let mut stored = h.step(&mut s, &mut first, now).await;
    assert!(matches!(stored.io.as_deref(), Some(Io::AwarenessSet(u)) if u.client_id == "alice" && u.clock == 1));
    let last = h.step(&mut s, &mut stored, now).await;
    assert!(last.replies.is_empty() && last.io.is_none(), "{last:?}");
    assert!(matches!(&last.broadcasts[..], [Broadcast::Awareness { document_id, .. }] if document_id == "room"));

    // Held by this connection now: straight to the store.
    let again = frame(&mut s, update(2), now);
    assert!(matches!(again.io.as_deref(), Some(Io::AwarenessSet(u)) if u.clock == 2), "{again:?}");
}

#[tokio::test]
async fn awareness_expires_by_the_injected_clock() {
    let mut h = Harness::new(false, |_| {});
    let timeout = h.svc.settings.awareness_timeout;
    let now = Instant::now();
    let mut alice = h.session(now);
    let set = json!({"type":"awareness_update","documentId":"room","clientId":"alice",
                     "state":{"name":"A"},"clock":1});
    let outcome = frame(&mut alice, set, now);
    h.finish(&mut alice, outcome, now).await;

    let subscribe = json!({"type":"awareness_subscribe","documentId":"room"});
    let mut present = Vec::new();
    for step in [Duration::ZERO, timeout + Duration::from_secs(1)] {
        // Only the wall clock moves (as an NTP step would): expiry follows it.
        h.clock.step(step);
        let mut reader = h.session(now);
        let outcome = frame(&mut reader, subscribe.clone(), now);
        let steps = h.finish(&mut reader, outcome, now).await;
        let states = steps.iter().flat_map(|o| o.messages()).find_map(|m| match m {
            ServerMessage::AwarenessState { states, .. } => {
                Some(states.iter().map(|s| s.client_id.clone()).collect::<Vec<_>>())
            }
            _ => None,
        });
        present.push(states.expect("an awareness_state"));
    }
    assert_eq!(present, [vec!["alice".to_owned()], vec![]]);
}

#[test]
fn a_session_row_is_saved_touched_and_deleted_as_effects() {
    let mut h = Harness::new(false, |_| {});
    let now = Instant::now();
    let mut s = h.session(now);
    let key = s.connection_key();
    let started = s.start();
    assert!(matches!(&started.effects[..], [Effect::SaveSession(r)] if r.id == key));
    let beat = s.on_heartbeat(now + Duration::from_secs(30));
    assert_eq!(beat.effects, [Effect::TouchSession(key.clone())]);
    let closed = s.close();
    assert_eq!(
        closed.effects,
        [
            Effect::RemoveAwareness {
                connection: key.clone()
            },
            Effect::DeleteSession(key)
        ]
    );
}

/// A write whose broadcast leaves a subscriber half its broadcast budget behind asks
/// the writing connection to pace (src/sync/peer.rs) — a write-only one too, which
/// is not among the document's subscribers.
#[tokio::test]
async fn a_write_that_crowds_a_subscriber_paces_its_writer_even_a_write_only_one() {
    let h = Harness::new(true, |c| c.batch_delay = Duration::ZERO);
    let now = Instant::now();
    let entry = h.svc.hub.open("doc").await.expect("open");
    // Room for 8 broadcasts, never drained: the fourth waiting is half of it.
    let (reader, _reader_outbox) = Peer::with_broadcast_budget(100, 8);
    h.svc.hub.subscribe(&entry, &reader);
    let (peer, _outbox) = Peer::new(1);
    let mut s = Session::new(h.svc.clone(), peer.clone(), "127.0.0.1".into(), None, now);
    let auth = json!({"type":"auth","token": h.token_reading(Vec::new())});
    assert_eq!(kinds(&frame(&mut s, auth, now)), [MessageType::AuthSuccess]);
    let mut paced = Vec::new();
    for i in 0..5 {
        let write = json!({"type":"delta","documentId":"doc","delta":{format!("f{i}"): i},"messageId":format!("m{i}")});
        let outcome = frame(&mut s, write, now);
        let steps = h.finish(&mut s, outcome, now).await;
        assert!(steps.iter().all(|o| error_of(o).is_none()), "{steps:?}");
        paced.push(peer.take_pace_request());
    }
    assert_eq!(paced, [false, false, false, true, true]);
    let (subscribers, _) = h.svc.hub.subscriber_ids("doc").expect("live");
    assert_eq!(
        subscribers,
        [100],
        "the writer may not read, so it did not subscribe"
    );
}
