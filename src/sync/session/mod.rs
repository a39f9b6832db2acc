//! One connection's state machine: encoding, authentication, subscriptions, rate
//! limit, chunk reassembly, and the handler of every client message (docs/protocol.md §5–§7).
//!
//! Replies go to the connection's outbox in order. Acks wait until the write is
//! durable; they are queued in arrival order ([`AckQueue`]) so one connection can
//! keep many writes in flight and still receive its acks in order — an ack decided
//! at once (nothing to persist) waits behind earlier ones (docs/protocol.md §7.11).

use crate::hash::FastSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::acks::AckQueue;
use super::admission::{self, RefusalLog, Refused};
use super::chunks::{ChunkAssembler, ChunkOutcome};
use super::peer::{Outgoing, Peer};
use super::rate_limit::RateLimiter;
use super::SyncService;
use crate::auth::Identity;
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::message::ParseError;
use crate::protocol::{
    decode_frame, encode, frame, ClientMessage, DecodeError, Encoding, MessageType, RawMessage,
    ServerMessage,
};
use crate::storage::SessionRecord;

mod auth;
mod awareness;
mod documents;
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
    ip: String,
    user_agent: Option<String>,
    identity: Option<Identity>,
    /// Expiry of the token behind `identity` (epoch seconds): the session ends then.
    expires_at_secs: Option<i64>,
    encoding_fixed: bool,
    /// Documents this connection subscribed to (explicitly or by writing).
    documents: FastSet<Arc<str>>,
    /// Documents whose awareness this connection subscribed to.
    awareness_documents: FastSet<Arc<str>>,
    /// (document, client id) of the awareness entries this connection set and has
    /// not left: bounded by the per-connection awareness cap.
    awareness_clients: FastSet<(String, String)>,
    rate: RateLimiter,
    /// When the last rate-limit error reply went out.
    last_rate_reply: Option<Instant>,
    /// Behind a mutex only because handlers taking `&self` log through it; one task
    /// owns the session, so it is never contended.
    refusal_log: std::sync::Mutex<RefusalLog>,
    chunks: ChunkAssembler,
    /// Writer id for writes that name no client: unique across instances and restarts.
    writer_id: String,
    /// The replies of applied writes, in arrival order.
    acks: AckQueue,
    session_saved: bool,
}

impl Session {
    /// A new connection. With auth disabled it is authenticated at once as
    /// `anonymous-<ip>` (the SDK never sends `auth`).
    pub fn new(
        svc: Arc<SyncService>,
        peer: Arc<Peer>,
        ip: String,
        user_agent: Option<String>,
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
        let rate = RateLimiter::new(svc.settings.max_messages_per_minute, Instant::now());
        let chunks = ChunkAssembler::new(svc.settings.max_message_bytes);
        let refusal_log = RefusalLog::new(svc.settings.limits.refusal_log_interval);
        Session {
            svc,
            peer,
            ip,
            user_agent,
            identity,
            expires_at_secs: None,
            encoding_fixed: false,
            documents: FastSet::default(),
            awareness_documents: FastSet::default(),
            awareness_clients: FastSet::default(),
            rate,
            last_rate_reply: None,
            refusal_log: std::sync::Mutex::new(refusal_log),
            chunks,
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
                &self.ip,
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

    /// Handle one WebSocket data frame.
    pub async fn handle_frame(&mut self, is_text: bool, bytes: &[u8]) -> Result<(), CloseRequest> {
        if !self.encoding_fixed {
            // The first data frame decides the reply encoding for the connection.
            self.peer.set_encoding(Encoding::detect(is_text, bytes));
            self.encoding_fixed = true;
        }
        self.svc.metrics.bytes_in.add(bytes.len() as u64);
        self.handle_bytes(is_text, bytes, true).await
    }

    /// One message, in the steps below: sized, decoded, let past the rate limit
    /// and the admission checks, parsed, and dispatched to its handler.
    async fn handle_bytes(
        &mut self,
        is_text: bool,
        bytes: &[u8],
        allow_chunks: bool,
    ) -> Result<(), CloseRequest> {
        let now = Instant::now();
        // Sized before it is parsed: an oversized message costs no JSON parsing.
        // Past the ordinary limit, only a delta_batch of text states may pass (up to
        // the text-message limit): SDK clients send a whole text state at once.
        let max_bytes = self.svc.settings.max_message_bytes;
        let text_max = self.svc.settings.max_text_message_bytes.max(max_bytes);
        let (payload_len, may_be_text) = payload_size(is_text, bytes);
        let over = payload_len > max_bytes;
        if over && (payload_len > text_max || !may_be_text) {
            let limit = if may_be_text { text_max } else { max_bytes };
            return self.too_large(payload_len, limit, now).await;
        }
        let Some(raw) = self.decode(is_text, bytes, payload_len, now).await else {
            return Ok(());
        };
        if over && !only_text_states(&raw) {
            return self.too_large(payload_len, max_bytes, now).await;
        }
        let kind = raw.kind;
        if kind == MessageType::DeltaBatchChunk {
            return self.on_chunk(raw, allow_chunks, now).await;
        }
        let Some((msg, request_id)) = self.admit_message(raw, now).await else {
            return Ok(());
        };
        self.svc.metrics.message_in(kind);
        self.dispatch(msg, request_id).await
    }

    /// Decode a frame. Garbage is answered here (and `None`): it costs the sender
    /// its rate like any message, so a flood of it is answered at the rate-limit's
    /// pace, not frame for frame.
    async fn decode(
        &mut self,
        is_text: bool,
        bytes: &[u8],
        payload_len: usize,
        now: Instant,
    ) -> Option<RawMessage> {
        // A large message (a text state) is decoded on the blocking pool: it takes
        // milliseconds that the connection's runtime worker owes everyone else.
        let decoded = if payload_len > LARGE_MESSAGE_BYTES {
            let owned = bytes.to_vec();
            tokio::task::spawn_blocking(move || decode_frame(is_text, &owned))
                .await
                .unwrap_or(Err(DecodeError::Invalid))
        } else {
            decode_frame(is_text, bytes)
        };
        let e = match decoded {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        self.svc.metrics.invalid_frames.inc();
        if !self.rate.allow(now) {
            self.rate_limited(now).await;
            return None;
        }
        self.note_refusal(Refusal::Undecodable, now, &e);
        let reply = match e {
            DecodeError::UnknownType(name) => ServerMessage::error_with_code(
                err::invalid_message_type(&name),
                err::CODE_INVALID_MESSAGE,
            ),
            _ => ServerMessage::error(err::INVALID_MESSAGE_FORMAT, None),
        };
        self.reply(&reply).await;
        None
    }

    /// A decoded message through the rate limit (pings and pongs are free), the
    /// shape check, parsing and the clock check. A refused one is answered here
    /// (and `None`); an admitted one comes back with its request id.
    async fn admit_message(
        &mut self,
        raw: RawMessage,
        now: Instant,
    ) -> Option<(ClientMessage, Option<String>)> {
        let counted = !matches!(raw.kind, MessageType::Ping | MessageType::Pong);
        if counted && !self.rate.allow(now) {
            self.rate_limited(now).await;
            return None;
        }
        let limits = &self.svc.settings.limits;
        if let Err(refused) = admission::check_shape(&raw.body, limits.max_json_depth) {
            self.refuse(refused, &raw.body, now).await;
            return None;
        }
        let max_clock_entries = limits.max_clock_entries_per_message;
        let request_id = raw.id.clone();
        let document_id = raw.body.get("documentId").cloned();
        let msg = match ClientMessage::parse(raw) {
            Ok(msg) => msg,
            Err(ParseError::NotClientSendable(t)) => {
                self.note_refusal(Refusal::InvalidMessage, now, &t.name());
                self.reply(&ServerMessage::error_with_code(
                    err::invalid_message_type(t.name()),
                    err::CODE_INVALID_MESSAGE,
                ))
                .await;
                return None;
            }
        };
        if let Err(refused) = admission::check_clocks(&msg, max_clock_entries) {
            let mut context = Map::new();
            if let Some(id) = document_id {
                context.insert("documentId".into(), id);
            }
            self.refuse(refused, &context, now).await;
            return None;
        }
        Some((msg, request_id))
    }

    /// A `delta_batch_chunk`: only after auth, counted by the rate limit, held within
    /// the connection's chunk budget; a completed set is handled as one message (it
    /// passes every check of its own, and may not contain another chunk).
    async fn on_chunk(
        &mut self,
        raw: RawMessage,
        allow_chunks: bool,
        now: Instant,
    ) -> Result<(), CloseRequest> {
        if !self.rate.allow(now) {
            self.rate_limited(now).await;
            return Ok(());
        }
        if self.identity.is_none() {
            let refused = Refused {
                reason: Refusal::ChunkUnauthenticated,
                error: err::NOT_AUTHENTICATED.into(),
                code: err::CODE_AUTH_REQUIRED,
            };
            self.refuse(refused, &Map::new(), now).await;
            return Ok(());
        }
        self.svc.metrics.message_in(MessageType::DeltaBatchChunk);
        let outcome = match ClientMessage::parse(raw) {
            Ok(ClientMessage::DeltaBatchChunk(chunk)) if allow_chunks => {
                self.chunks.accept(chunk, now)
            }
            _ => ChunkOutcome::Invalid,
        };
        match outcome {
            ChunkOutcome::Pending => Ok(()),
            ChunkOutcome::Invalid => {
                let refused = Refused {
                    reason: Refusal::ChunkInvalid,
                    error: err::INVALID_CHUNK.into(),
                    code: err::CODE_INVALID_MESSAGE,
                };
                self.refuse_without_code(refused, now).await;
                Ok(())
            }
            ChunkOutcome::Complete(whole) => {
                let is_text = whole.first() == Some(&b'{');
                Box::pin(self.handle_bytes(is_text, &whole, false)).await
            }
        }
    }

    /// Timer work: drop chunk sets past their TTL even when no chunk arrives.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.chunks.sweep(now);
    }

    async fn dispatch(
        &mut self,
        msg: ClientMessage,
        request_id: Option<String>,
    ) -> Result<(), CloseRequest> {
        match msg {
            ClientMessage::Auth { token, api_key } => {
                return self.on_auth(token, api_key, request_id).await
            }
            ClientMessage::Ping => {
                self.reply_with_id(&ServerMessage::Pong, request_id.as_deref())
                    .await;
            }
            ClientMessage::Pong | ClientMessage::Connect | ClientMessage::Ignored => {}
            ClientMessage::Delta(delta) => self.on_delta(delta).await,
            ClientMessage::DeltaBatch(batch) => self.on_delta_batch(batch).await,
            other => {
                if self.identity.is_none() {
                    self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED)
                        .await;
                    return Ok(());
                }
                match other {
                    ClientMessage::Subscribe { document_id } => {
                        self.on_subscribe(document_id, request_id).await
                    }
                    ClientMessage::SyncRequest {
                        document_id,
                        vector_clock,
                    } => {
                        self.on_sync_request(document_id, vector_clock, request_id)
                            .await
                    }
                    ClientMessage::SyncStep1 { document_id } => {
                        self.on_sync_step1(document_id).await
                    }
                    ClientMessage::Unsubscribe { document_id } => {
                        self.on_unsubscribe(document_id).await
                    }
                    ClientMessage::AwarenessSubscribe { document_id } => {
                        self.on_awareness_subscribe(document_id).await
                    }
                    ClientMessage::AwarenessUpdate(update) => {
                        self.on_awareness_update(update).await
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

/// A frame's payload length, and whether it may be a `delta_batch` of text states
/// (the one message allowed past the ordinary size limit), read without decoding
/// it. A binary frame that does not split has length 0: decoding refuses it.
#[inline]
fn payload_size(is_text: bool, bytes: &[u8]) -> (usize, bool) {
    match Encoding::detect(is_text, bytes) {
        Encoding::Json => (bytes.len(), true),
        Encoding::Binary => frame::split(bytes).map_or((0, false), |f| {
            let batch = MessageType::from_code(f.code) == Some(MessageType::DeltaBatch);
            (f.payload.len(), batch)
        }),
    }
}

/// Messages larger than this are decoded on the blocking pool.
const LARGE_MESSAGE_BYTES: usize = 256 * 1024;

/// A `delta_batch` whose ops are all text states: the only message allowed past
/// `SYNCKIT_MAX_MESSAGE_BYTES` (up to `SYNCKIT_MAX_TEXT_MESSAGE_BYTES`).
fn only_text_states(raw: &RawMessage) -> bool {
    raw.kind == MessageType::DeltaBatch
        && raw
            .body
            .get("deltas")
            .and_then(Value::as_array)
            .is_some_and(|ops| {
                !ops.is_empty()
                    && ops
                        .iter()
                        .all(|op| op.get("type").and_then(Value::as_str) == Some("text-state"))
            })
}
