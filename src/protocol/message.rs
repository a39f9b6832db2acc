//! Typed messages: what a client may send, and what the server sends back.
//!
//! Parsing is lenient on purpose: fields a handler must validate (document id, delta
//! content) are kept as options so the handler can answer with the exact TS error in
//! the TS order (docs/protocol.md §7).

use serde_json::{Map, Value};

use super::decode::RawMessage;
use super::delta_members::DeltaMembers;
use super::MessageType;

/// The JSON value a client uses to delete a field.
pub(crate) fn is_tombstone(value: &Value) -> bool {
    matches!(value, Value::Object(m) if m.get("__deleted") == Some(&Value::Bool(true)))
}

/// `{"__deleted":true}`.
pub(crate) fn tombstone() -> Value {
    let mut m = Map::new();
    m.insert("__deleted".into(), Value::Bool(true));
    Value::Object(m)
}

/// A `delta` message normalised from either shape of docs/protocol.md §7.6.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaMessage {
    pub document_id: Option<String>,
    /// Field → value (tombstone = delete). `None` when missing, not an object or empty.
    pub entries: Option<Map<String, Value>>,
    pub vector_clock: Option<Map<String, Value>>,
    /// SDK op `clientId`: the writer whose clock entry is ticked.
    pub client_id: Option<String>,
    /// Payload `messageId`, else the message `id`: what the ack must echo.
    pub message_id: Option<String>,
}

/// A `delta_batch` (SDK 0.3.0's write path, docs/protocol.md §7.8).
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaBatchMessage {
    pub document_id: Option<String>,
    /// `None` when missing, not an array or empty.
    pub deltas: Option<Vec<Value>>,
    pub message_id: Option<String>,
}

/// One slice of a chunked message (docs/protocol.md §7.10); `None` fields are malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkMessage {
    pub chunk_id: Option<String>,
    pub total_chunks: Option<u64>,
    pub chunk_index: Option<u64>,
    pub data: Option<String>,
}

/// An `awareness_update` from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct AwarenessUpdateMessage {
    pub document_id: Option<String>,
    pub client_id: Option<String>,
    /// Raw `state`; must be an object or null (checked by the handler).
    pub state: Value,
    pub clock: Option<u64>,
}

/// Everything a client can send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Connect,
    Auth {
        token: Option<String>,
        api_key: Option<String>,
    },
    Subscribe {
        document_id: Option<String>,
    },
    Unsubscribe {
        document_id: Option<String>,
    },
    SyncRequest {
        document_id: Option<String>,
        vector_clock: Option<Map<String, Value>>,
    },
    SyncStep1 {
        document_id: Option<String>,
    },
    Delta(DeltaMessage),
    DeltaBatch(DeltaBatchMessage),
    DeltaBatchChunk(ChunkMessage),
    Ack,
    Ping,
    Pong,
    AwarenessSubscribe {
        document_id: Option<String>,
    },
    AwarenessUpdate(AwarenessUpdateMessage),
    /// Accepted by TS validation and then ignored (no handler anywhere upstream).
    Ignored,
}

/// Why a decoded message is not something a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A server-only type (`error`, `sync_response`, …): `Invalid message type: <t>`.
    NotClientSendable(MessageType),
}

// The helpers below take what they read out of the body (no copy): each key is read
// once, and the body is dropped once the message is built.

fn string(body: &mut Map<String, Value>, key: &str) -> Option<String> {
    match body.remove(key)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn object(body: &mut Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match body.remove(key)? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// `documentId`, with the Go/Python `docId` dialect accepted as an alias.
fn document_id(body: &mut Map<String, Value>) -> Option<String> {
    string(body, "documentId").or_else(|| string(body, "docId"))
}

impl ClientMessage {
    /// Turn a decoded message into a typed one.
    pub fn parse(raw: RawMessage) -> Result<ClientMessage, ParseError> {
        let RawMessage {
            kind,
            id,
            mut body,
            op_type,
            ..
        } = raw;
        if !kind.is_client_sendable() {
            return Err(ParseError::NotClientSendable(kind));
        }
        Ok(match kind {
            MessageType::Connect => ClientMessage::Connect,
            MessageType::Auth => ClientMessage::Auth {
                token: string(&mut body, "token").filter(|s| !s.is_empty()),
                api_key: string(&mut body, "apiKey").filter(|s| !s.is_empty()),
            },
            MessageType::Subscribe => ClientMessage::Subscribe {
                document_id: document_id(&mut body),
            },
            MessageType::Unsubscribe => ClientMessage::Unsubscribe {
                document_id: document_id(&mut body),
            },
            MessageType::SyncRequest => ClientMessage::SyncRequest {
                document_id: document_id(&mut body),
                vector_clock: object(&mut body, "vectorClock"),
            },
            MessageType::SyncStep1 => ClientMessage::SyncStep1 {
                document_id: document_id(&mut body),
            },
            MessageType::Delta => ClientMessage::Delta(delta(body, op_type.as_deref(), id)),
            MessageType::DeltaBatch => ClientMessage::DeltaBatch(delta_batch(body, id)),
            MessageType::DeltaBatchChunk => ClientMessage::DeltaBatchChunk(ChunkMessage {
                chunk_id: string(&mut body, "chunkId").filter(|s| !s.is_empty()),
                total_chunks: body.get("totalChunks").and_then(Value::as_u64),
                chunk_index: body.get("chunkIndex").and_then(Value::as_u64),
                data: string(&mut body, "data"),
            }),
            MessageType::Ack => ClientMessage::Ack,
            MessageType::Ping => ClientMessage::Ping,
            MessageType::Pong => ClientMessage::Pong,
            MessageType::AwarenessSubscribe => ClientMessage::AwarenessSubscribe {
                document_id: document_id(&mut body),
            },
            MessageType::AwarenessUpdate => ClientMessage::AwarenessUpdate(awareness_update(body)),
            MessageType::SnapshotRequest | MessageType::SnapshotUpload => ClientMessage::Ignored,
            // Server-only types were rejected above.
            other => return Err(ParseError::NotClientSendable(other)),
        })
    }
}

/// A `delta` in either shape of docs/protocol.md §7.6, its values taken out of the
/// body (no copy).
#[inline]
fn delta(body: Map<String, Value>, op_type: Option<&str>, id: Option<String>) -> DeltaMessage {
    DeltaMembers::from_body(body).into_message(op_type, id)
}

/// A `delta_batch`, its ops taken out of the body (no copy).
#[inline]
fn delta_batch(mut body: Map<String, Value>, id: Option<String>) -> DeltaBatchMessage {
    DeltaBatchMessage {
        document_id: document_id(&mut body),
        deltas: match body.remove("deltas") {
            Some(Value::Array(a)) if !a.is_empty() => Some(a),
            _ => None,
        },
        message_id: string(&mut body, "messageId").or(id),
    }
}

/// An `awareness_update`, its state taken out of the body (no copy).
fn awareness_update(mut body: Map<String, Value>) -> AwarenessUpdateMessage {
    AwarenessUpdateMessage {
        document_id: document_id(&mut body),
        client_id: string(&mut body, "clientId").filter(|s| !s.is_empty()),
        state: body.remove("state").unwrap_or(Value::Null),
        clock: body.get("clock").and_then(Value::as_u64),
    }
}

/// `{canRead, canWrite, isAdmin}` as sent in `auth_success`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionsBody {
    #[serde(default)]
    pub can_read: Vec<String>,
    #[serde(default)]
    pub can_write: Vec<String>,
    #[serde(default)]
    pub is_admin: bool,
}

/// One entry of `awareness_state.states`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessStateEntry {
    pub client_id: String,
    pub state: Value,
    pub clock: u64,
}

/// Everything the server sends. The body never contains `type`, `id` or `timestamp`:
/// the encoder adds those per encoding (docs/protocol.md §2.1/§2.2).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    AuthSuccess {
        user_id: String,
        permissions: PermissionsBody,
    },
    AuthError {
        error: String,
    },
    Error {
        error: String,
        details: Option<Value>,
    },
    SyncResponse {
        request_id: String,
        document_id: String,
        state: Map<String, Value>,
        clock: Map<String, Value>,
        text_state: Option<(crate::text::StateJson, f64)>,
    },
    SyncStep2 {
        document_id: String,
    },
    Ack {
        message_id: String,
    },
    Pong,
    DeltaBatch {
        document_id: String,
        deltas: Vec<Value>,
        is_text_operation: bool,
    },
    AwarenessState {
        document_id: String,
        states: Vec<AwarenessStateEntry>,
    },
    AwarenessUpdate {
        document_id: String,
        client_id: String,
        state: Value,
        clock: u64,
    },
}

impl ServerMessage {
    /// An `error` reply with optional `details`.
    pub(crate) fn error(error: impl Into<String>, details: Option<Value>) -> ServerMessage {
        ServerMessage::Error {
            error: error.into(),
            details,
        }
    }

    /// An `error` with `details: {code}`.
    pub(crate) fn error_with_code(error: impl Into<String>, code: &str) -> ServerMessage {
        ServerMessage::error(error, Some(serde_json::json!({ "code": code })))
    }

    /// An `error` with `details: {documentId}`.
    pub(crate) fn error_for_document(error: impl Into<String>, document_id: &str) -> ServerMessage {
        ServerMessage::error(
            error,
            Some(serde_json::json!({ "documentId": document_id })),
        )
    }

    pub fn kind(&self) -> MessageType {
        match self {
            ServerMessage::AuthSuccess { .. } => MessageType::AuthSuccess,
            ServerMessage::AuthError { .. } => MessageType::AuthError,
            ServerMessage::Error { .. } => MessageType::Error,
            ServerMessage::SyncResponse { .. } => MessageType::SyncResponse,
            ServerMessage::SyncStep2 { .. } => MessageType::SyncStep2,
            ServerMessage::Ack { .. } => MessageType::Ack,
            ServerMessage::Pong => MessageType::Pong,
            ServerMessage::DeltaBatch { .. } => MessageType::DeltaBatch,
            ServerMessage::AwarenessState { .. } => MessageType::AwarenessState,
            ServerMessage::AwarenessUpdate { .. } => MessageType::AwarenessUpdate,
        }
    }

    /// The type-specific fields as a JSON object.
    pub fn body(&self) -> Value {
        use serde_json::json;
        match self {
            ServerMessage::AuthSuccess {
                user_id,
                permissions,
            } => json!({ "userId": user_id, "permissions": permissions }),
            ServerMessage::AuthError { error } => json!({ "error": error }),
            ServerMessage::Error { error, details } => match details {
                Some(d) => json!({ "error": error, "details": d }),
                None => json!({ "error": error }),
            },
            ServerMessage::SyncResponse {
                request_id,
                document_id,
                state,
                clock,
                text_state,
            } => {
                let mut body = json!({
                    "requestId": request_id,
                    "documentId": document_id,
                    "state": state,
                    "deltas": [],
                    "clock": clock,
                });
                if let (Some((text, text_clock)), Value::Object(m)) = (text_state, &mut body) {
                    m.insert("textState".into(), Value::String(text.to_string()));
                    m.insert("textClock".into(), number(*text_clock));
                }
                body
            }
            ServerMessage::SyncStep2 { document_id } => {
                json!({ "documentId": document_id, "operations": [] })
            }
            ServerMessage::Ack { message_id } => json!({ "messageId": message_id }),
            ServerMessage::Pong => json!({}),
            ServerMessage::DeltaBatch {
                document_id,
                deltas,
                is_text_operation,
            } => {
                if *is_text_operation {
                    json!({ "documentId": document_id, "deltas": deltas, "isTextOperation": true })
                } else {
                    json!({ "documentId": document_id, "deltas": deltas })
                }
            }
            ServerMessage::AwarenessState {
                document_id,
                states,
            } => json!({ "documentId": document_id, "states": states }),
            ServerMessage::AwarenessUpdate {
                document_id,
                client_id,
                state,
                clock,
            } => json!({
                "documentId": document_id,
                "clientId": client_id,
                "state": state,
                "clock": clock,
            }),
        }
    }
}

/// A JSON number for an f64 that is integral when it can be (clocks are ms values).
pub(crate) fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.007_199_254_740_992e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;
    use crate::protocol::frame::join;
    use serde_json::json;

    fn parse_binary(code: u8, payload: &str) -> ClientMessage {
        let raw = decode_frame(false, &join(code, 1, payload.as_bytes())).expect("decodes");
        ClientMessage::parse(raw).expect("parses")
    }

    fn parse_json(text: &str) -> Result<ClientMessage, ParseError> {
        ClientMessage::parse(decode_frame(true, text.as_bytes()).expect("decodes"))
    }

    #[test]
    fn sdk_set_op_becomes_single_entry_delta() {
        let msg = parse_binary(
            0x20,
            r#"{"type":"set","documentId":"d","field":"f","value":3,"clock":{"c":2},"clientId":"c","timestamp":9,"messageId":"m"}"#,
        );
        let ClientMessage::Delta(d) = msg else {
            panic!("not a delta")
        };
        assert_eq!(d.document_id.as_deref(), Some("d"));
        assert_eq!(
            d.entries,
            Some(json!({"f": 3}).as_object().cloned().expect("obj"))
        );
        assert_eq!(d.vector_clock, json!({"c": 2}).as_object().cloned());
        assert_eq!(d.client_id.as_deref(), Some("c"));
        assert_eq!(d.message_id.as_deref(), Some("m"));
    }

    #[test]
    fn sdk_delete_op_becomes_tombstone_and_missing_value_null() {
        let ClientMessage::Delta(d) = parse_binary(
            0x20,
            r#"{"type":"delete","documentId":"d","field":"f","clock":{}}"#,
        ) else {
            panic!("not a delta")
        };
        assert!(is_tombstone(&d.entries.expect("entries")["f"]));
        let ClientMessage::Delta(d) = parse_binary(0x20, r#"{"documentId":"d","field":"g"}"#)
        else {
            panic!("not a delta")
        };
        assert_eq!(d.entries.expect("entries")["g"], Value::Null);
    }

    #[test]
    fn server_shape_delta_with_id_as_message_id() {
        let msg = parse_json(
            r#"{"type":"delta","id":"x1","timestamp":1,"documentId":"d","delta":{"a":1,"b":{"__deleted":true}},"vectorClock":{}}"#,
        )
        .expect("parses");
        let ClientMessage::Delta(d) = msg else {
            panic!("not a delta")
        };
        assert_eq!(d.message_id.as_deref(), Some("x1"));
        assert_eq!(d.entries.as_ref().map(Map::len), Some(2));
        assert!(d.vector_clock.is_some());
    }

    #[test]
    fn go_dialect_aliases() {
        let ClientMessage::Delta(d) =
            parse_json(r#"{"type":"delta","docId":"d","changes":{"a":1}}"#).expect("parses")
        else {
            panic!("not a delta")
        };
        assert_eq!(d.document_id.as_deref(), Some("d"));
        assert!(d.entries.is_some());
    }

    #[test]
    fn empty_or_invalid_delta_has_no_entries() {
        for text in [
            r#"{"type":"delta","documentId":"d","delta":{}}"#,
            r#"{"type":"delta","documentId":"d","delta":5}"#,
            r#"{"type":"delta","documentId":"d"}"#,
        ] {
            let Ok(ClientMessage::Delta(d)) = parse_json(text) else {
                panic!("not a delta")
            };
            assert_eq!(d.entries, None, "{text}");
        }
        let Ok(ClientMessage::DeltaBatch(b)) =
            parse_json(r#"{"type":"delta_batch","documentId":"d","deltas":[]}"#)
        else {
            panic!("not a batch")
        };
        assert_eq!(b.deltas, None);
    }

    #[test]
    fn server_only_types_are_rejected() {
        assert_eq!(
            parse_json(r#"{"type":"sync_response"}"#),
            Err(ParseError::NotClientSendable(MessageType::SyncResponse))
        );
        assert_eq!(
            parse_json(r#"{"type":"error"}"#),
            Err(ParseError::NotClientSendable(MessageType::Error))
        );
    }

    #[test]
    fn snapshot_messages_are_ignored() {
        assert_eq!(
            parse_json(r#"{"type":"snapshot_request"}"#),
            Ok(ClientMessage::Ignored)
        );
    }

    #[test]
    fn sync_response_body_has_clock_and_text_state() {
        let msg = ServerMessage::SyncResponse {
            request_id: "r".into(),
            document_id: "d".into(),
            state: Map::new(),
            clock: json!({"a": 1}).as_object().cloned().expect("obj"),
            text_state: Some((crate::text::StateJson::new("{}".into()), 5.0)),
        };
        assert_eq!(
            msg.body(),
            json!({"requestId":"r","documentId":"d","state":{},"deltas":[],"clock":{"a":1},"textState":"{}","textClock":5})
        );
    }
}
