//! Property tests of the wire codec (docs/protocol.md §2–§4): every server message
//! round-trips through `encode` → `decode_frame` in both encodings; every client
//! message kind, framed the way clients frame it, parses back to the expected typed
//! message; arbitrary or truncated input never panics the decoder or the parser and
//! is classified as the spec says; valid frames of every message type, mutated (bit
//! flips, insertions, deletions, truncation, duplicated spans), never panic the
//! decoder, the admission checks or the parser.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use synckit::protocol::decode::DecodeError;
use synckit::protocol::frame::{join, FrameError, HEADER_LEN};
use synckit::protocol::message::{
    AwarenessStateEntry, AwarenessUpdateMessage, ChunkMessage, DeltaBatchMessage, DeltaMessage,
    ParseError, PermissionsBody,
};
use synckit::protocol::{
    decode_frame, encode, ClientMessage, EncodedFrame, Encoding, MessageType, ServerMessage,
};
use synckit::sync::admission::{check_clocks, check_shape};

const CASES: u32 = 96;

// ---------------------------------------------------------------------------
// Generators

/// Any string, control characters, quotes and non-BMP characters included.
fn any_string(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn non_empty_string(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 1..max).prop_map(String::from_iter)
}

/// Numbers whose decimal form round-trips exactly through serde_json.
fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| json!(f64::from(n) / 4.0)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        any_string(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any_string(6), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_map(max: usize) -> impl Strategy<Value = Map<String, Value>> {
    btree_map(any_string(8), json_value(), 0..max).prop_map(|m| m.into_iter().collect())
}

fn clock_map() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(any_string(8), any::<u64>().prop_map(Value::from), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let clock_f64 = prop_oneof![
        (0u64..(1 << 53)).prop_map(|n| n as f64),
        any::<i32>().prop_map(|n| f64::from(n) / 8.0),
    ];
    prop_oneof![
        (
            any_string(10),
            vec(any_string(6), 0..3),
            vec(any_string(6), 0..3),
            any::<bool>()
        )
            .prop_map(|(user_id, can_read, can_write, is_admin)| {
                ServerMessage::AuthSuccess {
                    user_id,
                    permissions: PermissionsBody {
                        can_read,
                        can_write,
                        is_admin,
                    },
                }
            }),
        any_string(20).prop_map(|error| ServerMessage::AuthError { error }),
        (any_string(20), proptest::option::of(json_value()))
            .prop_map(|(error, details)| ServerMessage::Error { error, details }),
        (
            any_string(10),
            any_string(10),
            json_map(4),
            clock_map(),
            proptest::option::of((any_string(20), clock_f64)),
        )
            .prop_map(|(request_id, document_id, state, clock, text_state)| {
                ServerMessage::SyncResponse {
                    request_id,
                    document_id,
                    state,
                    clock,
                    text_state: text_state.map(|(t, c)| (synckit::text::StateJson::new(t), c)),
                }
            }),
        any_string(10).prop_map(|document_id| ServerMessage::SyncStep2 { document_id }),
        any_string(10).prop_map(|message_id| ServerMessage::Ack { message_id }),
        Just(ServerMessage::Pong),
        (any_string(10), vec(json_value(), 0..4), any::<bool>()).prop_map(
            |(document_id, deltas, is_text_operation)| ServerMessage::DeltaBatch {
                document_id,
                deltas,
                is_text_operation,
            }
        ),
        (
            any_string(10),
            vec((any_string(8), json_value(), any::<u64>()), 0..4)
        )
            .prop_map(|(document_id, states)| ServerMessage::AwarenessState {
                document_id,
                states: states
                    .into_iter()
                    .map(|(client_id, state, clock)| AwarenessStateEntry {
                        client_id,
                        state,
                        clock,
                    })
                    .collect(),
            }),
        (any_string(10), any_string(8), json_value(), any::<u64>()).prop_map(
            |(document_id, client_id, state, clock)| ServerMessage::AwarenessUpdate {
                document_id,
                client_id,
                state,
                clock,
            }
        ),
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Binary), Just(Encoding::Json)]
}

fn decode(frame: &EncodedFrame) -> Result<synckit::protocol::RawMessage, DecodeError> {
    match frame {
        EncodedFrame::Binary(b) => decode_frame(false, b),
        EncodedFrame::Text(t) => decode_frame(true, t.as_bytes()),
    }
}

/// A client message as its logical JSON object (with `type`) and what it must parse to.
#[derive(Debug, Clone)]
struct ClientCase {
    logical: Map<String, Value>,
    /// A `type` key a binary payload carries besides the header (SDK ≤0.2 ops).
    op_type: Option<&'static str>,
    expected: ClientMessage,
    /// Types without a binary code travel only as JSON.
    json_only: bool,
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("object literal"),
    }
}

fn with_opt(mut m: Map<String, Value>, key: &str, v: &Option<String>) -> Map<String, Value> {
    if let Some(v) = v {
        m.insert(key.into(), Value::String(v.clone()));
    }
    m
}

fn doc_id() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any_string(10))
}

fn client_case() -> impl Strategy<Value = ClientCase> {
    let plain = |logical: Map<String, Value>, expected: ClientMessage| ClientCase {
        logical,
        op_type: None,
        expected,
        json_only: false,
    };
    prop_oneof![
        (
            proptest::option::of(any_string(12)),
            proptest::option::of(any_string(12))
        )
            .prop_map(move |(token, api_key)| {
                let m = with_opt(obj(json!({"type":"auth"})), "token", &token);
                let m = with_opt(m, "apiKey", &api_key);
                plain(
                    m,
                    ClientMessage::Auth {
                        token: token.filter(|t| !t.is_empty()),
                        api_key: api_key.filter(|k| !k.is_empty()),
                    },
                )
            }),
        (
            prop_oneof![
                Just("subscribe"),
                Just("unsubscribe"),
                Just("sync_step1"),
                Just("awareness_subscribe")
            ],
            doc_id()
        )
            .prop_map(move |(ty, document_id)| {
                let m = with_opt(obj(json!({ "type": ty })), "documentId", &document_id);
                let expected = match ty {
                    "subscribe" => ClientMessage::Subscribe { document_id },
                    "unsubscribe" => ClientMessage::Unsubscribe { document_id },
                    "sync_step1" => ClientMessage::SyncStep1 { document_id },
                    _ => ClientMessage::AwarenessSubscribe { document_id },
                };
                plain(m, expected)
            }),
        (doc_id(), proptest::option::of(clock_map())).prop_map(move |(document_id, clock)| {
            let mut m = with_opt(
                obj(json!({"type":"sync_request"})),
                "documentId",
                &document_id,
            );
            if let Some(c) = &clock {
                m.insert("vectorClock".into(), Value::Object(c.clone()));
            }
            plain(
                m,
                ClientMessage::SyncRequest {
                    document_id,
                    vector_clock: clock,
                },
            )
        }),
        // Server/TestClient delta shape.
        (
            doc_id(),
            json_map(4).prop_filter("non-empty", |m| !m.is_empty()),
            clock_map(),
            proptest::option::of(any_string(8)),
            proptest::option::of(non_empty_string(8))
        )
            .prop_map(move |(document_id, delta, clock, message_id, id)| {
                let mut m = with_opt(obj(json!({"type":"delta"})), "documentId", &document_id);
                m.insert("delta".into(), Value::Object(delta.clone()));
                m.insert("vectorClock".into(), Value::Object(clock.clone()));
                let m = with_opt(m, "messageId", &message_id);
                let m = with_opt(m, "id", &id);
                plain(
                    m,
                    ClientMessage::Delta(DeltaMessage {
                        document_id,
                        entries: Some(delta),
                        vector_clock: Some(clock),
                        client_id: None,
                        message_id: message_id.or(id),
                    }),
                )
            }),
        // SDK ≤0.2 op shape; a `delete` op type exists only inside binary payloads.
        (
            doc_id(),
            any_string(8),
            proptest::option::of(json_value()),
            clock_map(),
            any_string(8),
            any_string(8),
            prop_oneof![Just(None), Just(Some("set")), Just(Some("delete"))]
        )
            .prop_map(
                move |(document_id, field, value, clock, client_id, message_id, op_type)| {
                    let mut m = with_opt(obj(json!({"type":"delta"})), "documentId", &document_id);
                    m.insert("field".into(), Value::String(field.clone()));
                    if let Some(v) = &value {
                        m.insert("value".into(), v.clone());
                    }
                    m.insert("clock".into(), Value::Object(clock.clone()));
                    m.insert("clientId".into(), Value::String(client_id.clone()));
                    m.insert("messageId".into(), Value::String(message_id.clone()));
                    let stored = if op_type == Some("delete") {
                        json!({"__deleted": true})
                    } else {
                        value.unwrap_or(Value::Null)
                    };
                    ClientCase {
                        logical: m,
                        op_type,
                        expected: ClientMessage::Delta(DeltaMessage {
                            document_id,
                            entries: Some(obj(json!({ field: stored }))),
                            vector_clock: Some(clock),
                            client_id: Some(client_id),
                            message_id: Some(message_id),
                        }),
                        json_only: false,
                    }
                }
            ),
        (
            doc_id(),
            vec(json_value(), 1..4),
            proptest::option::of(any_string(8))
        )
            .prop_map(move |(document_id, deltas, message_id)| {
                let mut m = with_opt(
                    obj(json!({"type":"delta_batch"})),
                    "documentId",
                    &document_id,
                );
                m.insert("deltas".into(), Value::Array(deltas.clone()));
                let m = with_opt(m, "messageId", &message_id);
                plain(
                    m,
                    ClientMessage::DeltaBatch(DeltaBatchMessage {
                        document_id,
                        deltas: Some(deltas),
                        message_id,
                    }),
                )
            }),
        (
            non_empty_string(8),
            any::<u64>(),
            any::<u64>(),
            any_string(16)
        )
            .prop_map(move |(chunk_id, total, index, data)| {
                let m = obj(json!({"type":"delta_batch_chunk","chunkId":chunk_id,
                    "totalChunks":total,"chunkIndex":index,"data":data}));
                plain(
                    m,
                    ClientMessage::DeltaBatchChunk(ChunkMessage {
                        chunk_id: Some(chunk_id),
                        total_chunks: Some(total),
                        chunk_index: Some(index),
                        data: Some(data),
                    }),
                )
            }),
        (
            doc_id(),
            non_empty_string(8),
            prop_oneof![Just(Value::Null), json_map(3).prop_map(Value::Object)],
            any::<u64>()
        )
            .prop_map(move |(document_id, client_id, state, clock)| {
                let mut m = with_opt(
                    obj(json!({"type":"awareness_update"})),
                    "documentId",
                    &document_id,
                );
                m.insert("clientId".into(), Value::String(client_id.clone()));
                m.insert("state".into(), state.clone());
                m.insert("clock".into(), Value::from(clock));
                plain(
                    m,
                    ClientMessage::AwarenessUpdate(AwarenessUpdateMessage {
                        document_id,
                        client_id: Some(client_id),
                        state,
                        clock: Some(clock),
                    }),
                )
            }),
        any_string(8).prop_map(move |message_id| plain(
            obj(json!({"type":"ack","messageId":message_id})),
            ClientMessage::Ack
        )),
        Just(plain(obj(json!({"type":"ping"})), ClientMessage::Ping)),
        Just(plain(obj(json!({"type":"pong"})), ClientMessage::Pong)),
        prop_oneof![
            Just(("connect", ClientMessage::Connect)),
            Just(("snapshot_request", ClientMessage::Ignored)),
            Just(("snapshot_upload", ClientMessage::Ignored)),
        ]
        .prop_map(|(ty, expected)| ClientCase {
            logical: obj(json!({ "type": ty })),
            op_type: None,
            expected,
            json_only: true,
        }),
    ]
}

/// Frame a logical client message the way a client does: binary = header code and
/// timestamp plus the payload without `type` (plus an SDK op type if any); JSON =
/// the flat object.
fn client_frame(case: &ClientCase, binary: bool, ts: i64) -> Vec<u8> {
    let mut m = case.logical.clone();
    if binary {
        let ty = m.remove("type").and_then(|t| t.as_str().map(str::to_owned));
        let kind = MessageType::from_name(ty.as_deref().unwrap_or("")).expect("known type");
        if let Some(op) = case.op_type {
            m.insert("type".into(), json!(op));
        }
        let payload = serde_json::to_vec(&Value::Object(m)).expect("json");
        join(kind.code().expect("binary code"), ts, &payload)
    } else {
        m.insert("timestamp".into(), json!(ts));
        serde_json::to_vec(&Value::Object(m)).expect("json")
    }
}

fn known_codes() -> Vec<u8> {
    (0u8..=255)
        .filter(|c| MessageType::from_code(*c).is_some())
        .collect()
}

/// One edit of a frame's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(proptest::sample::Index, u8),
    Insert(proptest::sample::Index, u8),
    Delete(proptest::sample::Index),
    Truncate(proptest::sample::Index),
    /// Copy a span of the frame over another place (structure-aware enough to
    /// repeat keys, brackets and headers).
    Splice(proptest::sample::Index, proptest::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use proptest::sample::Index;
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>(), 1u8..32).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, mask) => {
            let i = i.index(bytes.len());
            bytes[i] ^= mask;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Mutation::Delete(i) => {
            let i = i.index(bytes.len());
            bytes.remove(i);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Splice(from, to, n) => {
            let from = from.index(bytes.len());
            let end = (from + usize::from(*n)).min(bytes.len());
            let span = bytes[from..end].to_vec();
            let to = to.index(bytes.len() + 1);
            bytes.splice(to..to, span);
        }
    }
}

/// Everything the server does with a frame before a handler sees it.
fn admit_frame(is_text: bool, bytes: &[u8]) {
    if let Ok(raw) = decode_frame(is_text, bytes) {
        assert!(raw.payload_len <= bytes.len());
        let _ = check_shape(&raw.body, 32);
        if let Ok(msg) = ClientMessage::parse(raw) {
            let _ = check_clocks(&msg, 1000);
        }
    }
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn server_messages_round_trip(
        msg in server_message(),
        id in non_empty_string(12),
        ts in any::<i64>(),
        enc in encoding(),
    ) {
        let frame = encode(&msg, &id, ts, enc);
        match (&frame, enc) {
            (EncodedFrame::Binary(b), Encoding::Binary) => {
                prop_assert_eq!(Some(b[0]), msg.kind().code());
                // TS form: the payload carries `id` but neither `type` nor `timestamp`.
                let payload: Value = serde_json::from_slice(&b[HEADER_LEN..]).expect("payload");
                prop_assert!(payload.get("type").is_none() && payload.get("timestamp").is_none());
                prop_assert_eq!(&payload["id"], &json!(id));
            }
            (EncodedFrame::Text(t), Encoding::Json) => {
                let flat: Value = serde_json::from_str(t).expect("json");
                prop_assert_eq!(&flat["type"], &json!(msg.kind().name()));
            }
            _ => prop_assert!(false, "wrong frame kind for {:?}", enc),
        }
        let raw = decode(&frame).expect("decodes");
        prop_assert_eq!(raw.kind, msg.kind());
        prop_assert_eq!(raw.encoding, enc);
        prop_assert_eq!(raw.id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(raw.timestamp, Some(ts));
        prop_assert_eq!(Value::Object(raw.body), msg.body());
        // What the server sends is never accepted back as a client message.
        if !msg.kind().is_client_sendable() {
            let raw = decode(&frame).expect("decodes");
            prop_assert_eq!(
                ClientMessage::parse(raw),
                Err(ParseError::NotClientSendable(msg.kind()))
            );
        }
    }

    #[test]
    fn client_messages_parse_back(case in client_case(), binary in any::<bool>(), ts in any::<i64>()) {
        // An SDK op type exists only inside binary payloads; some types only in JSON.
        let binary = case.op_type.is_some() || (binary && !case.json_only);
        let bytes = client_frame(&case, binary, ts);
        let raw = decode_frame(!binary, &bytes).expect("decodes");
        prop_assert_eq!(raw.encoding, if binary { Encoding::Binary } else { Encoding::Json });
        prop_assert_eq!(raw.timestamp, Some(ts));
        prop_assert_eq!(
            raw.id.clone(),
            case.logical.get("id").and_then(Value::as_str).map(str::to_owned)
        );
        prop_assert_eq!(raw.op_type.as_deref(), if binary { case.op_type } else { None });
        prop_assert_eq!(ClientMessage::parse(raw), Ok(case.expected.clone()));
    }

    #[test]
    fn binary_header_type_wins_and_payload_timestamp_overrides(
        code in proptest::sample::select(known_codes()),
        inner_type in any_string(8),
        header_ts in any::<i64>(),
        payload_ts in proptest::option::of(any::<i64>()),
    ) {
        let mut payload = json!({"type": inner_type, "documentId": "d"});
        if let Some(t) = payload_ts {
            payload["timestamp"] = json!(t);
        }
        let raw = decode_frame(false, &join(code, header_ts, payload.to_string().as_bytes()))
            .expect("decodes");
        prop_assert_eq!(Some(raw.kind), MessageType::from_code(code));
        prop_assert_eq!(raw.op_type.as_deref(), Some(inner_type.as_str()));
        prop_assert_eq!(raw.timestamp, Some(payload_ts.unwrap_or(header_ts)));
        prop_assert!(!raw.body.contains_key("type") && !raw.body.contains_key("timestamp"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200), is_text in any::<bool>()) {
        if let Ok(raw) = decode_frame(is_text, &bytes) {
            let _ = ClientMessage::parse(raw);
        }
    }

    /// Valid client frames of every type, in both encodings, mutated.
    #[test]
    fn mutated_client_frames_never_panic(
        case in client_case(),
        binary in any::<bool>(),
        edits in vec(mutation(), 1..8),
    ) {
        let binary = case.op_type.is_some() || (binary && !case.json_only);
        let mut bytes = client_frame(&case, binary, 1_700_000_000_000);
        for edit in &edits {
            mutate(&mut bytes, edit);
        }
        // A text frame is UTF-8 by the time it reaches the decoder; a binary frame
        // is whatever arrived.
        let is_text = !binary && std::str::from_utf8(&bytes).is_ok();
        admit_frame(is_text, &bytes);
        admit_frame(false, &bytes);
    }

    /// Valid frames of every server type (what a confused client echoes), mutated.
    #[test]
    fn mutated_server_frames_never_panic(
        msg in server_message(),
        enc in encoding(),
        edits in vec(mutation(), 1..8),
    ) {
        let (mut bytes, text) = match encode(&msg, "id", 1, enc) {
            EncodedFrame::Binary(b) => (b.to_vec(), false),
            EncodedFrame::Text(t) => (t.as_bytes().to_vec(), true),
        };
        for edit in &edits {
            mutate(&mut bytes, edit);
        }
        admit_frame(text && std::str::from_utf8(&bytes).is_ok(), &bytes);
        admit_frame(false, &bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any_string(120)) {
        if let Ok(raw) = decode_frame(true, text.as_bytes()) {
            let _ = ClientMessage::parse(raw);
        }
    }

    /// Well-formed frames of every type with payloads made of the wire's field names
    /// holding values of any JSON type: decoding succeeds and parsing never panics.
    #[test]
    fn any_field_types_never_panic_the_parser(
        code in proptest::sample::select(known_codes()),
        fields in btree_map(
            proptest::sample::select(vec![
                "id", "type", "timestamp", "token", "apiKey", "documentId", "docId",
                "delta", "changes", "field", "value", "vectorClock", "clock", "clientId",
                "messageId", "deltas", "chunkId", "totalChunks", "chunkIndex", "data",
                "state", "payload",
            ]),
            json_value(),
            0..8,
        ),
        as_json in any::<bool>(),
    ) {
        let mut m: Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let bytes = if as_json {
            let kind = MessageType::from_code(code).expect("known");
            m.insert("type".into(), json!(kind.name()));
            serde_json::to_vec(&Value::Object(m)).expect("json")
        } else {
            join(code, 0, &serde_json::to_vec(&Value::Object(m)).expect("json"))
        };
        let raw = decode_frame(as_json, &bytes).expect("an object with a known type decodes");
        let kind = raw.kind;
        match ClientMessage::parse(raw) {
            Ok(_) => prop_assert!(kind.is_client_sendable()),
            Err(ParseError::NotClientSendable(k)) => {
                prop_assert_eq!(k, kind);
                prop_assert!(!kind.is_client_sendable());
            }
        }
    }

    #[test]
    fn truncated_binary_frames_are_incomplete(
        msg in server_message(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let EncodedFrame::Binary(full) = encode(&msg, "id", 1, Encoding::Binary) else {
            unreachable!("binary")
        };
        let len = cut.index(full.len());
        let declared = full.len() - HEADER_LEN;
        let expected = if len < HEADER_LEN {
            FrameError::TruncatedHeader(len)
        } else {
            FrameError::TruncatedPayload { declared, available: len - HEADER_LEN }
        };
        prop_assert_eq!(
            decode_frame(false, &full[..len]),
            Err(DecodeError::Incomplete(expected))
        );
    }

    #[test]
    fn declared_length_beyond_the_frame_is_incomplete(
        code in any::<u8>(),
        ts in any::<i64>(),
        declared in any::<u32>(),
        body in vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(code != b'{');
        prop_assume!((declared as usize) > body.len());
        let mut bytes = vec![code];
        bytes.extend_from_slice(&ts.to_be_bytes());
        bytes.extend_from_slice(&declared.to_be_bytes());
        bytes.extend_from_slice(&body);
        prop_assert_eq!(
            decode_frame(false, &bytes),
            Err(DecodeError::Incomplete(FrameError::TruncatedPayload {
                declared: declared as usize,
                available: body.len(),
            }))
        );
    }

    #[test]
    fn bytes_after_the_declared_payload_are_ignored(
        msg in server_message(),
        trailer in vec(any::<u8>(), 1..32),
    ) {
        let EncodedFrame::Binary(full) = encode(&msg, "id", 7, Encoding::Binary) else {
            unreachable!("binary")
        };
        let mut longer = full.to_vec();
        longer.extend_from_slice(&trailer);
        prop_assert_eq!(decode_frame(false, &longer), decode_frame(false, &full));
    }

    #[test]
    fn unknown_codes_and_types_are_rejected(
        code in any::<u8>(),
        name in any_string(16),
    ) {
        prop_assume!(code != b'{');
        let frame = join(code, 0, b"{}");
        match MessageType::from_code(code) {
            Some(kind) => prop_assert_eq!(decode_frame(false, &frame).map(|r| r.kind), Ok(kind)),
            None => prop_assert_eq!(decode_frame(false, &frame), Err(DecodeError::UnknownCode(code))),
        }
        let text = json!({"type": name}).to_string();
        match MessageType::from_name(&name) {
            Some(kind) => prop_assert_eq!(decode_frame(true, text.as_bytes()).map(|r| r.kind), Ok(kind)),
            None => prop_assert_eq!(decode_frame(true, text.as_bytes()), Err(DecodeError::UnknownType(name))),
        }
    }
}
