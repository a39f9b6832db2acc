//! The session's intake, sans-I/O: one data frame's bytes to the message it
//! dispatches, or to the reply that refuses it — encoding, size, decoding, rate
//! limit, admission checks, chunk reassembly, counted and logged refusals
//! (docs/protocol.md §11). It never awaits, sends or reads a clock: the caller
//! passes `now` and carries out what [`Received`] says (ARCHITECTURE.md, "The life
//! of a message").

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::metrics::{Metrics, Refusal};
use crate::protocol::errors as err;
use crate::protocol::decode::message_id;
use crate::protocol::delta_members::BinaryDelta;
use crate::protocol::message::ParseError;
use crate::protocol::{
    decode_frame, frame, ClientMessage, DecodeError, Encoding, MessageType, RawMessage,
    ServerMessage,
};
use crate::sync::admission::{self, RefusalLog, Refused};
use crate::sync::chunks::{ChunkAssembler, ChunkOutcome};
use crate::sync::rate_limit::RateLimiter;
use crate::sync::SyncSettings;

/// Messages larger than this are decoded on the blocking pool: a text state takes
/// milliseconds to decode, which the connection's runtime worker owes everyone else.
const LARGE_MESSAGE_BYTES: usize = 256 * 1024;

/// What one frame asks of its session.
#[derive(Debug)]
pub(crate) struct Received {
    /// The reply encoding, fixed by the connection's first data frame (`None` for
    /// every later one): set before anything is sent, replies to this frame too.
    pub(crate) encoding: Option<Encoding>,
    pub(crate) outcome: Verdict,
}

/// What becomes of a message. A frame is answered by at most one reply.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted: hand it to its handler.
    Dispatch {
        msg: ClientMessage,
        request_id: Option<String>,
    },
    /// Refused (or over the rate limit): send this, nothing else.
    Reply(ServerMessage),
    /// Too large to decode here: decode `frame` on the blocking pool and give the
    /// result to [`Intake::decoded`] with `then`.
    DecodeOnBlockingPool {
        frame: OwnedFrame,
        then: AfterDecode,
    },
    /// Nothing to do or send (a pending chunk, a rate-limited message whose reply was
    /// sent less than an interval ago).
    Nothing,
}

/// A frame's bytes, owned so they can go to another thread.
#[derive(Debug)]
pub(crate) struct OwnedFrame {
    is_text: bool,
    bytes: Vec<u8>,
}

impl OwnedFrame {
    pub(crate) fn decode(self) -> Result<RawMessage, DecodeError> {
        decode_frame(self.is_text, &self.bytes)
    }
}

/// Where the intake resumes once a frame decoded elsewhere comes back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AfterDecode {
    payload_len: usize,
    /// False inside a completed chunk set: a chunk may not contain another.
    allow_chunks: bool,
}

/// The per-connection half of the admission layer.
pub(crate) struct Intake {
    metrics: Arc<Metrics>,
    /// Who the refusal log names.
    conn_id: u64,
    ip: String,
    max_message_bytes: usize,
    /// At least `max_message_bytes`: the limit of a `delta_batch` of text states.
    max_text_message_bytes: usize,
    max_json_depth: usize,
    max_clock_entries_per_message: usize,
    encoding_fixed: bool,
    rate: RateLimiter,
    /// When the last rate-limit error reply went out.
    last_rate_reply: Option<Instant>,
    /// Behind a mutex only because the session's handlers taking `&self` log
    /// through it too; one task owns the session, so it is never contended.
    refusal_log: Mutex<RefusalLog>,
    chunks: ChunkAssembler,
}

impl Intake {
    pub(crate) fn new(
        settings: &SyncSettings,
        metrics: Arc<Metrics>,
        conn_id: u64,
        ip: String,
        now: Instant,
    ) -> Intake {
        let max_message_bytes = settings.max_message_bytes;
        Intake {
            metrics,
            conn_id,
            ip,
            max_message_bytes,
            max_text_message_bytes: settings.max_text_message_bytes.max(max_message_bytes),
            max_json_depth: settings.limits.max_json_depth,
            max_clock_entries_per_message: settings.limits.max_clock_entries_per_message,
            encoding_fixed: false,
            rate: RateLimiter::new(settings.max_messages_per_minute, now),
            last_rate_reply: None,
            refusal_log: Mutex::new(RefusalLog::new(settings.limits.refusal_log_interval)),
            chunks: ChunkAssembler::new(max_message_bytes),
        }
    }

    /// The client's address, as the logs name it.
    pub(crate) fn ip(&self) -> &str {
        &self.ip
    }

    /// One WebSocket data frame. `authenticated`: whether the session is (chunks
    /// are refused before).
    pub(crate) fn receive(
        &mut self,
        is_text: bool,
        bytes: &[u8],
        authenticated: bool,
        now: Instant,
    ) -> Received {
        let encoding = (!self.encoding_fixed).then(|| {
            self.encoding_fixed = true;
            Encoding::detect(is_text, bytes)
        });
        self.metrics.bytes_in.add(bytes.len() as u64);
        let outcome = self.message(is_text, bytes, true, authenticated, now);
        Received { encoding, outcome }
    }

    /// Timer work: drop chunk sets past their TTL even when no chunk arrives.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.chunks.sweep(now);
    }

    /// One message (a frame, or a completed chunk set): sized before it is parsed,
    /// so an oversized message costs no JSON parsing, then decoded here or, when
    /// large, on the blocking pool.
    fn message(
        &mut self,
        is_text: bool,
        bytes: &[u8],
        allow_chunks: bool,
        authenticated: bool,
        now: Instant,
    ) -> Verdict {
        // Past the ordinary limit, only a delta_batch of text states may pass (up to
        // the text-message limit): SDK clients send a whole text state at once.
        let FrameSize {
            payload_len,
            may_be_text,
            delta_payload,
        } = frame_size(is_text, bytes);
        let over = payload_len > self.max_message_bytes;
        if over && (payload_len > self.max_text_message_bytes || !may_be_text) {
            let limit = if may_be_text {
                self.max_text_message_bytes
            } else {
                self.max_message_bytes
            };
            return self.too_large(payload_len, limit, now);
        }
        let then = AfterDecode {
            payload_len,
            allow_chunks,
        };
        if payload_len > LARGE_MESSAGE_BYTES {
            let frame = OwnedFrame {
                is_text,
                bytes: bytes.to_vec(),
            };
            return Verdict::DecodeOnBlockingPool { frame, then };
        }
        if let Some(read) = delta_payload.and_then(BinaryDelta::read) {
            return self.admit_binary_delta(read, now);
        }
        self.decoded(then, decode_frame(is_text, bytes), authenticated, now)
    }

    /// The steps after decoding: a decoded message let past the rate limit and the
    /// admission checks, parsed, reassembled when it is a chunk.
    pub(crate) fn decoded(
        &mut self,
        then: AfterDecode,
        decoded: Result<RawMessage, DecodeError>,
        authenticated: bool,
        now: Instant,
    ) -> Verdict {
        let raw = match decoded {
            Ok(raw) => raw,
            Err(e) => return self.undecodable(e, now),
        };
        if then.payload_len > self.max_message_bytes && !only_text_states(&raw) {
            return self.too_large(then.payload_len, self.max_message_bytes, now);
        }
        if raw.kind == MessageType::DeltaBatchChunk {
            return self.on_chunk(raw, then.allow_chunks, authenticated, now);
        }
        self.admit_message(raw, now)
    }

    /// Garbage costs the sender its rate like any message, so a flood of it is
    /// answered at the rate limit's pace, not frame for frame.
    fn undecodable(&mut self, e: DecodeError, now: Instant) -> Verdict {
        self.metrics.invalid_frames.inc();
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        self.note_refusal(Refusal::Undecodable, now, &e);
        Verdict::Reply(match e {
            DecodeError::UnknownType(name) => ServerMessage::error_with_code(
                err::invalid_message_type(&name),
                err::CODE_INVALID_MESSAGE,
            ),
            _ => ServerMessage::error(err::INVALID_MESSAGE_FORMAT, None),
        })
    }

    /// A message over its size limit: refused before anything reads it further.
    fn too_large(&mut self, payload_len: usize, limit: usize, now: Instant) -> Verdict {
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        let refused = Refused::new(
            Refusal::TooLarge,
            err::message_too_large(payload_len, limit),
            err::CODE_INVALID_MESSAGE,
        );
        // The TS reply carries no document id.
        Verdict::Reply(self.refusal(refused, &Map::new(), now))
    }

    /// A decoded message through the rate limit (pings and pongs are free), the
    /// shape check, parsing and the clock check.
    fn admit_message(&mut self, raw: RawMessage, now: Instant) -> Verdict {
        let kind = raw.kind;
        let counted = !matches!(kind, MessageType::Ping | MessageType::Pong);
        if counted && !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        let document_id = raw.body.get("documentId").cloned();
        if let Err(refused) = admission::check_shape(&raw.body, self.max_json_depth) {
            return Verdict::Reply(self.refusal(refused, &document_context(document_id), now));
        }
        let request_id = raw.id.clone();
        let msg = match ClientMessage::parse(raw) {
            Ok(msg) => msg,
            Err(ParseError::NotClientSendable(t)) => {
                self.note_refusal(Refusal::InvalidMessage, now, &t.name());
                return Verdict::Reply(ServerMessage::error_with_code(
                    err::invalid_message_type(t.name()),
                    err::CODE_INVALID_MESSAGE,
                ));
            }
        };
        self.admit_parsed(kind, msg, request_id, document_id, now)
    }

    /// A binary `delta` read straight into its members: the steps of
    /// [`Intake::admit_message`], in its order, without a JSON object in between.
    fn admit_binary_delta(&mut self, read: BinaryDelta, now: Instant) -> Verdict {
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        let BinaryDelta {
            members,
            op_type,
            id,
        } = read;
        let document_id = members.raw_document_id().cloned();
        if let Err(refused) = admission::check_members(members.present(), self.max_json_depth) {
            return Verdict::Reply(self.refusal(refused, &document_context(document_id), now));
        }
        let op_type = match op_type {
            Some(Value::String(op)) => Some(op),
            _ => None,
        };
        let request_id = id.and_then(message_id);
        let msg = ClientMessage::Delta(members.into_message(op_type.as_deref(), request_id.clone()));
        self.admit_parsed(MessageType::Delta, msg, request_id, document_id, now)
    }

    /// The last step of admission, the clock check, for a message of either path.
    fn admit_parsed(
        &mut self,
        kind: MessageType,
        msg: ClientMessage,
        request_id: Option<String>,
        document_id: Option<Value>,
        now: Instant,
    ) -> Verdict {
        if let Err(refused) = admission::check_clocks(&msg, self.max_clock_entries_per_message) {
            return Verdict::Reply(self.refusal(refused, &document_context(document_id), now));
        }
        self.metrics.message_in(kind);
        Verdict::Dispatch { msg, request_id }
    }

    /// A `delta_batch_chunk`: only after auth, counted by the rate limit, held within
    /// the connection's chunk budget; a completed set is taken as one message (it
    /// passes every check of its own, and may not contain another chunk, so this
    /// goes one level deep at most).
    fn on_chunk(
        &mut self,
        raw: RawMessage,
        allow_chunks: bool,
        authenticated: bool,
        now: Instant,
    ) -> Verdict {
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        if !authenticated {
            let refused = Refused::new(
                Refusal::ChunkUnauthenticated,
                err::NOT_AUTHENTICATED,
                err::CODE_AUTH_REQUIRED,
            );
            return Verdict::Reply(self.refusal(refused, &Map::new(), now));
        }
        self.metrics.message_in(MessageType::DeltaBatchChunk);
        let outcome = match ClientMessage::parse(raw) {
            Ok(ClientMessage::DeltaBatchChunk(chunk)) if allow_chunks => {
                self.chunks.accept(chunk, now)
            }
            _ => ChunkOutcome::Invalid,
        };
        match outcome {
            ChunkOutcome::Pending => Verdict::Nothing,
            ChunkOutcome::Invalid => {
                Verdict::Reply(self.plain_refusal(Refusal::ChunkInvalid, err::INVALID_CHUNK, now))
            }
            ChunkOutcome::Complete(whole) => {
                let is_text = whole.first() == Some(&b'{');
                self.message(is_text, &whole, false, authenticated, now)
            }
        }
    }

    /// Over the rate limit: the message is dropped; the error reply goes out at most
    /// once per [`admission::RATE_LIMIT_REPLY_INTERVAL`] so a flood is not answered
    /// message for message.
    fn rate_limited(&mut self, now: Instant) -> Verdict {
        self.metrics.rate_limited.inc();
        self.note_refusal(Refusal::RateLimited, now, &"rate limit exceeded");
        let due = self.last_rate_reply.is_none_or(|t| {
            now.saturating_duration_since(t) >= admission::RATE_LIMIT_REPLY_INTERVAL
        });
        if !due {
            return Verdict::Nothing;
        }
        self.last_rate_reply = Some(now);
        Verdict::Reply(ServerMessage::error_with_code(
            err::RATE_LIMITED,
            err::CODE_RATE_LIMIT,
        ))
    }

    /// Count a refusal and log it, at most once per reason per log interval.
    pub(crate) fn note_refusal(
        &self,
        reason: Refusal,
        now: Instant,
        detail: &dyn std::fmt::Display,
    ) {
        self.metrics.refused(reason);
        let due = self
            .refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(reason, now);
        if let Some(suppressed) = due {
            tracing::warn!(
                conn_id = self.conn_id,
                ip = %self.ip,
                reason = reason.label(),
                suppressed,
                detail = %detail,
                "[SECURITY] client input refused"
            );
        }
    }

    /// Note a refusal and give its reply: the named error with `details: {code,
    /// documentId?}` (the document id when `context` has one as a string).
    pub(crate) fn refusal(
        &self,
        refused: Refused,
        context: &Map<String, Value>,
        now: Instant,
    ) -> ServerMessage {
        self.note_refusal(refused.reason, now, &refused.error);
        let mut details = Map::new();
        details.insert("code".into(), Value::String(refused.code.into()));
        if let Some(id @ Value::String(_)) = context.get("documentId") {
            details.insert("documentId".into(), id.clone());
        }
        ServerMessage::error(refused.error, Some(Value::Object(details)))
    }

    /// Note a refusal and give its reply with the bare TS error (no `details`), for
    /// errors TS sends that way.
    pub(crate) fn plain_refusal(
        &self,
        reason: Refusal,
        error: impl Into<String> + std::fmt::Display,
        now: Instant,
    ) -> ServerMessage {
        self.note_refusal(reason, now, &error);
        ServerMessage::error(error, None)
    }
}

/// What a frame's header says, read without decoding it (one split for all of it).
struct FrameSize<'a> {
    /// The payload length. A binary frame that does not split has length 0:
    /// decoding refuses it.
    payload_len: usize,
    /// Whether it may be a `delta_batch` of text states (the one message allowed
    /// past the ordinary size limit).
    may_be_text: bool,
    /// The payload of a binary `delta`, which the intake reads straight into its
    /// members ([`BinaryDelta`]); `None` for every other frame.
    delta_payload: Option<&'a [u8]>,
}

#[inline]
fn frame_size(is_text: bool, bytes: &[u8]) -> FrameSize<'_> {
    match Encoding::detect(is_text, bytes) {
        Encoding::Json => FrameSize {
            payload_len: bytes.len(),
            may_be_text: true,
            delta_payload: None,
        },
        Encoding::Binary => match frame::split(bytes) {
            Ok(f) => {
                let kind = MessageType::from_code(f.code);
                FrameSize {
                    payload_len: f.payload.len(),
                    may_be_text: kind == Some(MessageType::DeltaBatch),
                    delta_payload: (kind == Some(MessageType::Delta)).then_some(f.payload),
                }
            }
            Err(_) => FrameSize {
                payload_len: 0,
                may_be_text: false,
                delta_payload: None,
            },
        },
    }
}

/// A refusal's context: the message's `documentId` member, when it had one (the
/// reply names it only when it is a string).
fn document_context(document_id: Option<Value>) -> Map<String, Value> {
    let mut context = Map::new();
    if let Some(id) = document_id {
        context.insert("documentId".into(), id);
    }
    context
}

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

#[cfg(test)]
mod tests {
    //! The intake on its own: no socket, no runtime, no server; time is an
    //! `Instant` the test moves.

    use std::time::Duration;

    use base64::Engine;
    use serde_json::json;

    use super::*;

    /// The intake's settings, with the given rate and size limits.
    fn settings(per_minute: u32, max_bytes: usize, max_text_bytes: usize) -> SyncSettings {
        SyncSettings {
            auth_required: true,
            max_message_bytes: max_bytes,
            max_text_message_bytes: max_text_bytes,
            max_messages_per_minute: per_minute,
            playground_access_filter: false,
            relay_crdt_ops: false,
            instance_id: "test".into(),
            awareness_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            limits: admission::Limits::default(),
        }
    }

    struct Harness {
        intake: Intake,
        metrics: Arc<Metrics>,
        t0: Instant,
    }

    impl Harness {
        fn new(settings: SyncSettings) -> Harness {
            let metrics = Arc::new(Metrics::default());
            let t0 = Instant::now();
            let intake = Intake::new(&settings, metrics.clone(), 1, "127.0.0.1".into(), t0);
            Harness {
                intake,
                metrics,
                t0,
            }
        }

        /// A JSON text frame, authenticated, at `t0 + after`.
        fn json(&mut self, msg: serde_json::Value, after: Duration) -> Verdict {
            self.text(&msg.to_string(), true, after)
        }

        fn text(&mut self, text: &str, authenticated: bool, after: Duration) -> Verdict {
            let now = self.t0 + after;
            self.intake
                .receive(true, text.as_bytes(), authenticated, now)
                .outcome
        }

        fn binary(&mut self, kind: MessageType, payload: &serde_json::Value) -> Verdict {
            let code = kind.code().expect("a binary type");
            let bytes = frame::join(code, 1, payload.to_string().as_bytes());
            self.intake.receive(false, &bytes, true, self.t0).outcome
        }

        fn refusals(&self, reason: Refusal) -> u64 {
            self.metrics.refusals(reason)
        }
    }

    const NOW: Duration = Duration::ZERO;

    fn subscribe(doc: &str) -> serde_json::Value {
        json!({"type": "subscribe", "documentId": doc})
    }

    /// The `error` reply an outcome is: its message and details.
    fn error(outcome: Verdict) -> (String, Option<serde_json::Value>) {
        match outcome {
            Verdict::Reply(ServerMessage::Error { error, details }) => (error, details),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    fn dispatched(outcome: Verdict) -> ClientMessage {
        match outcome {
            Verdict::Dispatch { msg, .. } => msg,
            other => panic!("not dispatched: {other:?}"),
        }
    }

    fn is_rate_limited(outcome: Verdict) -> bool {
        let (message, details) = error(outcome);
        message == err::RATE_LIMITED && details == Some(json!({"code": err::CODE_RATE_LIMIT}))
    }

    /// A text-state op padded to `bytes` of state.
    fn text_state(bytes: usize) -> serde_json::Value {
        json!({"type": "text-state", "field": "t", "state": "x".repeat(bytes)})
    }

    fn batch(ops: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"type": "delta_batch", "documentId": "doc", "deltas": ops})
    }

    /// `msg` as a set of `parts` chunks with id `id`.
    fn chunks(msg: &serde_json::Value, id: &str, parts: usize) -> Vec<serde_json::Value> {
        let bytes = msg.to_string().into_bytes();
        let size = bytes.len().div_ceil(parts);
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, part)| {
                json!({
                    "type": "delta_batch_chunk",
                    "chunkId": id,
                    "totalChunks": parts,
                    "chunkIndex": i,
                    "data": base64::engine::general_purpose::STANDARD.encode(part),
                })
            })
            .collect()
    }

    #[test]
    fn the_rate_limit_refuses_past_its_budget_answers_once_a_second_and_refills() {
        let mut h = Harness::new(settings(3, 1000, 1000));
        for doc in ["a", "b", "c"] {
            let msg = dispatched(h.json(subscribe(doc), NOW));
            assert_eq!(
                msg,
                ClientMessage::Subscribe {
                    document_id: Some(doc.into())
                }
            );
        }
        // Past the budget: refused, answered once; the rest of the flood within the
        // reply interval is dropped without a word.
        assert!(is_rate_limited(h.json(subscribe("d"), NOW)));
        let later = admission::RATE_LIMIT_REPLY_INTERVAL - Duration::from_millis(1);
        assert!(matches!(h.json(subscribe("d"), later), Verdict::Nothing));
        assert!(matches!(h.json(subscribe("d"), later), Verdict::Nothing));
        assert!(is_rate_limited(
            h.json(subscribe("d"), admission::RATE_LIMIT_REPLY_INTERVAL)
        ));
        assert_eq!(h.refusals(Refusal::RateLimited), 4);
        assert_eq!(h.metrics.rate_limited.get(), 4);
        // Two minutes on, the sliding window has forgotten them.
        dispatched(h.json(subscribe("d"), Duration::from_secs(121)));
    }

    #[test]
    fn pings_and_pongs_are_not_counted_by_the_rate_limit() {
        let mut h = Harness::new(settings(2, 1000, 1000));
        for _ in 0..10 {
            assert_eq!(
                dispatched(h.json(json!({"type": "ping"}), NOW)),
                ClientMessage::Ping
            );
            assert_eq!(
                dispatched(h.json(json!({"type": "pong"}), NOW)),
                ClientMessage::Pong
            );
        }
        dispatched(h.json(subscribe("a"), NOW));
        dispatched(h.json(subscribe("b"), NOW));
        assert!(is_rate_limited(h.json(subscribe("c"), NOW)));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_with_its_size() {
        let mut h = Harness::new(settings(0, 100, 1000));
        let msg = json!({"type": "subscribe", "documentId": "d".repeat(100)});
        let len = msg.to_string().len();
        let (message, details) = error(h.json(msg, NOW));
        assert_eq!(message, err::message_too_large(len, 100));
        assert_eq!(details, Some(json!({"code": err::CODE_INVALID_MESSAGE})));
        assert_eq!(h.refusals(Refusal::TooLarge), 1);
        // The same message, smaller, passes.
        let fits = json!({"type": "subscribe", "documentId": "d"});
        dispatched(h.json(fits, NOW));
    }

    #[test]
    fn only_a_batch_of_text_states_may_pass_the_ordinary_limit() {
        let mut h = Harness::new(settings(0, 100, 1000));
        // Within the text-message limit.
        let texts = batch(vec![text_state(300), text_state(300)]);
        assert!(matches!(
            dispatched(h.json(texts, NOW)),
            ClientMessage::DeltaBatch(_)
        ));
        // One op that is not a text state: the ordinary limit, found after decoding.
        let mixed = batch(vec![
            text_state(300),
            json!({"type": "set", "field": "f", "value": 1}),
        ]);
        let len = mixed.to_string().len();
        let (message, _) = error(h.json(mixed, NOW));
        assert_eq!(message, err::message_too_large(len, 100));
        // Past the text-message limit, refused unread.
        let huge = batch(vec![text_state(1000)]);
        let len = huge.to_string().len();
        let (message, _) = error(h.json(huge, NOW));
        assert_eq!(message, err::message_too_large(len, 1000));
        assert_eq!(h.refusals(Refusal::TooLarge), 2);
    }

    #[test]
    fn a_binary_frame_is_sized_by_its_payload_and_only_a_batch_gets_the_text_limit() {
        let mut h = Harness::new(settings(0, 100, 1000));
        // Past the text-message limit too: the limit named is the ordinary one.
        let body = json!({"documentId": "d".repeat(1200)});
        let len = body.to_string().len();
        let (message, _) = error(h.binary(MessageType::Subscribe, &body));
        assert_eq!(message, err::message_too_large(len, 100), "not a batch");
        let body = json!({"documentId": "doc", "deltas": [text_state(300)]});
        assert!(matches!(
            dispatched(h.binary(MessageType::DeltaBatch, &body)),
            ClientMessage::DeltaBatch(_)
        ));
    }

    #[test]
    fn an_undecodable_frame_is_answered_and_costs_its_rate() {
        let mut h = Harness::new(settings(2, 1000, 1000));
        let (message, details) = error(h.text("not json", true, NOW));
        assert_eq!(
            (message.as_str(), details),
            (err::INVALID_MESSAGE_FORMAT, None)
        );
        let (message, details) = error(h.json(json!({"type": "bogus"}), NOW));
        assert_eq!(message, err::invalid_message_type("bogus"));
        assert_eq!(details, Some(json!({"code": err::CODE_INVALID_MESSAGE})));
        assert_eq!(h.refusals(Refusal::Undecodable), 2);
        assert_eq!(h.metrics.invalid_frames.get(), 2);
        assert!(is_rate_limited(h.json(subscribe("a"), NOW)));
    }

    #[test]
    fn a_chunk_before_authentication_is_refused() {
        let mut h = Harness::new(settings(0, 1000, 1000));
        let chunk = &chunks(&subscribe("a"), "set", 1)[0];
        let (message, details) = error(h.text(&chunk.to_string(), false, NOW));
        assert_eq!(message, err::NOT_AUTHENTICATED);
        assert_eq!(details, Some(json!({"code": err::CODE_AUTH_REQUIRED})));
        assert_eq!(h.refusals(Refusal::ChunkUnauthenticated), 1);
    }

    #[test]
    fn a_completed_chunk_set_is_taken_as_one_message_and_may_not_hold_a_chunk() {
        let mut h = Harness::new(settings(0, 1000, 1000));
        let mut parts = chunks(&subscribe("whole"), "set", 3).into_iter();
        assert!(matches!(
            h.json(parts.next().unwrap(), NOW),
            Verdict::Nothing
        ));
        assert!(matches!(
            h.json(parts.next().unwrap(), NOW),
            Verdict::Nothing
        ));
        assert_eq!(
            dispatched(h.json(parts.next().unwrap(), NOW)),
            ClientMessage::Subscribe {
                document_id: Some("whole".into())
            }
        );
        // A set whose message is itself a chunk: refused, not reassembled again.
        let inner = chunks(&subscribe("inner"), "inner", 1).remove(0);
        let outer = chunks(&inner, "outer", 1).remove(0);
        let (message, details) = error(h.json(outer, NOW));
        assert_eq!((message.as_str(), details), (err::INVALID_CHUNK, None));
        assert_eq!(h.refusals(Refusal::ChunkInvalid), 1);
    }

    #[test]
    fn the_sweep_drops_a_chunk_set_past_its_ttl() {
        let mut h = Harness::new(settings(0, 1000, 1000));
        let parts = chunks(&subscribe("late"), "set", 2);
        assert!(matches!(h.json(parts[0].clone(), NOW), Verdict::Nothing));
        let held = h.intake.chunks.buffered();
        assert!(held > 0);
        h.intake.sweep(h.t0 + Duration::from_secs(29));
        assert_eq!(h.intake.chunks.buffered(), held, "within its TTL");
        h.intake.sweep(h.t0 + Duration::from_secs(30));
        assert_eq!(h.intake.chunks.buffered(), 0, "dropped at its TTL");
        // The rest of the set arrives to nothing: it starts a set of its own.
        assert!(matches!(
            h.json(parts[1].clone(), Duration::from_secs(30)),
            Verdict::Nothing
        ));
    }

    #[test]
    fn a_large_message_is_decoded_elsewhere_and_resumed() {
        let big = LARGE_MESSAGE_BYTES + 1;
        let mut h = Harness::new(settings(0, 2 * big, 2 * big));
        let received = h.intake.receive(
            true,
            batch(vec![text_state(big)]).to_string().as_bytes(),
            true,
            h.t0,
        );
        let Verdict::DecodeOnBlockingPool { frame, then } = received.outcome else {
            panic!("decoded in place: {:?}", received.outcome);
        };
        let outcome = h.intake.decoded(then, frame.decode(), true, h.t0);
        assert!(matches!(dispatched(outcome), ClientMessage::DeltaBatch(_)));
    }

    #[test]
    fn the_first_data_frame_fixes_the_encoding() {
        let mut h = Harness::new(settings(0, 1000, 1000));
        let bytes = frame::join(0x30, 1, b"{}");
        let first = h.intake.receive(false, &bytes, true, h.t0);
        assert_eq!(first.encoding, Some(Encoding::Binary));
        let later = h.intake.receive(true, b"{\"type\":\"ping\"}", true, h.t0);
        assert_eq!(later.encoding, None);
    }

    #[test]
    fn a_shape_refusal_names_the_document() {
        let mut h = Harness::new(settings(0, 1000, 1000));
        let msg = json!({"type": "subscribe", "documentId": "doc", "x": "a\u{0}b"});
        let (_, details) = error(h.json(msg, NOW));
        assert_eq!(
            details,
            Some(json!({"code": err::CODE_INVALID_MESSAGE, "documentId": "doc"}))
        );
        assert_eq!(h.refusals(Refusal::Nul), 1);
    }

    /// What a frame comes to, with the counters it moved: a verdict plus the
    /// refusal and message counts, so two paths can be compared whole.
    fn verdict_and_counts(h: &Harness, verdict: Verdict) -> String {
        let refusals: Vec<u64> = [
            Refusal::JsonDepth,
            Refusal::Nul,
            Refusal::ClockInvalid,
            Refusal::ClockFull,
            Refusal::RateLimited,
            Refusal::Undecodable,
            Refusal::InvalidMessage,
        ]
        .into_iter()
        .map(|r| h.refusals(r))
        .collect();
        let deltas = h.metrics.messages_in[MessageType::Delta.index()].get();
        format!("{verdict:?} refusals {refusals:?} deltas in {deltas}")
    }

    /// A binary `delta` frame through the intake (which reads it into its members
    /// when it can) and through the ordinary path (a JSON object first), each on a
    /// fresh intake with small limits.
    fn both_paths(payload: &[u8]) -> (String, String) {
        let mut settings = settings(0, 64 * 1024, 64 * 1024);
        settings.limits.max_json_depth = 4;
        settings.limits.max_clock_entries_per_message = 2;
        let bytes = frame::join(0x20, 1, payload);
        let mut fast = Harness::new(settings.clone());
        let verdict = fast.intake.receive(false, &bytes, true, fast.t0).outcome;
        let fast = verdict_and_counts(&fast, verdict);
        let mut slow = Harness::new(settings);
        let then = AfterDecode {
            payload_len: payload.len(),
            allow_chunks: true,
        };
        let verdict = slow
            .intake
            .decoded(then, decode_frame(false, &bytes), true, slow.t0);
        let slow = verdict_and_counts(&slow, verdict);
        (fast, slow)
    }

    #[test]
    fn an_sdk_delta_takes_the_member_reader_and_is_admitted_as_before() {
        let payload = br#"{"type":"delete","documentId":"d","field":"f","value":1,"clock":{"w":2},"clientId":"w","timestamp":5,"messageId":"m"}"#;
        let bytes = frame::join(0x20, 1, payload);
        assert!(frame_size(false, &bytes).delta_payload.is_some_and(|p| BinaryDelta::read(p).is_some()));
        let (fast, slow) = both_paths(payload);
        assert_eq!(fast, slow);
        assert!(fast.contains("Dispatch") && fast.contains("__deleted"), "{fast}");
    }

    #[test]
    fn the_member_reader_refuses_as_the_ordinary_path_does() {
        for payload in [
            &br#"{"documentId":"d","field":"a\u0000b","value":1}"#[..],
            br#"{"documentId":"d","delta":{"f":[[[[1]]]]}}"#,
            br#"{"documentId":"d","delta":{"f":1},"vectorClock":{"a":1,"b":2,"c":3}}"#,
            br#"{"documentId":"d","delta":{"f":1},"clock":{"a":-1}}"#,
            br#"{"documentId":7,"docId":"e","delta":{"f":1},"clock":{"a":-1}}"#,
        ] {
            assert!(BinaryDelta::read(payload).is_some());
            let (fast, slow) = both_paths(payload);
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(payload));
            assert!(fast.contains("Reply"), "{fast}");
        }
    }

    mod paths_agree {
        //! Random binary `delta` payloads — repeated, escaped and unknown keys,
        //! wrong types, NULs, deep values, out-of-range numbers, broken JSON — are
        //! answered alike by the member reader and the ordinary path.

        use proptest::prelude::*;

        use super::both_paths;

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop::sample::select(vec![
                "null", "true", "1", "-5", "1.5", "1e400", "9007199254740993", "\"s\"",
                "\"set\"", "\"delete\"", "\"a\\u0000b\"", "\"\\ud800\"",
                "{\"__deleted\":true}", "{}", "[]",
            ])
            .prop_map(str::to_owned);
            leaf.prop_recursive(6, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((key(), inner), 0..4).prop_map(|members| {
                        let members: Vec<String> =
                            members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "type", "id", "timestamp", "documentId", "docId", "delta", "changes",
                "field", "value", "vectorClock", "clock", "clientId", "messageId", "w",
                "document\\u0049d", "a\\u0000b", "other",
            ])
            .prop_map(|k| format!("\"{k}\""))
        }

        fn payload() -> impl Strategy<Value = String> {
            (
                prop::collection::vec((key(), value()), 0..8),
                prop::sample::select(vec!["", "", "", " ", "x", "}"]),
            )
                .prop_map(|(members, tail)| {
                    let members: Vec<String> =
                        members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}{tail}", members.join(","))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn on_any_payload(payload in payload()) {
                let (fast, slow) = both_paths(payload.as_bytes());
                prop_assert_eq!(fast, slow, "{}", payload);
            }
        }
    }
}
