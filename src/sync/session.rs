//! One connection's state machine: encoding, authentication, subscriptions, rate
//! limit, chunk reassembly, and the handler of every client message (docs/protocol.md §5–§7).
//!
//! Replies go to the connection's outbox in order. Acks wait until the write is
//! durable; they are queued in arrival order ([`AckQueue`]) so one connection can
//! keep many writes in flight and still receive its acks in order — an ack decided
//! at once (nothing to persist) waits behind earlier ones (docs/protocol.md §7.11).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::acks::AckQueue;
use super::admission::{self, RefusalLog, Refused};
use super::chunks::{ChunkAssembler, ChunkOutcome};
use super::hub::{Changes, DocEntry, FieldWrite, TextOutcome};
use super::peer::{Outgoing, Peer};
use super::rate_limit::RateLimiter;
use super::{playground_allows, SyncService};
use crate::auth::{Identity, TokenKind};
use crate::awareness::{AwarenessUpdate, SetOutcome};
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors::{self as err, close};
use crate::protocol::message::{
    is_tombstone, tombstone, AwarenessStateEntry, AwarenessUpdateMessage, DeltaBatchMessage,
    DeltaMessage, ParseError,
};
use crate::protocol::{
    decode_frame, document_id, encode, frame, ClientMessage, DecodeError, Encoding, MessageType,
    ServerMessage,
};
use crate::storage::{PersistTicket, SessionRecord, StorageError};

/// Longest field name: `deltas.field_path` is `VARCHAR(500)`.
pub const MAX_FIELD_NAME_LEN: usize = 500;

/// Longest writer (client) id: `vector_clocks.client_id` is `VARCHAR(255)`.
pub const MAX_WRITER_ID_LEN: usize = 255;

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
    documents: HashSet<Arc<str>>,
    /// Documents whose awareness this connection subscribed to.
    awareness_documents: HashSet<Arc<str>>,
    /// (document, client id) of the awareness entries this connection set and has
    /// not left: bounded by the per-connection awareness cap.
    awareness_clients: HashSet<(String, String)>,
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
            documents: HashSet::new(),
            awareness_documents: HashSet::new(),
            awareness_clients: HashSet::new(),
            rate,
            last_rate_reply: None,
            refusal_log: std::sync::Mutex::new(refusal_log),
            chunks,
            writer_id,
            acks: AckQueue::new(),
            session_saved: false,
        }
    }

    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    pub fn conn_id(&self) -> u64 {
        self.peer.conn_id
    }

    /// Fleet-unique connection id, used for session rows and awareness ownership.
    pub fn connection_key(&self) -> String {
        format!(
            "{}:conn-{}",
            self.svc.settings.instance_id, self.peer.conn_id
        )
    }

    pub fn is_authenticated(&self) -> bool {
        self.identity.is_some()
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().map(|d| &**d)
    }

    /// Record the session row if authenticated (called at connect and after auth).
    pub fn persist_session(&mut self) {
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
    pub fn touch(&self) {
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
    pub fn acks_full(&self) -> bool {
        self.acks.is_full()
    }

    /// Send a reply to this connection in its encoding.
    pub async fn reply(&self, msg: &ServerMessage) {
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
        let (payload_len, may_be_text) = match Encoding::detect(is_text, bytes) {
            Encoding::Json => (bytes.len(), true),
            Encoding::Binary => frame::split(bytes).map_or((0, false), |f| {
                let batch = MessageType::from_code(f.code) == Some(MessageType::DeltaBatch);
                (f.payload.len(), batch)
            }),
        };
        let over = payload_len > max_bytes;
        if over && (payload_len > text_max || !may_be_text) {
            let limit = if may_be_text { text_max } else { max_bytes };
            return self.too_large(payload_len, limit, now).await;
        }
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
        let raw = match decoded {
            Ok(raw) => raw,
            Err(e) => {
                // Garbage costs the sender its rate like any message, so a flood of it
                // is answered at the rate-limit's pace, not frame for frame.
                self.svc.metrics.invalid_frames.inc();
                if !self.rate.allow(now) {
                    self.rate_limited(now).await;
                    return Ok(());
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
                return Ok(());
            }
        };
        if over && !only_text_states(&raw) {
            return self.too_large(payload_len, max_bytes, now).await;
        }
        let kind = raw.kind;
        if kind == MessageType::DeltaBatchChunk {
            return self.on_chunk(raw, allow_chunks, now).await;
        }
        let counted = !matches!(kind, MessageType::Ping | MessageType::Pong);
        if counted && !self.rate.allow(now) {
            self.rate_limited(now).await;
            return Ok(());
        }
        let limits = &self.svc.settings.limits;
        if let Err(refused) = admission::check_shape(&raw.body, limits.max_json_depth) {
            self.refuse(refused, &raw.body, now).await;
            return Ok(());
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
                return Ok(());
            }
        };
        if let Err(refused) = admission::check_clocks(&msg, max_clock_entries) {
            let mut context = Map::new();
            if let Some(id) = document_id {
                context.insert("documentId".into(), id);
            }
            self.refuse(refused, &context, now).await;
            return Ok(());
        }
        self.svc.metrics.message_in(kind);
        self.dispatch(msg, request_id).await
    }

    /// A `delta_batch_chunk`: only after auth, counted by the rate limit, held within
    /// the connection's chunk budget; a completed set is handled as one message (it
    /// passes every check of its own, and may not contain another chunk).
    async fn on_chunk(
        &mut self,
        raw: crate::protocol::RawMessage,
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
    pub fn sweep(&mut self, now: Instant) {
        self.chunks.sweep(now);
    }

    /// Count a refusal and log it, at most once per reason per log interval.
    fn note_refusal(&self, reason: Refusal, now: Instant, detail: &dyn std::fmt::Display) {
        self.svc.metrics.refused(reason);
        let due = self
            .refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(reason, now);
        if let Some(suppressed) = due {
            tracing::warn!(
                conn_id = self.peer.conn_id,
                ip = %self.ip,
                reason = reason.label(),
                suppressed,
                detail = %detail,
                "[SECURITY] client input refused"
            );
        }
    }

    /// A message over its size limit: refused before anything reads it further.
    async fn too_large(
        &mut self,
        payload_len: usize,
        limit: usize,
        now: Instant,
    ) -> Result<(), CloseRequest> {
        if !self.rate.allow(now) {
            self.rate_limited(now).await;
            return Ok(());
        }
        let refused = Refused {
            reason: Refusal::TooLarge,
            error: err::message_too_large(payload_len, limit),
            code: err::CODE_INVALID_MESSAGE,
        };
        // The TS reply carries no document id.
        self.refuse(refused, &Map::new(), now).await;
        Ok(())
    }

    /// Refuse a message: count, log (throttled) and answer with the named error,
    /// `details: {code, documentId?}`.
    async fn refuse(&self, refused: Refused, context: &Map<String, Value>, now: Instant) {
        self.note_refusal(refused.reason, now, &refused.error);
        let mut details = Map::new();
        details.insert("code".into(), Value::String(refused.code.into()));
        if let Some(id @ Value::String(_)) = context.get("documentId") {
            details.insert("documentId".into(), id.clone());
        }
        self.reply(&ServerMessage::error(
            refused.error,
            Some(Value::Object(details)),
        ))
        .await;
    }

    /// Refuse with the bare TS error (no `details`), for errors TS sends that way.
    async fn refuse_without_code(&self, refused: Refused, now: Instant) {
        self.note_refusal(refused.reason, now, &refused.error);
        self.error(refused.error).await;
    }

    /// [`Self::refuse_without_code`] of a fixed TS error.
    async fn refuse_plain(&self, reason: Refusal, error: &'static str) {
        self.note_refusal(reason, Instant::now(), &error);
        self.error(error).await;
    }

    /// A write naming an invalid field: the TS error `{documentId}`, nothing applied.
    async fn refuse_invalid_field(&self, id: &str) {
        self.note_refusal(
            Refusal::InvalidMessage,
            Instant::now(),
            &err::INVALID_FIELD_NAME,
        );
        self.reply(&ServerMessage::error_for_document(
            err::INVALID_FIELD_NAME,
            id,
        ))
        .await;
    }

    /// Over the rate limit: the message is dropped; the error reply goes out at most
    /// once per [`admission::RATE_LIMIT_REPLY_INTERVAL`] so a flood is not answered
    /// message for message.
    async fn rate_limited(&mut self, now: Instant) {
        self.svc.metrics.rate_limited.inc();
        self.note_refusal(Refusal::RateLimited, now, &"rate limit exceeded");
        let due = self.last_rate_reply.is_none_or(|t| {
            now.saturating_duration_since(t) >= admission::RATE_LIMIT_REPLY_INTERVAL
        });
        if due {
            self.last_rate_reply = Some(now);
            self.reply(&ServerMessage::error_with_code(
                err::RATE_LIMITED,
                err::CODE_RATE_LIMIT,
            ))
            .await;
        }
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

    /// Verify an `auth` message's credentials: a token wins over an API key; `None`
    /// when the message carried neither.
    fn verify_credentials(
        &self,
        token: Option<&str>,
        api_key: Option<&str>,
    ) -> Option<Result<Credentials, crate::auth::AuthError>> {
        match (token, api_key) {
            (Some(token), _) => Some(
                self.svc
                    .auth
                    .verify(token, TokenKind::Access)
                    .map(|v| (v.identity, v.expires_at)),
            ),
            (None, Some(key)) => Some(self.svc.auth.verify_api_key(key).map(|i| (i, None))),
            (None, None) => None,
        }
    }

    fn record_auth_failure(&self, reason: &dyn std::fmt::Display) -> CloseRequest {
        self.svc.metrics.auth_failures.inc();
        tracing::warn!(conn_id = self.peer.conn_id, ip = %self.ip, reason = %reason, "authentication failed");
        CloseRequest {
            code: close::POLICY,
            reason: err::AUTHENTICATION_FAILED,
        }
    }

    async fn sign_in(&mut self, (identity, expires_at): Credentials) {
        tracing::debug!(conn_id = self.peer.conn_id, user_id = %identity.user_id, "authenticated");
        self.expires_at_secs = expires_at;
        if let Some(previous) = self.identity.replace(identity) {
            if self.session_saved {
                self.svc.metrics.user_left(&previous.user_id);
            }
        }
        self.persist_session();
    }

    /// After a re-authentication: drop every subscription the new permissions no
    /// longer allow, telling the client which (`error "Subscription revoked: …"`
    /// with `details {code, documentId}`), so old rights never outlive the token.
    async fn recheck_subscriptions(&mut self) {
        let Some(identity) = &self.identity else {
            return;
        };
        let revoked: Vec<Arc<str>> = self
            .documents
            .union(&self.awareness_documents)
            .filter(|id| !identity.permissions.can_read(id))
            .cloned()
            .collect();
        for id in revoked {
            self.svc.hub.unsubscribe(&id, self.peer.conn_id);
            self.svc.hub.unsubscribe_awareness(&id, self.peer.conn_id);
            self.documents.remove(&id);
            self.awareness_documents.remove(&id);
            let context = document_context(&id);
            let refused = Refused {
                reason: Refusal::SubscriptionRevoked,
                error: err::SUBSCRIPTION_REVOKED.into(),
                code: err::CODE_SUBSCRIPTION_REVOKED,
            };
            self.refuse(refused, &context, Instant::now()).await;
        }
    }

    /// When the token this session authenticated with expires (epoch seconds);
    /// `None` for API keys, anonymous sessions and tokens without `exp`.
    pub fn expires_at_secs(&self) -> Option<i64> {
        self.expires_at_secs
    }

    /// `?token=` on the upgrade: the same check as an `auth` message, but silent on
    /// success — the client has sent nothing yet, so its encoding is unknown. A bad
    /// token closes with 1008 `Authentication failed` (the reason is in the close frame,
    /// which every client can read whatever its encoding).
    pub async fn authenticate_query_token(&mut self, token: &str) -> Result<(), CloseRequest> {
        match self.verify_credentials(Some(token), None) {
            Some(Ok(identity)) => {
                self.sign_in(identity).await;
                self.recheck_subscriptions().await;
                Ok(())
            }
            Some(Err(e)) => Err(self.record_auth_failure(&e)),
            None => Ok(()),
        }
    }

    async fn on_auth(
        &mut self,
        token: Option<String>,
        api_key: Option<String>,
        request_id: Option<String>,
    ) -> Result<(), CloseRequest> {
        let identity = match self.verify_credentials(token.as_deref(), api_key.as_deref()) {
            Some(Ok(identity)) => identity,
            Some(Err(e)) => {
                let close = self.record_auth_failure(&e);
                self.reply(&ServerMessage::AuthError {
                    error: err::AUTHENTICATION_FAILED.into(),
                })
                .await;
                return Err(close);
            }
            None if self.svc.settings.auth_required => {
                self.note_refusal(
                    Refusal::NotAuthenticated,
                    Instant::now(),
                    &"auth without credentials",
                );
                self.reply(&ServerMessage::error_with_code(
                    err::AUTHENTICATION_REQUIRED,
                    err::CODE_AUTH_REQUIRED,
                ))
                .await;
                return Err(CloseRequest {
                    code: close::POLICY,
                    reason: err::AUTHENTICATION_REQUIRED,
                });
            }
            None => (Identity::anonymous(), None),
        };
        let msg = ServerMessage::AuthSuccess {
            user_id: identity.0.user_id.clone(),
            permissions: identity.0.permissions.to_body(),
        };
        self.sign_in(identity).await;
        self.reply_with_id(&msg, request_id.as_deref()).await;
        self.recheck_subscriptions().await;
        Ok(())
    }

    /// Steps shared by every document handler: authenticated, valid id, permission.
    /// Replies with the TS error and returns `None` on failure.
    async fn admit(&self, document_id: Option<&str>, write: bool) -> Option<String> {
        let Some(identity) = &self.identity else {
            self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED)
                .await;
            return None;
        };
        let id = match document_id::validate(document_id) {
            Ok(id) => id.to_owned(),
            Err(e) => {
                self.note_refusal(Refusal::InvalidDocumentId, Instant::now(), &e);
                self.error(e.to_string()).await;
                return None;
            }
        };
        let allowed = if write {
            identity.permissions.can_write(&id)
        } else {
            identity.permissions.can_read(&id)
        };
        if !allowed {
            let detail = format!("unauthorized access to document {id}");
            self.note_refusal(Refusal::PermissionDenied, Instant::now(), &detail);
            self.reply(&ServerMessage::error_for_document(
                err::PERMISSION_DENIED,
                &id,
            ))
            .await;
            return None;
        }
        Some(id)
    }

    async fn open(&self, id: &str, failure: &str) -> Option<Arc<DocEntry>> {
        match self.svc.hub.open(id).await {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!(document_id = %id, error = %e, "could not load document");
                self.reply(&ServerMessage::error_for_document(failure, id))
                    .await;
                None
            }
        }
    }

    /// Admit, load and subscribe: the common start of subscribe, sync_request and
    /// both write handlers (writes auto-subscribe the sender, as in TS). A read past
    /// the connection's subscription cap is refused before the document is loaded;
    /// a write is still applied, without subscribing.
    async fn admit_and_join(
        &mut self,
        document_id: Option<&str>,
        write: bool,
        failure: &str,
    ) -> Option<Arc<DocEntry>> {
        let id = self.admit(document_id, write).await?;
        if !write && self.subscription_cap_reached(&self.documents, &id) {
            self.refuse_subscription(&id).await;
            return None;
        }
        let entry = self.open(&id, failure).await?;
        self.join(&entry);
        Some(entry)
    }

    /// Whether subscribing `id` (not yet in `subscribed`) would pass the
    /// per-connection subscription cap.
    fn subscription_cap_reached(&self, subscribed: &HashSet<Arc<str>>, id: &str) -> bool {
        let max = self.svc.settings.limits.max_subscriptions_per_connection;
        !subscribed.contains(id) && subscribed.len() >= max
    }

    async fn refuse_subscription(&self, id: &str) {
        let max = self.svc.settings.limits.max_subscriptions_per_connection;
        let refused = Refused::new(
            Refusal::SubscriptionLimit,
            err::too_many_subscriptions(max),
            err::CODE_SUBSCRIPTION_LIMIT,
        );
        self.refuse(refused, &document_context(id), Instant::now())
            .await;
    }

    /// Subscribe to a document's broadcasts. Writes auto-subscribe the writer (TS
    /// behaviour), but only when it may also read the document: write permission
    /// does not imply read (docs/protocol.md §6), and broadcasts carry the document.
    fn join(&mut self, entry: &Arc<DocEntry>) {
        let may_read = self
            .identity
            .as_ref()
            .is_some_and(|i| i.permissions.can_read(&entry.id));
        if !may_read || self.subscription_cap_reached(&self.documents, &entry.id) {
            return;
        }
        self.svc.hub.subscribe(entry, &self.peer);
        self.documents.insert(entry.id.clone());
    }

    async fn send_sync_response(&self, entry: &DocEntry, request_id: Option<String>) {
        let snap = self.svc.hub.snapshot(entry);
        let now = self.svc.now_ms();
        let msg = ServerMessage::SyncResponse {
            request_id: request_id.clone().unwrap_or_else(|| next_message_id(now)),
            document_id: entry.id.to_string(),
            state: snap.state,
            clock: snap.clock,
            text_state: snap.text,
        };
        self.reply_with_id(&msg, request_id.as_deref()).await;
    }

    async fn on_subscribe(&mut self, document_id: Option<String>, request_id: Option<String>) {
        if self.identity.is_some() {
            if let Ok(id) = document_id::validate(document_id.as_deref()) {
                if self.svc.settings.playground_access_filter && !playground_allows(id) {
                    self.refuse_plain(Refusal::PermissionDenied, err::ACCESS_DENIED)
                        .await;
                    return;
                }
            }
        }
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), false, err::SUBSCRIBE_FAILED)
            .await
        else {
            return;
        };
        self.send_sync_response(&entry, request_id).await;
    }

    async fn on_sync_request(
        &mut self,
        document_id: Option<String>,
        vector_clock: Option<Map<String, Value>>,
        request_id: Option<String>,
    ) {
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), false, err::SYNC_REQUEST_FAILED)
            .await
        else {
            return;
        };
        // The client's clock is not merged: a read never changes the document (any
        // reader could otherwise inflate the clock every broadcast carries).
        let _ = vector_clock;
        self.send_sync_response(&entry, request_id).await;
    }

    async fn on_sync_step1(&mut self, document_id: Option<String>) {
        let Some(id) = self.admit(document_id.as_deref(), false).await else {
            return;
        };
        self.reply(&ServerMessage::SyncStep2 { document_id: id })
            .await;
    }

    async fn on_unsubscribe(&mut self, document_id: Option<String>) {
        let Ok(id) = document_id::validate(document_id.as_deref()) else {
            return;
        };
        self.svc.hub.unsubscribe(id, self.peer.conn_id);
        self.documents.remove(id);
    }

    fn writer_for(&self, client_id: Option<&str>) -> String {
        match client_id {
            Some(c) if !c.is_empty() && c.len() <= MAX_WRITER_ID_LEN => c.to_owned(),
            _ => self.writer_id.clone(),
        }
    }

    /// Queue the ack of a write for when it is durable, behind the acks of every
    /// earlier write. A write the full queue refused (nothing applied) is answered
    /// at once, like every refusal (docs/protocol.md §7.11).
    async fn ack_when_durable(
        &mut self,
        tickets: Vec<PersistTicket>,
        message_id: String,
        document_id: String,
        failure: &'static str,
    ) {
        // Refused outright only when every ticket was decided at submission: a
        // batch partly queued is answered when the rest is decided, in its place.
        let decided: Option<Vec<Result<(), StorageError>>> =
            tickets.iter().map(PersistTicket::ready).collect();
        if let Some(Err(e @ StorageError::BacklogFull(_))) =
            decided.and_then(|outcomes| outcomes.into_iter().find(Result::is_err))
        {
            self.reply(&ack_reply(Err(e), message_id, &document_id, failure))
                .await;
            return;
        }
        self.acks.push(tickets, move |outcome| {
            ack_reply(outcome, message_id, &document_id, failure)
        });
    }

    async fn on_delta(&mut self, delta: DeltaMessage) {
        let DeltaMessage {
            document_id,
            entries,
            vector_clock,
            client_id,
            message_id,
        } = delta;
        let Some(entries) = entries else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA)
                .await;
            return;
        };
        let Some(id) = self.admit(document_id.as_deref(), true).await else {
            return;
        };
        if entries.keys().any(|f| !valid_field_name(f)) {
            self.refuse_invalid_field(&id).await;
            return;
        }
        let Some(entry) = self.open(&id, err::DELTA_FAILED).await else {
            return;
        };
        self.join(&entry);
        let writer = self.writer_for(client_id.as_deref());
        let fields = entries
            .into_iter()
            .map(|(field, value)| FieldWrite {
                field,
                value,
                writer: writer.clone(),
            })
            .collect();
        let clocks: Vec<&Map<String, Value>> = vector_clock.iter().collect();
        let applied = self.svc.hub.apply(
            &entry,
            Changes {
                fields,
                clocks,
                origin: Some(self.peer.conn_id),
            },
            self.svc.now_ms(),
        );
        if let Some(refusal) = applied.refused {
            self.refuse_clock(refusal, &id).await;
            return;
        }
        let message_id = message_id.unwrap_or_else(|| next_message_id(self.svc.now_ms()));
        self.ack_when_durable(vec![applied.ticket], message_id, id, err::DELTA_FAILED)
            .await;
    }

    async fn on_delta_batch(&mut self, batch: DeltaBatchMessage) {
        let DeltaBatchMessage {
            document_id,
            deltas,
            message_id,
        } = batch;
        let Some(ops) = deltas else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH)
                .await;
            return;
        };
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), true, err::DELTA_BATCH_FAILED)
            .await
        else {
            return;
        };
        let id = entry.id.to_string();
        let now = self.svc.now_ms();
        let mut fields = Vec::new();
        let mut clocks = Vec::new();
        let mut text_ops: Vec<Map<String, Value>> = Vec::new();
        let mut positional_text: Vec<Value> = Vec::new();
        let mut crdt_ops: Vec<Value> = Vec::new();
        // Every op is checked before anything is applied: one bad op (not an object,
        // an invalid field name, a text state for a document it may not write, more
        // text states than allowed) refuses the whole batch.
        for op in &ops {
            let Value::Object(op) = op else {
                self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH)
                    .await;
                return;
            };
            let op_type = op.get("type").and_then(Value::as_str);
            match (op_type, op.get("field")) {
                (Some("text-state"), _) if op.get("state").is_some_and(Value::is_string) => {
                    text_ops.push(op.clone())
                }
                (Some("text"), _) => positional_text.push(Value::Object(op.clone())),
                (_, Some(Value::String(field))) => {
                    if !valid_field_name(field) {
                        self.refuse_invalid_field(&id).await;
                        return;
                    }
                    let raw = op.get("value").cloned().unwrap_or(Value::Null);
                    let value = if op_type == Some("delete") || is_tombstone(&raw) {
                        tombstone()
                    } else {
                        raw
                    };
                    let writer = self.writer_for(op.get("clientId").and_then(Value::as_str));
                    fields.push(FieldWrite {
                        field: field.clone(),
                        value,
                        writer,
                    });
                    if let Some(Value::Object(clock)) = op.get("clock") {
                        clocks.push(clock);
                    }
                }
                _ => crdt_ops.push(Value::Object(op.clone())),
            }
        }
        let max_text_ops = self.svc.settings.limits.max_text_ops_per_batch;
        if text_ops.len() > max_text_ops {
            let refused = Refused::new(
                Refusal::InvalidMessage,
                err::too_many_text_ops(text_ops.len(), max_text_ops),
                err::CODE_INVALID_MESSAGE,
            );
            self.refuse(refused, &document_context(&id), Instant::now())
                .await;
            return;
        }
        // Text states go to their target document (the op's own documentId, which
        // needs write permission too): all admitted and loaded before any applies.
        let mut text_targets = Vec::with_capacity(text_ops.len());
        for op in &text_ops {
            let target = match op.get("documentId").and_then(Value::as_str) {
                Some(t) if t != &*id => match self.admit(Some(t), true).await {
                    Some(t) => t,
                    None => return,
                },
                _ => id.to_string(),
            };
            let Some(target_entry) = self.open(&target, err::DELTA_BATCH_FAILED).await else {
                return;
            };
            text_targets.push(target_entry);
        }
        let mut tickets = Vec::new();
        let applied = self.svc.hub.apply(
            &entry,
            Changes {
                fields,
                clocks,
                origin: Some(self.peer.conn_id),
            },
            now,
        );
        if let Some(refusal) = applied.refused {
            self.refuse_clock(refusal, &id).await;
            return;
        }
        tickets.push(applied.ticket);
        // Text states, each merged into its target and relayed to the others.
        let mut text_refused = false;
        for (mut op, target_entry) in text_ops.into_iter().zip(text_targets) {
            let target = target_entry.id.to_string();
            // Taken out of the op (no copy): it may be tens of megabytes.
            let state = match op.remove("state") {
                Some(Value::String(state)) => state,
                _ => String::new(),
            };
            let clock = op
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(now as f64);
            match self
                .svc
                .hub
                .apply_text(&target_entry, state, clock, now)
                .await
            {
                TextOutcome::Merged { json, ticket } => {
                    tickets.push(ticket);
                    op.insert("state".into(), Value::String(json.to_string()));
                }
                TextOutcome::Backlog(ticket) => {
                    tickets.push(ticket);
                    continue;
                }
                TextOutcome::Refused(e) => {
                    // Nothing applied or relayed; the message is not acked.
                    text_refused = true;
                    let mut context = Map::new();
                    context.insert("documentId".into(), Value::String(target.to_string()));
                    self.refuse(admission::Refused::text(&e), &context, Instant::now())
                        .await;
                    continue;
                }
            }
            if !op.get("clientId").is_some_and(Value::is_string) {
                op.insert(
                    "clientId".into(),
                    Value::String(format!("conn-{}", self.peer.conn_id)),
                );
            }
            self.relay_ops(&target_entry, vec![Value::Object(op)], true);
        }
        if !positional_text.is_empty() {
            self.relay_ops(&entry, positional_text, true);
        }
        if self.svc.settings.relay_crdt_ops && !crdt_ops.is_empty() {
            self.relay_ops(&entry, crdt_ops, false);
        }
        if text_refused {
            return;
        }
        let message_id = message_id.unwrap_or_else(|| next_message_id(now));
        self.ack_when_durable(tickets, message_id, id.to_string(), err::DELTA_BATCH_FAILED)
            .await;
    }

    /// The hub refused a write's clock: nothing was applied, nothing is acked.
    async fn refuse_clock(&self, refusal: admission::ClockRefusal, document_id: &str) {
        let context = document_context(document_id);
        self.refuse(refusal.refused(), &context, Instant::now())
            .await;
    }

    /// Send ops to the document's other subscribers at once and publish them to the
    /// other instances (text ops always; CRDT ops only reach here when relaying them
    /// is enabled).
    fn relay_ops(&self, entry: &DocEntry, ops: Vec<Value>, is_text: bool) {
        let msg = ServerMessage::DeltaBatch {
            document_id: entry.id.to_string(),
            deltas: ops,
            is_text_operation: is_text,
        };
        self.svc
            .hub
            .send_to_subscribers(entry, &msg, false, Some(self.peer.conn_id));
        super::relay::publish_op_relay(&self.svc.hub, &entry.id, &msg);
    }

    async fn on_awareness_subscribe(&mut self, document_id: Option<String>) {
        let Some(id) = self.admit(document_id.as_deref(), false).await else {
            return;
        };
        if self.subscription_cap_reached(&self.awareness_documents, &id) {
            self.refuse_subscription(&id).await;
            return;
        }
        let Some(entry) = self.open(&id, err::AWARENESS_SUBSCRIBE_FAILED).await else {
            return;
        };
        self.svc.hub.subscribe_awareness(&entry, &self.peer);
        self.awareness_documents.insert(entry.id.clone());
        match self.svc.awareness.get_all(&id, self.svc.now_ms()).await {
            Ok(entries) => {
                let states = entries
                    .into_iter()
                    .map(|e| AwarenessStateEntry {
                        client_id: e.client_id,
                        state: e.state,
                        clock: e.clock,
                    })
                    .collect();
                self.reply(&ServerMessage::AwarenessState {
                    document_id: id,
                    states,
                })
                .await;
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_SUBSCRIBE_FAILED).await;
            }
        }
    }

    async fn on_awareness_update(&mut self, update: AwarenessUpdateMessage) {
        let AwarenessUpdateMessage {
            document_id,
            client_id,
            state,
            clock,
        } = update;
        let Some(id) = self.admit(document_id.as_deref(), false).await else {
            return;
        };
        let state = match state {
            Value::Null => None,
            s @ Value::Object(_) => Some(s),
            _ => {
                self.refuse_plain(Refusal::InvalidMessage, err::INVALID_AWARENESS_STATE)
                    .await;
                return;
            }
        };
        let (Some(client_id), Some(clock)) = (
            client_id.filter(|c| c.len() <= MAX_WRITER_ID_LEN),
            // Above 2^53 − 1 no JS client can produce it, and the leave sent on
            // close or expiry is `clock + 1`.
            match clock {
                Some(c) if c > super::clock::MAX_SAFE_INTEGER => None,
                Some(c) => Some(c),
                None => state.is_none().then_some(0),
            },
        ) else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_AWARENESS_STATE)
                .await;
            return;
        };
        if let Some(state) = &state {
            if let Err(refused) = self.check_awareness(&id, &client_id, state).await {
                self.refuse(refused, &document_context(&id), Instant::now())
                    .await;
                return;
            }
        }
        let outcome = self
            .svc
            .awareness
            .set(AwarenessUpdate {
                document_id: id.clone(),
                client_id: client_id.clone(),
                connection_id: self.connection_key(),
                user_id: self
                    .identity
                    .as_ref()
                    .map(|i| i.user_id.clone())
                    .unwrap_or_default(),
                state: state.clone(),
                clock,
                now_ms: self.svc.now_ms(),
            })
            .await;
        match outcome {
            Ok(SetOutcome::Stale) => {}
            Ok(SetOutcome::NotOwner) => {
                let context = document_context(&id);
                let refused = Refused {
                    reason: Refusal::AwarenessNotOwner,
                    error: err::AWARENESS_NOT_OWNER.into(),
                    code: err::CODE_NOT_OWNER,
                };
                self.refuse(refused, &context, Instant::now()).await;
            }
            Ok(outcome @ (SetOutcome::Accepted | SetOutcome::Left)) => {
                let key = (id.clone(), client_id.clone());
                if outcome == SetOutcome::Accepted {
                    self.awareness_clients.insert(key);
                } else {
                    self.awareness_clients.remove(&key);
                }
                let msg = ServerMessage::AwarenessUpdate {
                    document_id: id.clone(),
                    client_id,
                    state: state.unwrap_or(Value::Null),
                    clock,
                };
                super::relay::broadcast_awareness(
                    &self.svc.hub,
                    &id,
                    &msg,
                    Some(self.peer.conn_id),
                    true,
                );
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_UPDATE_FAILED).await;
            }
        }
    }

    /// The awareness bounds of a (non-leave) update: the state's size, and for a
    /// client id this connection does not hold yet, the per-connection and
    /// per-document number of client ids. The per-document count is read from the
    /// store, so with a shared store it holds for the fleet (concurrent first
    /// updates may pass it by a few).
    async fn check_awareness(
        &self,
        id: &str,
        client_id: &str,
        state: &Value,
    ) -> Result<(), Refused> {
        let limits = &self.svc.settings.limits;
        let size = serde_json::to_string(state).map_or(usize::MAX, |s| s.len());
        if size > limits.max_awareness_state_bytes {
            return Err(Refused::new(
                Refusal::AwarenessStateTooLarge,
                err::awareness_state_too_large(size, limits.max_awareness_state_bytes),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        let key = (id.to_owned(), client_id.to_owned());
        if self.awareness_clients.contains(&key) {
            return Ok(());
        }
        if self.awareness_clients.len() >= limits.max_awareness_clients_per_connection {
            return Err(Refused::new(
                Refusal::AwarenessClientLimit,
                err::awareness_connection_full(limits.max_awareness_clients_per_connection),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        // A store failure is answered by the update itself, which fails the same way.
        let entries = self
            .svc
            .awareness
            .get_all(id, self.svc.now_ms())
            .await
            .unwrap_or_default();
        let max = limits.max_awareness_clients_per_document;
        if entries.len() >= max && !entries.iter().any(|e| e.client_id == client_id) {
            return Err(Refused::new(
                Refusal::AwarenessClientLimit,
                err::awareness_document_full(max),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        Ok(())
    }

    /// Connection closed: leave every document, broadcast leaves for the awareness
    /// clients it owned (in the background), and drop its session row.
    pub async fn close(&mut self) {
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

/// The reply for a write: `ack` when durable, else the TS error for its kind.
fn ack_reply(
    outcome: Result<(), StorageError>,
    message_id: String,
    document_id: &str,
    failure: &str,
) -> ServerMessage {
    match outcome {
        Ok(()) => ServerMessage::Ack { message_id },
        Err(StorageError::BacklogFull(n)) => {
            tracing::warn!(document_id = %document_id, backlog = n, "write refused: persistence backlog full");
            ServerMessage::error(
                err::WRITE_BACKLOG_FULL,
                Some(
                    serde_json::json!({"code": err::CODE_BACKLOG_FULL, "documentId": document_id}),
                ),
            )
        }
        Err(e) => {
            tracing::error!(document_id = %document_id, error = %e, "write not persisted");
            ServerMessage::error_for_document(failure, document_id)
        }
    }
}

/// `{documentId}`, the context of a document's refusal.
fn document_context(id: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("documentId".into(), Value::String(id.to_owned()));
    context
}

fn valid_field_name(field: &str) -> bool {
    !field.is_empty() && field.len() <= MAX_FIELD_NAME_LEN && !field.contains('\0')
}

/// Messages larger than this are decoded on the blocking pool.
const LARGE_MESSAGE_BYTES: usize = 256 * 1024;

/// A `delta_batch` whose ops are all text states: the only message allowed past
/// `SYNCKIT_MAX_MESSAGE_BYTES` (up to `SYNCKIT_MAX_TEXT_MESSAGE_BYTES`).
fn only_text_states(raw: &crate::protocol::decode::RawMessage) -> bool {
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
