//! The admission layer: the bounds every client message passes before it touches
//! shared state (documents, clocks, awareness, chunk buffers), and how a refusal is
//! answered, counted and logged. The README's "Limits and refusals" table lists each
//! bound with its setting and what the client receives.
//!
//! Checks here are pure functions over a decoded message; the session calls them in
//! order (rate, size, shape, clocks) and refuses the whole message on the first one
//! that fails, so a refused write is never partly applied or broadcast.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::clock::MAX_SAFE_INTEGER;
use crate::metrics::Refusal;
use crate::protocol::errors as err;
use crate::protocol::ClientMessage;

/// Default nesting limit of an incoming message (the message object is level 1).
pub(crate) const DEFAULT_MAX_JSON_DEPTH: usize = 32;

/// Highest depth an operator may configure. A value is later wrapped in envelopes
/// (the stored row `{"fields":{…}}`, the relay `{"delta":{…}}`, `sync_response`,
/// snapshots, a `delta_batch` relay) that add at most a handful of levels, and
/// serde_json refuses to read anything deeper than 128: staying far below keeps
/// every stored or relayed copy readable.
pub(crate) const MAX_JSON_DEPTH_SETTING: usize = 100;

/// Default cap on the vector-clock entries one message may carry (all its clocks).
pub(crate) const DEFAULT_MAX_CLOCK_ENTRIES_PER_MESSAGE: usize = 1000;

/// Default cap on a document's vector-clock entries (one per distinct writer): it
/// bounds the clock `sync_response` carries and the rows stored for it; past it, new
/// writers share one entry (broadcast deltas carry a compact clock either way).
pub(crate) const DEFAULT_MAX_CLOCK_ENTRIES_PER_DOCUMENT: usize = 1000;

/// Furthest a client clock entry may lead the document's largest counter. An honest
/// client only ever moves its own entry one step per write; a jump to 2^53−1 would
/// freeze `max(clock)`, which SDK 0.3.0 uses to order updates.
pub(crate) const MAX_CLOCK_ADVANCE: u64 = 1 << 32;

/// Default cap on the awareness client ids of one document (presence entries).
pub(crate) const DEFAULT_MAX_AWARENESS_CLIENTS_PER_DOCUMENT: usize = 1000;

/// Default cap on the awareness client ids one connection holds (over all its
/// documents).
pub(crate) const DEFAULT_MAX_AWARENESS_CLIENTS_PER_CONNECTION: usize = 100;

/// Default cap on one awareness state (its JSON): every awareness subscriber of the
/// document receives it, and `awareness_state` carries every client's.
pub(crate) const DEFAULT_MAX_AWARENESS_STATE_BYTES: usize = 8192;

/// Default cap on the documents one connection subscribes to (each is kept loaded
/// while subscribed).
pub(crate) const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1000;

/// Default cap on the text-state ops of one `delta_batch` (each is a merge).
pub(crate) const DEFAULT_MAX_TEXT_OPS_PER_BATCH: usize = 16;

/// Default period of the refusal log: each reason is logged at most once per
/// connection per period, with the number of refusals it stood for.
const DEFAULT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Error replies to rate-limited messages are sent at most this often per
/// connection; the others are dropped silently (a flood must not become a reply
/// flood).
pub(crate) const RATE_LIMIT_REPLY_INTERVAL: Duration = Duration::from_secs(1);

/// The operator's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub(crate) max_json_depth: usize,
    pub max_clock_entries_per_message: usize,
    pub max_clock_entries_per_document: usize,
    pub max_awareness_clients_per_document: usize,
    pub max_awareness_clients_per_connection: usize,
    pub max_awareness_state_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_text_ops_per_batch: usize,
    pub(crate) refusal_log_interval: Duration,
    /// Text-state bounds (`SYNCKIT_MAX_TEXT_BLOCKS`, `SYNCKIT_MAX_TEXT_STATE_BYTES`).
    pub text: crate::text::Limits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_clock_entries_per_message: DEFAULT_MAX_CLOCK_ENTRIES_PER_MESSAGE,
            max_clock_entries_per_document: DEFAULT_MAX_CLOCK_ENTRIES_PER_DOCUMENT,
            max_awareness_clients_per_document: DEFAULT_MAX_AWARENESS_CLIENTS_PER_DOCUMENT,
            max_awareness_clients_per_connection: DEFAULT_MAX_AWARENESS_CLIENTS_PER_CONNECTION,
            max_awareness_state_bytes: DEFAULT_MAX_AWARENESS_STATE_BYTES,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_text_ops_per_batch: DEFAULT_MAX_TEXT_OPS_PER_BATCH,
            refusal_log_interval: DEFAULT_REFUSAL_LOG_INTERVAL,
            text: crate::text::Limits::default(),
        }
    }
}

/// A refused message: why (the metric label) and the `error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub(crate) error: String,
    pub(crate) code: &'static str,
}

impl Refused {
    /// A refused text state: the reply names the problem.
    pub(crate) fn text(e: &crate::text::TextError) -> Refused {
        if e.is_size() {
            Refused::new(
                Refusal::TextTooLarge,
                e.to_string(),
                err::CODE_TEXT_STATE_TOO_LARGE,
            )
        } else {
            Refused::new(
                Refusal::TextInvalid,
                e.to_string(),
                err::CODE_TEXT_STATE_INVALID,
            )
        }
    }

    pub(crate) fn new(reason: Refusal, error: impl Into<String>, code: &'static str) -> Refused {
        Refused {
            reason,
            error: error.into(),
            code,
        }
    }
}

/// Depth and NUL check of a whole message, without recursion: nested deeper than
/// `max_depth` (the message object itself is level 1), or a NUL character in any
/// string value or key, refuses the message. Work is linear in the message size,
/// which the size limit bounds.
pub fn check_shape(body: &Map<String, Value>, max_depth: usize) -> Result<(), Refused> {
    check_members(body.iter().map(|(k, v)| (k.as_str(), v)), max_depth)
}

/// [`check_shape`] over a message's members given one by one (key, value), in the
/// order its object lists them.
pub(crate) fn check_members<'k, 'v>(
    members: impl Iterator<Item = (&'k str, &'v Value)>,
    max_depth: usize,
) -> Result<(), Refused> {
    let too_deep = || {
        Refused::new(
            Refusal::JsonDepth,
            err::nested_too_deeply(max_depth),
            err::CODE_INVALID_MESSAGE,
        )
    };
    let nul = || Refused::new(Refusal::Nul, err::NUL_CHARACTER, err::CODE_INVALID_MESSAGE);
    if max_depth == 0 {
        return Err(too_deep());
    }
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    for (key, value) in members {
        if key.contains('\0') {
            return Err(nul());
        }
        stack.push((value, 2));
    }
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Err(nul()),
            Value::Array(items) if !items.is_empty() => {
                if depth > max_depth {
                    return Err(too_deep());
                }
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) if !map.is_empty() => {
                if depth > max_depth {
                    return Err(too_deep());
                }
                for (key, v) in map {
                    if key.contains('\0') {
                        return Err(nul());
                    }
                    stack.push((v, depth + 1));
                }
            }
            // An empty container is one level, like a scalar inside its parent.
            Value::Array(_) | Value::Object(_) if depth > max_depth => return Err(too_deep()),
            _ => {}
        }
    }
    Ok(())
}

/// The client clocks a write carries: `delta.vectorClock` (or `clock`) and each
/// `delta_batch` op's `clock`. `sync_request.vectorClock` is not among them: a read
/// never changes the document.
fn write_clocks(msg: &ClientMessage) -> Vec<&Map<String, Value>> {
    match msg {
        ClientMessage::Delta(d) => d.vector_clock.iter().collect(),
        ClientMessage::DeltaBatch(b) => b
            .deltas
            .iter()
            .flatten()
            .filter_map(|op| op.get("clock").and_then(Value::as_object))
            .collect(),
        _ => Vec::new(),
    }
}

/// Every clock entry a write carries: at most `max_entries` distinct writers in all
/// (an SDK client sends the document's whole clock with each op of a batch, so the
/// same entries repeated count once), each named by a writer id of 1–255 bytes with
/// a non-negative integer value ≤ 2^53−1.
pub fn check_clocks(msg: &ClientMessage, max_entries: usize) -> Result<(), Refused> {
    let clocks = write_clocks(msg);
    let entries = clocks
        .iter()
        .flat_map(|c| c.keys().map(String::as_str))
        .collect::<std::collections::HashSet<&str>>()
        .len();
    if entries > max_entries {
        return Err(Refused::new(
            Refusal::ClockInvalid,
            err::clock_too_large(entries, max_entries),
            err::CODE_CLOCK_LIMIT,
        ));
    }
    let valid = |(writer, value): (&String, &Value)| {
        !writer.is_empty()
            && writer.len() <= super::session::MAX_WRITER_ID_LEN
            && value.as_u64().is_some_and(|v| v <= MAX_SAFE_INTEGER)
    };
    if clocks.iter().all(|c| c.iter().all(valid)) {
        Ok(())
    } else {
        Err(Refused::new(
            Refusal::ClockInvalid,
            err::INVALID_CLOCK,
            err::CODE_CLOCK_LIMIT,
        ))
    }
}

/// Why the hub refused a write's clock (checked under the document lock, before
/// anything is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockRefusal {
    /// An entry leads the document's largest counter by more than [`MAX_CLOCK_ADVANCE`].
    Advance,
}

impl ClockRefusal {
    pub(crate) fn refused(self) -> Refused {
        match self {
            ClockRefusal::Advance => Refused::new(
                Refusal::ClockInvalid,
                err::INVALID_CLOCK,
                err::CODE_CLOCK_LIMIT,
            ),
        }
    }
}

/// Logs each refusal reason at most once per connection per interval, carrying the
/// count of the refusals it stands for, so a flood costs one line a minute.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    /// Allocated by the first refusal: most connections never have one, and the
    /// per-reason table is a good part of an idle connection's memory otherwise
    /// (BENCHMARKS.md, memory per idle connection).
    seen: Option<Box<Seen>>,
}

/// Per reason: when it was last logged, and how many were not logged since.
#[derive(Debug)]
struct Seen {
    last: [Option<Instant>; Refusal::ALL.len()],
    suppressed: [u64; Refusal::ALL.len()],
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            seen: None,
        }
    }

    /// `Some(n)` when this refusal should be logged now, `n` being how many refusals
    /// of the same reason were not logged since the last line; `None` to stay quiet.
    pub(crate) fn admit(&mut self, reason: Refusal, now: Instant) -> Option<u64> {
        let i = Refusal::ALL.iter().position(|r| *r == reason)?;
        let seen = self.seen.get_or_insert_with(|| {
            Box::new(Seen {
                last: [None; Refusal::ALL.len()],
                suppressed: [0; Refusal::ALL.len()],
            })
        });
        let due = seen.last[i].is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if due {
            seen.last[i] = Some(now);
            Some(std::mem::take(&mut seen.suppressed[i]))
        } else {
            seen.suppressed[i] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("object"),
        }
    }

    /// `{"v": [[…[1]…]]}` with `levels` arrays: the message is `levels + 1` deep.
    fn nested(levels: usize) -> Map<String, Value> {
        let mut v = json!(1);
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        body(json!({ "v": v }))
    }

    #[test]
    fn depth_is_counted_from_the_message_object() {
        assert_eq!(check_shape(&body(json!({"a": 1})), 1), Ok(()));
        assert_eq!(check_shape(&nested(1), 2), Ok(()));
        assert_eq!(check_shape(&nested(31), 32), Ok(()));
        let e = check_shape(&nested(32), 32).expect_err("33 levels");
        assert_eq!(e.reason, Refusal::JsonDepth);
        // Empty containers count as a level too; objects like arrays.
        assert!(check_shape(&body(json!({"a": {"b": {}}})), 2).is_err());
        assert!(check_shape(&body(json!({"a": {"b": []}})), 3).is_ok());
        assert!(check_shape(&body(json!({"a": {"b": {"c": 1}}})), 2).is_err());
    }

    #[test]
    fn deep_input_does_not_recurse() {
        // Far deeper than any stack could recurse through; built without recursion
        // and dropped through serde_json's iterative drop.
        let v = serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(120), "]".repeat(120)))
            .expect("within serde's limit");
        let m = body(json!({ "v": v }));
        assert!(check_shape(&m, 32).is_err());
        assert!(check_shape(&m, 200).is_ok());
    }

    #[test]
    fn nul_is_refused_in_values_and_keys_at_any_depth() {
        for bad in [
            json!({"s": "a\u{0}b"}),
            json!({"k\u{0}": 1}),
            json!({"a": [{"b": ["x", "y\u{0}"]}]}),
            json!({"a": {"deep\u{0}key": null}}),
        ] {
            let e = check_shape(&body(bad.clone()), 32).expect_err("NUL");
            assert_eq!(e.reason, Refusal::Nul, "{bad}");
        }
        assert!(check_shape(&body(json!({"s": "a\u{1}b", "t": "\\u0000 as text"})), 32).is_ok());
    }

    fn delta(clock: Value) -> ClientMessage {
        ClientMessage::Delta(crate::protocol::message::DeltaMessage {
            document_id: Some("d".into()),
            entries: Some(body(json!({"f": 1}))),
            vector_clock: clock.as_object().cloned(),
            client_id: None,
            message_id: None,
        })
    }

    #[test]
    fn clocks_are_bounded_and_typed() {
        assert!(check_clocks(&delta(json!({"a": 1, "b": 9007199254740991u64})), 2).is_ok());
        assert_eq!(
            check_clocks(&delta(json!({"a": 1, "b": 2, "c": 3})), 2)
                .expect_err("3 entries")
                .reason,
            Refusal::ClockInvalid
        );
        for bad in [
            json!({"a": 9007199254740992u64}),
            json!({"a": -1}),
            json!({"a": 1.5}),
            json!({"a": "1"}),
            json!({"": 1}),
            json!({ "w".repeat(256): 1 }),
        ] {
            assert!(check_clocks(&delta(bad.clone()), 10).is_err(), "{bad}");
        }
        // Batch op clocks count their distinct writers: the same entries repeated on
        // every op (what SDK clients send) count once.
        let batch = ClientMessage::DeltaBatch(crate::protocol::message::DeltaBatchMessage {
            document_id: Some("d".into()),
            deltas: Some(vec![
                json!({"field": "a", "value": 1, "clock": {"x": 1, "y": 1}}),
                json!({"field": "b", "value": 1, "clock": {"x": 2, "y": 1}}),
                json!({"field": "c", "value": 1, "clock": {"z": 1}}),
            ]),
            message_id: None,
        });
        assert!(check_clocks(&batch, 3).is_ok());
        assert!(check_clocks(&batch, 2).is_err());
        // A read's clock is never checked (nor merged).
        let read = ClientMessage::SyncRequest {
            document_id: Some("d".into()),
            vector_clock: body(json!({"a": -1})).into(),
        };
        assert!(check_clocks(&read, 0).is_ok());
    }

    #[test]
    fn refusal_log_is_quiet_within_an_interval() {
        let t = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(60));
        assert_eq!(log.admit(Refusal::RateLimited, t), Some(0));
        for _ in 0..5 {
            assert_eq!(
                log.admit(Refusal::RateLimited, t + Duration::from_secs(1)),
                None
            );
        }
        // Reasons are independent.
        assert_eq!(log.admit(Refusal::Nul, t), Some(0));
        assert_eq!(
            log.admit(Refusal::RateLimited, t + Duration::from_secs(60)),
            Some(5)
        );
    }
}
