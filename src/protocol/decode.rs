//! Inbound decoding: one WebSocket data frame → one logical message (docs/protocol.md §2).
//!
//! Every frame is classified on its own: a text frame, or a binary frame whose first
//! byte is `{`, is JSON; anything else is a 13-byte-header binary frame.

use serde_json::{Map, Value};

use super::frame::{self, FrameError};
use super::MessageType;

/// How a frame was encoded; also the reply encoding chosen for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Json,
}

impl Encoding {
    /// Classify a data frame: text frames and `{`-prefixed binary frames are JSON.
    pub fn detect(is_text: bool, bytes: &[u8]) -> Encoding {
        if is_text || bytes.first() == Some(&b'{') {
            Encoding::Json
        } else {
            Encoding::Binary
        }
    }
}

/// A decoded message before type-specific parsing: the flat logical object.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    pub kind: MessageType,
    /// The message `id`, when the sender supplied one.
    pub id: Option<String>,
    /// The header timestamp (binary) or the `timestamp` key (JSON), epoch ms.
    pub timestamp: Option<i64>,
    /// Every other key of the logical message (`type`, `id`, `timestamp` removed).
    pub body: Map<String, Value>,
    /// A `type` key found inside a binary payload (SDK ≤0.2 ops say `set`/`delete`).
    /// The header decides the message type; this only tells a delete from a set.
    pub op_type: Option<String>,
    /// Size of the JSON payload in bytes, for the message-size limit.
    pub payload_len: usize,
    pub encoding: Encoding,
}

/// Why a frame is not a message. The first three answer `Invalid message format`;
/// [`DecodeError::UnknownType`] answers `Invalid message type: <type>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete frame: {0}")]
    Incomplete(#[from] FrameError),
    #[error("payload is not a JSON object")]
    Invalid,
    #[error("unknown binary type code 0x{0:02x}")]
    UnknownCode(u8),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
}

/// Decode one data frame.
pub fn decode_frame(is_text: bool, bytes: &[u8]) -> Result<RawMessage, DecodeError> {
    match Encoding::detect(is_text, bytes) {
        Encoding::Json => decode_json(bytes),
        Encoding::Binary => decode_binary(bytes),
    }
}

fn decode_binary(bytes: &[u8]) -> Result<RawMessage, DecodeError> {
    let frame = frame::split(bytes)?;
    let kind = MessageType::from_code(frame.code).ok_or(DecodeError::UnknownCode(frame.code))?;
    let mut body = parse_object(frame.payload)?;
    // The header type wins over a `type` key inside the payload (SDK ≤0.2 ops carry
    // `"type":"set"`); a payload `timestamp` overrides the header (TS spread order).
    let op_type = match body.remove("type") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(raw_message(
        kind,
        body,
        op_type,
        Some(frame.timestamp),
        frame.payload.len(),
        Encoding::Binary,
    ))
}

fn decode_json(bytes: &[u8]) -> Result<RawMessage, DecodeError> {
    let mut body = parse_object(bytes)?;
    let kind = match body.remove("type") {
        Some(Value::String(name)) => {
            MessageType::from_name(&name).ok_or(DecodeError::UnknownType(name))?
        }
        _ => return Err(DecodeError::Invalid),
    };
    // Nested form `{type, id, timestamp, payload:{…}}`: flatten, dropping payload.type.
    if let Some(Value::Object(_)) = body.get("payload") {
        if let Some(Value::Object(nested)) = body.remove("payload") {
            for (key, value) in nested {
                if key != "type" {
                    body.insert(key, value);
                }
            }
        }
    }
    Ok(raw_message(
        kind,
        body,
        None,
        None,
        bytes.len(),
        Encoding::Json,
    ))
}

/// Either encoding's message, its `id` and `timestamp` taken out of the body (a
/// body `timestamp` wins over the binary header's).
#[inline]
fn raw_message(
    kind: MessageType,
    mut body: Map<String, Value>,
    op_type: Option<String>,
    header_timestamp: Option<i64>,
    payload_len: usize,
    encoding: Encoding,
) -> RawMessage {
    let timestamp = take_timestamp(&mut body).or(header_timestamp);
    let id = take_id(&mut body);
    RawMessage {
        kind,
        id,
        timestamp,
        body,
        op_type,
        payload_len,
        encoding,
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DecodeError::Invalid),
    }
}

fn take_id(body: &mut Map<String, Value>) -> Option<String> {
    message_id(body.remove("id")?)
}

/// A message `id` member as the id replies echo: a non-empty string, or a number's
/// text.
pub(crate) fn message_id(value: Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn take_timestamp(body: &mut Map<String, Value>) -> Option<i64> {
    let value = body.remove("timestamp")?;
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binary(code: u8, ts: i64, payload: &str) -> Vec<u8> {
        frame::join(code, ts, payload.as_bytes())
    }

    #[test]
    fn detects_encoding_per_frame() {
        assert_eq!(Encoding::detect(true, b"x"), Encoding::Json);
        assert_eq!(Encoding::detect(false, b"{\"type\":1}"), Encoding::Json);
        assert_eq!(Encoding::detect(false, &[0x10, 0]), Encoding::Binary);
        assert_eq!(Encoding::detect(false, &[]), Encoding::Binary);
    }

    #[test]
    fn decodes_sdk_binary_delta_with_payload_type_and_timestamp() {
        let bytes = binary(
            0x20,
            111,
            r#"{"type":"set","documentId":"d","field":"f","value":1,"timestamp":222,"messageId":"m1"}"#,
        );
        let msg = decode_frame(false, &bytes).expect("decodes");
        assert_eq!(msg.kind, MessageType::Delta);
        assert_eq!(msg.timestamp, Some(222));
        assert_eq!(msg.id, None);
        assert_eq!(msg.encoding, Encoding::Binary);
        assert!(!msg.body.contains_key("type"));
        assert_eq!(msg.op_type.as_deref(), Some("set"));
        assert_eq!(msg.body["messageId"], json!("m1"));
    }

    #[test]
    fn binary_header_timestamp_used_when_payload_has_none() {
        let msg = decode_frame(false, &binary(0x30, 1_700_000_000_000, "{}")).expect("decodes");
        assert_eq!(msg.kind, MessageType::Ping);
        assert_eq!(msg.timestamp, Some(1_700_000_000_000));
        assert_eq!(msg.payload_len, 2);
    }

    #[test]
    fn binary_id_in_payload_is_the_message_id() {
        let msg = decode_frame(false, &binary(0x12, 1, r#"{"id":"r1","documentId":"d"}"#))
            .expect("decodes");
        assert_eq!(msg.id.as_deref(), Some("r1"));
        assert_eq!(msg.kind, MessageType::SyncRequest);
    }

    #[test]
    fn binary_0x22_is_delta_batch() {
        let msg = decode_frame(false, &binary(0x22, 1, r#"{"documentId":"d","deltas":[]}"#))
            .expect("decodes");
        assert_eq!(msg.kind, MessageType::DeltaBatch);
    }

    #[test]
    fn binary_malformed_classes() {
        assert!(matches!(
            decode_frame(false, &[0x30, 0, 0]),
            Err(DecodeError::Incomplete(_))
        ));
        let mut truncated = binary(0x30, 1, "{}");
        truncated.pop();
        assert!(matches!(
            decode_frame(false, &truncated),
            Err(DecodeError::Incomplete(FrameError::TruncatedPayload { .. }))
        ));
        assert_eq!(
            decode_frame(false, &binary(0x77, 1, "{}")),
            Err(DecodeError::UnknownCode(0x77))
        );
        assert_eq!(
            decode_frame(false, &binary(0x30, 1, "[1,2]")),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            decode_frame(false, &binary(0x30, 1, "not json")),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            decode_frame(
                false,
                &[0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xfe]
            ),
            Err(DecodeError::Invalid)
        );
    }

    #[test]
    fn decodes_flat_json() {
        let msg = decode_frame(
            true,
            br#"{"type":"sync_request","id":"m1","timestamp":1700000000000,"documentId":"d"}"#,
        )
        .expect("decodes");
        assert_eq!(msg.kind, MessageType::SyncRequest);
        assert_eq!(msg.id.as_deref(), Some("m1"));
        assert_eq!(msg.timestamp, Some(1_700_000_000_000));
        assert_eq!(msg.body.len(), 1);
        assert_eq!(msg.encoding, Encoding::Json);
    }

    #[test]
    fn json_without_id_or_timestamp_is_accepted() {
        let msg = decode_frame(true, br#"{"type":"ping"}"#).expect("decodes");
        assert_eq!(msg.id, None);
        assert_eq!(msg.timestamp, None);
    }

    #[test]
    fn json_in_binary_frame() {
        let msg = decode_frame(false, br#"{"type":"ping","id":"p"}"#).expect("decodes");
        assert_eq!(msg.kind, MessageType::Ping);
        assert_eq!(msg.encoding, Encoding::Json);
    }

    #[test]
    fn nested_payload_form_is_flattened() {
        let msg = decode_frame(
            true,
            br#"{"type":"subscribe","id":"1","timestamp":2,"payload":{"type":"x","documentId":"d"}}"#,
        )
        .expect("decodes");
        assert_eq!(msg.kind, MessageType::Subscribe);
        assert_eq!(msg.body["documentId"], json!("d"));
        assert!(!msg.body.contains_key("payload"));
        assert!(!msg.body.contains_key("type"));
    }

    #[test]
    fn json_malformed_classes() {
        assert_eq!(decode_frame(true, b"{"), Err(DecodeError::Invalid));
        assert_eq!(decode_frame(true, b"[]"), Err(DecodeError::Invalid));
        assert_eq!(decode_frame(true, b"\"ping\""), Err(DecodeError::Invalid));
        assert_eq!(
            decode_frame(true, br#"{"id":"1"}"#),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            decode_frame(true, br#"{"type":5}"#),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            decode_frame(true, br#"{"type":"SyncRequest"}"#),
            Err(DecodeError::UnknownType("SyncRequest".into()))
        );
    }
}
