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
    pub(crate) outcome: Outcome,
}

/// What becomes of a message. A frame is answered by at most one reply.
#[derive(Debug)]
pub(crate) enum Outcome {
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
    ) -> Outcome {
        // Past the ordinary limit, only a delta_batch of text states may pass (up to
        // the text-message limit): SDK clients send a whole text state at once.
        let (payload_len, may_be_text) = payload_size(is_text, bytes);
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
            return Outcome::DecodeOnBlockingPool { frame, then };
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
    ) -> Outcome {
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
    fn undecodable(&mut self, e: DecodeError, now: Instant) -> Outcome {
        self.metrics.invalid_frames.inc();
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        self.note_refusal(Refusal::Undecodable, now, &e);
        Outcome::Reply(match e {
            DecodeError::UnknownType(name) => ServerMessage::error_with_code(
                err::invalid_message_type(&name),
                err::CODE_INVALID_MESSAGE,
            ),
            _ => ServerMessage::error(err::INVALID_MESSAGE_FORMAT, None),
        })
    }

    /// A message over its size limit: refused before anything reads it further.
    fn too_large(&mut self, payload_len: usize, limit: usize, now: Instant) -> Outcome {
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        let refused = Refused::new(
            Refusal::TooLarge,
            err::message_too_large(payload_len, limit),
            err::CODE_INVALID_MESSAGE,
        );
        // The TS reply carries no document id.
        Outcome::Reply(self.refusal(refused, &Map::new(), now))
    }

    /// A decoded message through the rate limit (pings and pongs are free), the
    /// shape check, parsing and the clock check.
    fn admit_message(&mut self, raw: RawMessage, now: Instant) -> Outcome {
        let kind = raw.kind;
        let counted = !matches!(kind, MessageType::Ping | MessageType::Pong);
        if counted && !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        if let Err(refused) = admission::check_shape(&raw.body, self.max_json_depth) {
            return Outcome::Reply(self.refusal(refused, &raw.body, now));
        }
        let request_id = raw.id.clone();
        let document_id = raw.body.get("documentId").cloned();
        let msg = match ClientMessage::parse(raw) {
            Ok(msg) => msg,
            Err(ParseError::NotClientSendable(t)) => {
                self.note_refusal(Refusal::InvalidMessage, now, &t.name());
                return Outcome::Reply(ServerMessage::error_with_code(
                    err::invalid_message_type(t.name()),
                    err::CODE_INVALID_MESSAGE,
                ));
            }
        };
        if let Err(refused) = admission::check_clocks(&msg, self.max_clock_entries_per_message) {
            let mut context = Map::new();
            if let Some(id) = document_id {
                context.insert("documentId".into(), id);
            }
            return Outcome::Reply(self.refusal(refused, &context, now));
        }
        self.metrics.message_in(kind);
        Outcome::Dispatch { msg, request_id }
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
    ) -> Outcome {
        if !self.rate.allow(now) {
            return self.rate_limited(now);
        }
        if !authenticated {
            let refused = Refused::new(
                Refusal::ChunkUnauthenticated,
                err::NOT_AUTHENTICATED,
                err::CODE_AUTH_REQUIRED,
            );
            return Outcome::Reply(self.refusal(refused, &Map::new(), now));
        }
        self.metrics.message_in(MessageType::DeltaBatchChunk);
        let outcome = match ClientMessage::parse(raw) {
            Ok(ClientMessage::DeltaBatchChunk(chunk)) if allow_chunks => {
                self.chunks.accept(chunk, now)
            }
            _ => ChunkOutcome::Invalid,
        };
        match outcome {
            ChunkOutcome::Pending => Outcome::Nothing,
            ChunkOutcome::Invalid => {
                Outcome::Reply(self.plain_refusal(Refusal::ChunkInvalid, err::INVALID_CHUNK, now))
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
    fn rate_limited(&mut self, now: Instant) -> Outcome {
        self.metrics.rate_limited.inc();
        self.note_refusal(Refusal::RateLimited, now, &"rate limit exceeded");
        let due = self.last_rate_reply.is_none_or(|t| {
            now.saturating_duration_since(t) >= admission::RATE_LIMIT_REPLY_INTERVAL
        });
        if !due {
            return Outcome::Nothing;
        }
        self.last_rate_reply = Some(now);
        Outcome::Reply(ServerMessage::error_with_code(
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
