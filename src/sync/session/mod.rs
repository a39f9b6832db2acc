//! One connection's state machine: encoding, authentication, subscriptions, rate
//! limit, chunk reassembly, and the handler of every client message (docs/protocol.md §5–§7).
//!
//! Its intake is sans-I/O: [`intake::Intake`] takes a frame's bytes to the message to
//! dispatch, or to the reply refusing it (sizes, decoding, rate limit, admission,
//! chunks, the refusal log), as data, without awaiting, sending or reading a clock.
//! [`Session::handle_frame`] carries out what it decides. What is not sans-I/O yet
//! is past dispatch: the handlers await the hub, storage and the awareness store and
//! send their replies to the outbox themselves. The session reads no monotonic clock:
//! the connection passes each frame's `now` in, down to the handlers' refusal log.
//! Wall time comes from the service's [`crate::clock`].
//!
//! Replies go to the connection's outbox in order. Acks wait until the write is
//! durable; they are queued in arrival order ([`AckQueue`]) so one connection can
//! keep many writes in flight and still receive its acks in order — an ack decided
//! at once (nothing to persist) waits behind earlier ones (docs/protocol.md §7.11).

use crate::hash::FastSet;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::acks::AckQueue;
use super::peer::{Outgoing, Peer};
use super::SyncService;
use crate::auth::Identity;
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::{encode, ClientMessage, DecodeError, ServerMessage};
use crate::storage::SessionRecord;
use intake::{Intake, Outcome, Received};

mod auth;
mod awareness;
mod documents;
mod intake;
mod refusals;
mod writes;

/// Longest field name: `deltas.field_path` is `VARCHAR(500)`.
const MAX_FIELD_NAME_LEN: usize = 500;

/// Longest writer (client) id: `vector_clocks.client_id` is `VARCHAR(255)`.
pub(crate) const MAX_WRITER_ID_LEN: usize = 255;

/// Ask the connection to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: &'static str,
}

/// A verified identity and its token's expiry (epoch seconds), if any.
type Credentials = (Identity, Option<i64>);

pub struct Session {
    svc: Arc<SyncService>,
    peer: Arc<Peer>,
    user_agent: Option<String>,
    identity: Option<Identity>,
    /// Expiry of the token behind `identity` (epoch seconds): the session ends then.
    expires_at_secs: Option<i64>,
    /// Frames to dispatched messages (or their refusals), and the refusal log.
    intake: Intake,
    /// Documents this connection subscribed to (explicitly or by writing).
    documents: FastSet<Arc<str>>,
    /// Documents whose awareness this connection subscribed to.
    awareness_documents: FastSet<Arc<str>>,
    /// (document, client id) of the awareness entries this connection set and has
    /// not left: bounded by the per-connection awareness cap.
    awareness_clients: FastSet<(String, String)>,
    /// Writer id for writes that name no client: unique across instances and restarts.
    writer_id: String,
    /// The replies of applied writes, in arrival order.
    acks: AckQueue,
    session_saved: bool,
}

impl Session {
    /// A new connection, opened at `now`. With auth disabled it is authenticated at
    /// once as `anonymous-<ip>` (the SDK never sends `auth`).
    pub fn new(
        svc: Arc<SyncService>,
        peer: Arc<Peer>,
        ip: String,
        user_agent: Option<String>,
        now: Instant,
    ) -> Session {
        let identity = (!svc.settings.auth_required).then(|| Identity::anonymous_at(&ip));
        let short: String = svc
            .settings
            .instance_id
            .chars()
            .filter(|c| *c != '-')
            .take(16)
            .collect();
        let writer_id = format!("srv-{short}-{}", peer.conn_id);
        let intake = Intake::new(&svc.settings, svc.metrics.clone(), peer.conn_id, ip, now);
        Session {
            svc,
            peer,
            user_agent,
            identity,
            expires_at_secs: None,
            intake,
            documents: FastSet::default(),
            awareness_documents: FastSet::default(),
            awareness_clients: FastSet::default(),
            writer_id,
            acks: AckQueue::new(),
            session_saved: false,
        }
    }

    /// Fleet-unique connection id, used for session rows and awareness ownership.
    pub(crate) fn connection_key(&self) -> String {
        format!(
            "{}:conn-{}",
            self.svc.settings.instance_id, self.peer.conn_id
        )
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.identity.is_some()
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().map(|d| &**d)
    }

    /// Record the session row if authenticated (called at connect and after auth).
    pub(crate) fn persist_session(&mut self) {
        let Some(identity) = &self.identity else {
            return;
        };
        if !self.session_saved {
            self.svc.metrics.connections_authenticated.inc();
        }
        self.svc.metrics.user_joined(&identity.user_id);
        let record = SessionRecord {
            id: self.connection_key(),
            user_id: identity.user_id.clone(),
            client_id: None,
            metadata: crate::storage::memory::session_metadata(
                self.intake.ip(),
                self.user_agent.as_deref(),
                &self.svc.settings.instance_id,
            ),
        };
        self.session_saved = true;
        // Written behind: a connection never waits on the database.
        self.svc.hub.storage().save_session(record);
    }

    /// Bump the session's `last_seen` (called once per heartbeat interval; the
    /// writes are batched across connections).
    pub(crate) fn touch(&self) {
        if self.session_saved {
            self.svc.hub.storage().touch_session(&self.connection_key());
        }
    }

    /// The next ack (or persistence error) of an applied write, in arrival order:
    /// it leaves once it and every earlier one are decided. Pending forever when
    /// there is none, so it can sit in a `select!`.
    pub async fn next_ack(&mut self) -> ServerMessage {
        self.acks.next().await
    }

    pub fn has_pending_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// At the per-connection bound of queued acks
    /// ([`crate::sync::acks::MAX_QUEUED_ACKS`]): the socket is not read until one
    /// leaves.
    pub(crate) fn acks_full(&self) -> bool {
        self.acks.is_full()
    }

    /// Send a reply to this connection in its encoding.
    pub(crate) async fn reply(&self, msg: &ServerMessage) {
        self.reply_with_id(msg, None).await;
    }

    async fn reply_with_id(&self, msg: &ServerMessage, id: Option<&str>) {
        let now = self.svc.now_ms();
        let id = id.map_or_else(|| next_message_id(now), str::to_owned);
        let frame = encode(msg, &id, now, self.peer.encoding());
        if let ServerMessage::Error { error, .. } = msg {
            self.svc.metrics.error_sent(error);
        }
        if matches!(msg, ServerMessage::Ack { .. }) {
            self.svc.metrics.acks_sent.inc();
        }
        self.svc.metrics.message_out(msg.kind(), 1);
        self.peer.send_own(Outgoing::Frame(frame));
    }

    async fn error(&self, error: impl Into<String>) {
        self.reply(&ServerMessage::error(error, None)).await;
    }

    /// Handle one WebSocket data frame, received at `now`: the session's sans-I/O
    /// intake decides what it asks for, and this carries it out — the reply, the
    /// decode on the blocking pool, the handler.
    pub async fn handle_frame(
        &mut self,
        is_text: bool,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), CloseRequest> {
        let Received { encoding, outcome } =
            self.intake
                .receive(is_text, bytes, self.identity.is_some(), now);
        if let Some(encoding) = encoding {
            self.peer.set_encoding(encoding);
        }
        self.carry_out(outcome, now).await
    }

    /// Do what the intake asked. A decode on the blocking pool goes back to the
    /// intake, at most twice (a large chunk completing a large set).
    async fn carry_out(&mut self, mut outcome: Outcome, now: Instant) -> Result<(), CloseRequest> {
        loop {
            match outcome {
                Outcome::Nothing => return Ok(()),
                Outcome::Reply(msg) => {
                    self.reply(&msg).await;
                    return Ok(());
                }
                Outcome::Dispatch { msg, request_id } => {
                    return self.dispatch(msg, request_id, now).await
                }
                Outcome::DecodeOnBlockingPool { frame, then } => {
                    // A decode that panicked is garbage, answered like any other.
                    let decoded = tokio::task::spawn_blocking(move || frame.decode())
                        .await
                        .unwrap_or(Err(DecodeError::Invalid));
                    outcome = self
                        .intake
                        .decoded(then, decoded, self.identity.is_some(), now);
                }
            }
        }
    }

    /// Timer work: drop chunk sets past their TTL even when no chunk arrives.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.intake.sweep(now);
    }

    async fn dispatch(
        &mut self,
        msg: ClientMessage,
        request_id: Option<String>,
        now: Instant,
    ) -> Result<(), CloseRequest> {
        match msg {
            ClientMessage::Auth { token, api_key } => {
                return self.on_auth(token, api_key, request_id, now).await
            }
            ClientMessage::Ping => {
                self.reply_with_id(&ServerMessage::Pong, request_id.as_deref())
                    .await;
            }
            ClientMessage::Pong | ClientMessage::Connect | ClientMessage::Ignored => {}
            ClientMessage::Delta(delta) => self.on_delta(delta, now).await,
            ClientMessage::DeltaBatch(batch) => self.on_delta_batch(batch, now).await,
            other => {
                if self.identity.is_none() {
                    self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED, now)
                        .await;
                    return Ok(());
                }
                match other {
                    ClientMessage::Subscribe { document_id } => {
                        self.on_subscribe(document_id, request_id, now).await
                    }
                    ClientMessage::SyncRequest {
                        document_id,
                        vector_clock,
                    } => {
                        self.on_sync_request(document_id, vector_clock, request_id, now)
                            .await
                    }
                    ClientMessage::SyncStep1 { document_id } => {
                        self.on_sync_step1(document_id, now).await
                    }
                    ClientMessage::Unsubscribe { document_id } => {
                        self.on_unsubscribe(document_id).await
                    }
                    ClientMessage::AwarenessSubscribe { document_id } => {
                        self.on_awareness_subscribe(document_id, now).await
                    }
                    ClientMessage::AwarenessUpdate(update) => {
                        self.on_awareness_update(update, now).await
                    }
                    // Client acks are accepted and ignored (docs/protocol.md §7.11).
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Connection closed: leave every document, broadcast leaves for the awareness
    /// clients it owned (in the background), and drop its session row.
    pub(crate) async fn close(&mut self) {
        let docs: Vec<Arc<str>> = self
            .documents
            .union(&self.awareness_documents)
            .cloned()
            .collect();
        self.svc
            .hub
            .remove_peer(self.peer.conn_id, docs.iter().map(|d| &**d));
        // The leaves go out from a task of their own: with a shared store (PostgreSQL,
        // Redis) the removal is a round trip, and the close frame must not wait on
        // it — nor on an outage (the store is bounded, README "Running several
        // instances"). Entries a failed removal leaves behind expire.
        let svc = self.svc.clone();
        let connection = self.connection_key();
        self.svc.tasks.spawn(async move {
            match svc.awareness.remove_connection(&connection).await {
                Ok(entries) => {
                    for e in entries {
                        let msg = ServerMessage::AwarenessUpdate {
                            document_id: e.document_id.clone(),
                            client_id: e.client_id,
                            state: Value::Null,
                            clock: e.clock.saturating_add(1),
                        };
                        super::relay::broadcast_awareness(
                            &svc.hub,
                            &e.document_id,
                            &msg,
                            None,
                            true,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove awareness of closed connection")
                }
            }
        });
        if self.session_saved {
            self.svc.metrics.connections_authenticated.dec();
            if let Some(identity) = &self.identity {
                self.svc.metrics.user_left(&identity.user_id);
            }
            self.session_saved = false;
            self.svc
                .hub
                .storage()
                .delete_session(&self.connection_key());
        }
    }
}
