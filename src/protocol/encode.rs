//! Outbound encoding. The body is serialized once; the envelope differs per encoding:
//! binary payloads carry `id` but not `type`/`timestamp` (those are in the header, TS
//! form, docs/protocol.md §2.1), JSON text is the flat object with all three (§2.2).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::Value;

use super::frame;
use super::{Encoding, MessageType, ServerMessage};

/// One encoded outbound WebSocket data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedFrame {
    Binary(Bytes),
    Text(String),
}

impl EncodedFrame {
    pub(crate) fn len(&self) -> usize {
        match self {
            EncodedFrame::Binary(b) => b.len(),
            EncodedFrame::Text(t) => t.len(),
        }
    }
}

static MESSAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh message id, `<epoch ms>-<9 base36 chars>` like TS's.
pub(crate) fn next_message_id(now_ms: i64) -> String {
    let mut n = MESSAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [b'0'; 9];
    for slot in digits.iter_mut().rev() {
        let d = (n % 36) as u8;
        *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n /= 36;
    }
    let suffix = std::str::from_utf8(&digits).unwrap_or("000000000");
    // Two per delta (its broadcast and its ack): written directly, which costs a
    // fraction of `format!`'s machinery (BENCHMARKS.md "Per-delta work").
    let mut id = String::with_capacity(30);
    id.push_str(itoa::Buffer::new().format(now_ms));
    id.push('-');
    id.push_str(suffix);
    id
}

/// Encode a message for one encoding.
pub fn encode(msg: &ServerMessage, id: &str, timestamp: i64, encoding: Encoding) -> EncodedFrame {
    let body = match msg {
        // Every write is acked: its body is written directly (the same bytes as
        // through a JSON tree, without building one).
        ServerMessage::Ack { message_id } => {
            let mut body = String::with_capacity(message_id.len() + 16);
            body.push_str("{\"messageId\":");
            push_json_string(&mut body, message_id);
            body.push('}');
            body
        }
        _ => serde_json::to_string(&msg.body()).unwrap_or_else(|_| "{}".to_owned()),
    };
    encode_body(msg.kind(), id, timestamp, &body, encoding)
}

/// Encode a pre-serialized body (a JSON object string) for one encoding.
pub(crate) fn encode_body(
    kind: MessageType,
    id: &str,
    timestamp: i64,
    body: &str,
    encoding: Encoding,
) -> EncodedFrame {
    let rest = body.strip_prefix('{').unwrap_or("}");
    let sep = if rest.starts_with('}') { "" } else { "," };
    match encoding {
        Encoding::Binary => {
            // Every server-sent type has a binary code; `error` is the safe fallback.
            let code = kind.code().unwrap_or(0xFF);
            // Header and payload written into one buffer (fan-out encodes every
            // broadcast frame here): `{"id":<id>,<rest of the body>`.
            let mut out = Vec::with_capacity(frame::HEADER_LEN + id.len() + body.len() + 8);
            out.push(code);
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(b"{\"id\":");
            if serde_json::to_writer(&mut out, id).is_err() {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(sep.as_bytes());
            out.extend_from_slice(rest.as_bytes());
            // Payloads are bounded far below 4 GiB by the frame limit; saturate.
            let len = u32::try_from(out.len() - frame::HEADER_LEN).unwrap_or(u32::MAX);
            out[frame::HEADER_LEN - 4..frame::HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            EncodedFrame::Binary(Bytes::from(out))
        }
        Encoding::Json => {
            let id_json = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
            EncodedFrame::Text(format!(
                "{{\"type\":\"{}\",\"id\":{id_json},\"timestamp\":{timestamp}{sep}{rest}",
                kind.name()
            ))
        }
    }
}

/// Body of a broadcast field `delta` in the SDK shape (docs/protocol.md §7.7), built without
/// an intermediate `Value` because it is the hot path of fan-out. `clock_json` is the
/// document clock serialized once per flush.
pub(crate) fn field_delta_body(
    document_id: &str,
    field: &str,
    value: &Value,
    clock_json: &str,
) -> String {
    let mut out = String::with_capacity(96 + document_id.len() + field.len() + clock_json.len());
    out.push_str("{\"documentId\":");
    push_json_string(&mut out, document_id);
    out.push_str(",\"field\":");
    push_json_string(&mut out, field);
    out.push_str(",\"value\":");
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()));
    out.push_str(",\"clock\":");
    out.push_str(clock_json);
    out.push_str(",\"clientId\":\"server\"}");
    out
}

/// Append `s` as a JSON string, escaped exactly as `serde_json` escapes it (`"`, `\\`
/// and control characters; everything else as it is). Ids and field names rarely
/// need escaping, so they are copied without the temporary string serde_json would
/// build.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;
    use serde_json::json;

    #[test]
    fn binary_ack_is_header_plus_id_and_fields() {
        let frame = encode(
            &ServerMessage::Ack {
                message_id: "m1".into(),
            },
            "i1",
            0x0102,
            Encoding::Binary,
        );
        let EncodedFrame::Binary(bytes) = frame else {
            panic!("binary")
        };
        let payload = br#"{"id":"i1","messageId":"m1"}"#;
        let mut expected = vec![
            0x21,
            0,
            0,
            0,
            0,
            0,
            0,
            0x01,
            0x02,
            0,
            0,
            0,
            payload.len() as u8,
        ];
        expected.extend_from_slice(payload);
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn json_pong_is_flat_with_type_id_timestamp() {
        let frame = encode(&ServerMessage::Pong, "p", 7, Encoding::Json);
        assert_eq!(
            frame,
            EncodedFrame::Text(r#"{"type":"pong","id":"p","timestamp":7}"#.into())
        );
    }

    #[test]
    fn binary_pong_payload_has_only_id() {
        let EncodedFrame::Binary(bytes) = encode(&ServerMessage::Pong, "p", 7, Encoding::Binary)
        else {
            panic!("binary")
        };
        assert_eq!(&bytes[13..], br#"{"id":"p"}"#);
        assert_eq!(bytes[0], 0x31);
    }

    #[test]
    fn error_json_round_trips_through_decoder_shape() {
        let EncodedFrame::Text(text) = encode(
            &ServerMessage::error_with_code(
                "Too many messages. Please slow down.",
                "RATE_LIMIT_EXCEEDED",
            ),
            "e",
            1,
            Encoding::Json,
        ) else {
            panic!("text")
        };
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            value,
            json!({"type":"error","id":"e","timestamp":1,"error":"Too many messages. Please slow down.","details":{"code":"RATE_LIMIT_EXCEEDED"}})
        );
    }

    proptest::proptest! {
        /// The fast path writes the bytes serde_json writes, escapes included.
        #[test]
        fn json_strings_are_written_as_serde_json_writes_them(s in "\\PC*|[\"\\\\\u{0}-\u{1f}a-zé€😀]{0,12}") {
            let mut out = String::from("x");
            push_json_string(&mut out, &s);
            proptest::prop_assert_eq!(&out[1..], serde_json::to_string(&s).expect("json"));
        }
    }

    #[test]
    fn a_message_id_is_the_time_and_a_counter() {
        let id = next_message_id(1_767_225_600_123);
        let (time, counter) = id.split_once('-').expect("dash");
        assert_eq!(time, "1767225600123");
        assert_eq!(counter.len(), 9);
        assert!(counter.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert!(next_message_id(-5).starts_with("-5-"));
    }

    #[test]
    fn field_delta_body_escapes_and_matches_sdk_shape() {
        let body = field_delta_body("d\"1", "f", &json!({"x":[1,"y"]}), r#"{"a":3}"#);
        let value: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            value,
            json!({"documentId":"d\"1","field":"f","value":{"x":[1,"y"]},"clock":{"a":3},"clientId":"server"})
        );
        let EncodedFrame::Binary(bytes) =
            encode_body(MessageType::Delta, "i", 3, &body, Encoding::Binary)
        else {
            panic!("binary")
        };
        let raw = decode_frame(false, &bytes).expect("decodes");
        assert_eq!(raw.kind, MessageType::Delta);
        assert_eq!(raw.id.as_deref(), Some("i"));
    }

    #[test]
    fn message_ids_are_unique_and_ts_shaped() {
        let a = next_message_id(5);
        let b = next_message_id(5);
        assert_ne!(a, b);
        let (ms, suffix) = a.split_once('-').expect("dash");
        assert_eq!(ms, "5");
        assert_eq!(suffix.len(), 9);
        assert!(suffix
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }
}
