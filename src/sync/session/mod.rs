//! One connection's state machine: encoding, authentication, subscriptions, rate
//! limit, chunk reassembly, and the handler of every client message (docs/protocol.md §5–§7).
//!
//! It is sans-I/O: nothing here awaits, sends or reads a monotonic clock. Each step —
//! [`Session::handle_frame`], [`Session::resume`], the timers — takes the time it
//! happens at and returns an [`Outcome`]: the replies, the broadcasts, the effects
//! (session rows, awareness leaves) and at most one piece of I/O (a document load, an
//! awareness read or write, a text merge, a large decode) whose answer the
//! connection hands back with `resume`. The handling of a message is a chain of
//! such steps; where it resumes is [`Pending`]. Wall time comes from the service's
//! [`crate::clock`].
//!
//! The intake ([`intake::Intake`]) takes a frame's bytes to the message to dispatch
//! or the reply refusing it; the handlers are split by concern (auth, documents,
//! writes, awareness). Acks wait until the write is durable; they are queued in
//! arrival order ([`AckQueue`]) so one connection can keep many writes in flight and
//! still receive its acks in order — an ack decided at once (nothing to persist)
//! waits behind earlier ones; a write refused outright (a full backlog) is answered
//! at once, like every refusal (docs/protocol.md §7.11).

use crate::hash::FastSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::acks::AckQueue;
use super::peer::Peer;
use super::SyncService;
use crate::auth::Identity;
use crate::metrics::Refusal;
use crate::protocol::errors::{self as err, close};
use crate::protocol::{ClientMessage, ServerMessage};
use crate::storage::SessionRecord;
use intake::{AfterDecode, Intake, Received, Verdict};
pub(crate) use outcome::{Broadcast, Done, Effect, Io, Outcome, Reply};

mod auth;
mod awareness;
mod documents;
mod intake;
mod outcome;
mod refusals;
#[cfg(test)]
mod tests;
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
    /// When the connection opened (the auth timeout counts from here).
    opened_at: Instant,
    /// What the step in progress has decided so far; handed over at its end.
    /// Boxed, and only while a step decides something (a write that is applied and
    /// queues its ack decides nothing to carry out): inline it would be part of
    /// every idle connection (BENCHMARKS.md, memory per idle connection).
    out: Option<Box<Outcome>>,
    /// Where the handling of a message resumes once the I/O it asked for is
    /// answered; `None` between messages. Boxed, like the outcome's I/O: an idle
    /// connection carries neither (BENCHMARKS.md, memory per idle connection).
    pending: Option<Box<Pending>>,
}

/// Where a message's handling resumes, and what it carries meanwhile.
#[derive(Debug)]
enum Pending {
    /// A large frame decoded away from the runtime's workers.
    Decode(AfterDecode),
    /// `subscribe` / `sync_request`, once the document is live.
    Read(documents::PendingRead),
    /// `delta`, once the document is live.
    Delta(writes::PendingDelta),
    /// `delta_batch`, at one of its steps.
    Batch(Box<writes::PendingBatch>),
    /// `awareness_subscribe`, once the document is live.
    AwarenessSubscribe(String),
    /// `awareness_subscribe`, once the document's awareness is read.
    AwarenessState(String),
    /// `awareness_update`, at one of its steps.
    Awareness(awareness::PendingUpdate),
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
            opened_at: now,
            out: None,
            pending: None,
        }
    }

    /// The connection's first step: its session row, when already authenticated
    /// (auth disabled).
    pub fn start(&mut self) -> Outcome {
        self.persist_session();
        self.take_outcome()
    }

    /// Fleet-unique connection id, used for session rows and awareness ownership.
    pub(crate) fn connection_key(&self) -> String {
        format!(
            "{}:conn-{}",
            self.svc.settings.instance_id, self.peer.conn_id
        )
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().map(|d| &**d)
    }

    /// Record the session row if authenticated (at connect and after auth).
    fn persist_session(&mut self) {
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
        self.out().effects.push(Effect::SaveSession(record));
    }

    /// A heartbeat tick at `now`: bump the session's `last_seen` (the writes are
    /// batched across connections) and drop chunk sets past their TTL even when no
    /// chunk arrives.
    pub(crate) fn on_heartbeat(&mut self, now: Instant) -> Outcome {
        if self.session_saved {
            let key = self.connection_key();
            self.out().effects.push(Effect::TouchSession(key));
        }
        self.intake.sweep(now);
        self.take_outcome()
    }

    /// When an unauthenticated connection is to be closed: `None` once it has
    /// authenticated, or when auth is not required.
    pub(crate) fn auth_deadline(&self) -> Option<Instant> {
        (self.svc.settings.auth_required && self.identity.is_none())
            .then(|| self.opened_at + self.svc.settings.auth_timeout)
    }

    /// The auth deadline's timer fired at `now`: the close, counted, when the
    /// connection is still unauthenticated past it.
    pub(crate) fn on_auth_deadline(&self, now: Instant) -> Option<CloseRequest> {
        let deadline = self.auth_deadline()?;
        if now < deadline {
            return None;
        }
        self.svc.metrics.refused(Refusal::NotAuthenticated);
        Some(CloseRequest {
            code: close::POLICY,
            reason: err::AUTHENTICATION_TIMEOUT,
        })
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

    /// Reply to this connection (in its encoding, under a fresh id).
    pub(super) fn reply(&mut self, msg: ServerMessage) {
        self.reply_with_id(msg, None);
    }

    fn reply_with_id(&mut self, msg: ServerMessage, id: Option<String>) {
        self.out().replies.push(Reply { msg, id });
    }

    fn error(&mut self, error: impl Into<String>) {
        self.reply(ServerMessage::error(error, None));
    }

    /// The outcome of the step in progress, to add to.
    fn out(&mut self) -> &mut Outcome {
        self.out.get_or_insert_with(Box::default)
    }

    /// What this step decided, handed over; the next starts empty.
    fn take_outcome(&mut self) -> Outcome {
        self.out.take().map_or_else(Outcome::default, |out| *out)
    }

    /// Handle one WebSocket data frame, received at `now`: the intake's verdict on
    /// it, and the handler's work when it is admitted.
    pub fn handle_frame(&mut self, is_text: bool, bytes: &[u8], now: Instant) -> Outcome {
        if self.pending.is_some() {
            // The connection reads no frame while one is being handled; were it to,
            // the frame would overtake the unfinished one.
            self.internal_error("a frame arrived while the previous message was still being handled", &"the new frame");
            return Outcome::default();
        }
        let Received { encoding, outcome } =
            self.intake
                .receive(is_text, bytes, self.identity.is_some(), now);
        if let Some(encoding) = encoding {
            self.peer.set_encoding(encoding);
        }
        self.follow(outcome, now);
        self.take_outcome()
    }

    /// Go on with the message the I/O of the last step was for, given its answer
    /// at `now`.
    pub(crate) fn resume(&mut self, done: Done, now: Instant) -> Outcome {
        match self.pending.take() {
            Some(pending) => self.continue_with(*pending, done, now),
            None => {
                self.internal_error("an I/O answer arrived with no message waiting for it", &done);
            }
        }
        self.take_outcome()
    }

    /// Do what the intake decided.
    fn follow(&mut self, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::Nothing => {}
            Verdict::Reply(msg) => self.reply(msg),
            Verdict::Dispatch { msg, request_id } => self.dispatch(msg, request_id, now),
            Verdict::DecodeOnBlockingPool { frame, then } => {
                self.wait(Io::Decode(frame), Pending::Decode(then))
            }
        }
    }

    /// The connection broke the step protocol (a bug, not client input): say so
    /// once per occurrence, with what was dropped, and go on serving.
    fn internal_error(&self, what: &str, dropped: &dyn std::fmt::Debug) {
        tracing::error!(
            conn_id = self.peer.conn_id,
            dropped = ?dropped,
            "internal error, please report it: {what}; the message was dropped and the connection goes on"
        );
    }

    /// Ask for `io`, and resume at `then` with its answer.
    fn wait(&mut self, io: Io, then: Pending) {
        self.out().io = Some(Box::new(io));
        self.pending = Some(Box::new(then));
    }

    /// Go on at `then` once document `id` is live: now if it is, else once the
    /// connection has loaded it.
    fn with_document(&mut self, id: String, then: Pending, now: Instant) {
        match self.svc.hub.open_live(&id) {
            Some(entry) => self.continue_with(then, Done::Opened(Ok(entry)), now),
            None => self.wait(Io::Open(id), then),
        }
    }

    /// One resumption: the step `pending` was waiting for, with its answer.
    fn continue_with(&mut self, pending: Pending, done: Done, now: Instant) {
        match (pending, done) {
            (Pending::Decode(then), Done::Decoded(decoded)) => {
                // A decode that panicked is garbage, answered like any other.
                let verdict = self
                    .intake
                    .decoded(then, decoded, self.identity.is_some(), now);
                self.follow(verdict, now);
            }
            (Pending::Read(read), Done::Opened(opened)) => self.read_opened(read, opened),
            (Pending::Delta(delta), Done::Opened(opened)) => {
                self.delta_opened(delta, opened, now)
            }
            (Pending::Batch(batch), done) => self.batch_resumed(batch, done, now),
            (Pending::AwarenessSubscribe(id), Done::Opened(opened)) => {
                self.awareness_document_opened(id, opened)
            }
            (Pending::AwarenessState(id), Done::AwarenessRead(read)) => {
                self.awareness_state_read(id, read)
            }
            (Pending::Awareness(update), done) => self.awareness_resumed(update, done, now),
            (pending, done) => {
                self.internal_error("an I/O answer did not match what the message waits for", &(pending, done));
            }
        }
    }

    fn dispatch(&mut self, msg: ClientMessage, request_id: Option<String>, now: Instant) {
        match msg {
            ClientMessage::Auth { token, api_key } => {
                self.on_auth(token, api_key, request_id, now)
            }
            ClientMessage::Ping => self.reply_with_id(ServerMessage::Pong, request_id),
            ClientMessage::Pong | ClientMessage::Connect | ClientMessage::Ignored => {}
            ClientMessage::Delta(delta) => self.on_delta(delta, now),
            ClientMessage::DeltaBatch(batch) => self.on_delta_batch(batch, now),
            _ if self.identity.is_none() => {
                self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED, now)
            }
            ClientMessage::Subscribe { document_id } => {
                self.on_subscribe(document_id, request_id, now)
            }
            ClientMessage::SyncRequest { document_id, .. } => {
                // The client's clock is not merged: a read never changes the document
                // (any reader could otherwise inflate the clock every broadcast carries).
                self.on_read(document_id, request_id, err::SYNC_REQUEST_FAILED, now)
            }
            ClientMessage::SyncStep1 { document_id } => self.on_sync_step1(document_id, now),
            ClientMessage::Unsubscribe { document_id } => self.on_unsubscribe(document_id),
            ClientMessage::AwarenessSubscribe { document_id } => {
                self.on_awareness_subscribe(document_id, now)
            }
            ClientMessage::AwarenessUpdate(update) => self.on_awareness_update(update, now),
            // Client acks are accepted and ignored (docs/protocol.md §7.11).
            _ => {}
        }
    }

    /// Connection closed: leave every document, have the awareness clients it owned
    /// removed (their leaves broadcast), and its session row dropped.
    pub(crate) fn close(&mut self) -> Outcome {
        let docs: Vec<Arc<str>> = self
            .documents
            .union(&self.awareness_documents)
            .cloned()
            .collect();
        self.svc
            .hub
            .remove_peer(self.peer.conn_id, docs.iter().map(|d| &**d));
        let connection = self.connection_key();
        self.out().effects.push(Effect::RemoveAwareness {
            connection: connection.clone(),
        });
        if self.session_saved {
            self.svc.metrics.connections_authenticated.dec();
            if let Some(identity) = &self.identity {
                self.svc.metrics.user_left(&identity.user_id);
            }
            self.session_saved = false;
            self.out().effects.push(Effect::DeleteSession(connection));
        }
        self.take_outcome()
    }
}
