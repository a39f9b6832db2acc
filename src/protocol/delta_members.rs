//! The members a `delta` is read from (docs/protocol.md §7.6), and the hot path that
//! reads a binary `delta` payload straight into them.
//!
//! Every other message is decoded into a JSON object first and its members taken
//! out of it. A binary `delta` is what SDK clients send for each field write, so it
//! skips the object: its payload is read member by member into [`DeltaMembers`],
//! each member the last occurrence of its key exactly as a JSON object keeps it.
//! Anything this reader does not know — a key no delta reads, a payload that is not
//! one JSON object — makes it give up, and the frame takes the ordinary path, so the
//! two paths answer every frame alike (the intake's tests compare them).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::message::{tombstone, DeltaMessage};

/// The keys a delta reads.
#[derive(Debug, Clone, Copy)]
enum Member {
    Changes,
    ClientId,
    Clock,
    Delta,
    DocId,
    DocumentId,
    Field,
    MessageId,
    Value,
    VectorClock,
}

impl Member {
    fn of(key: &str) -> Option<Member> {
        Some(match key {
            "changes" => Member::Changes,
            "clientId" => Member::ClientId,
            "clock" => Member::Clock,
            "delta" => Member::Delta,
            "docId" => Member::DocId,
            "documentId" => Member::DocumentId,
            "field" => Member::Field,
            "messageId" => Member::MessageId,
            "value" => Member::Value,
            "vectorClock" => Member::VectorClock,
            _ => return None,
        })
    }
}

/// A delta's members, each `None` when absent. Their types are checked when the
/// message is built, as the ordinary path does.
#[derive(Debug, Default)]
pub(crate) struct DeltaMembers {
    changes: Option<Value>,
    client_id: Option<Value>,
    clock: Option<Value>,
    delta: Option<Value>,
    doc_id: Option<Value>,
    document_id: Option<Value>,
    field: Option<Value>,
    message_id: Option<Value>,
    value: Option<Value>,
    vector_clock: Option<Value>,
}

impl DeltaMembers {
    fn slot(&mut self, member: Member) -> &mut Option<Value> {
        match member {
            Member::Changes => &mut self.changes,
            Member::ClientId => &mut self.client_id,
            Member::Clock => &mut self.clock,
            Member::Delta => &mut self.delta,
            Member::DocId => &mut self.doc_id,
            Member::DocumentId => &mut self.document_id,
            Member::Field => &mut self.field,
            Member::MessageId => &mut self.message_id,
            Member::Value => &mut self.value,
            Member::VectorClock => &mut self.vector_clock,
        }
    }

    /// The members of a decoded body (consumed in one pass; keys no delta reads are
    /// dropped).
    pub(crate) fn from_body(body: Map<String, Value>) -> DeltaMembers {
        let mut members = DeltaMembers::default();
        for (key, value) in body {
            if let Some(member) = Member::of(&key) {
                *members.slot(member) = Some(value);
            }
        }
        members
    }

    /// The present members with their keys, in the order a JSON object (a sorted
    /// map) lists them, so the shape check meets them in the same order on both
    /// paths and names the same first problem.
    pub(crate) fn present(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        [
            ("changes", &self.changes),
            ("clientId", &self.client_id),
            ("clock", &self.clock),
            ("delta", &self.delta),
            ("docId", &self.doc_id),
            ("documentId", &self.document_id),
            ("field", &self.field),
            ("messageId", &self.message_id),
            ("value", &self.value),
            ("vectorClock", &self.vector_clock),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
    }

    /// The `documentId` member as sent (a refusal's reply names it when it is a
    /// string).
    pub(crate) fn raw_document_id(&self) -> Option<&Value> {
        self.document_id.as_ref()
    }

    /// The message, normalised from either shape of docs/protocol.md §7.6: `delta`
    /// (or its alias `changes`) as the entries, else the one `field`/`value` pair (a
    /// `delete` op deletes it); `vectorClock`, else `clock`; the payload
    /// `messageId`, else the message `id`.
    pub(crate) fn into_message(self, op_type: Option<&str>, id: Option<String>) -> DeltaMessage {
        let entries = match self.delta.or(self.changes) {
            Some(Value::Object(m)) => Some(m),
            Some(_) => None,
            None => match self.field {
                Some(Value::String(field)) => {
                    let value = if op_type == Some("delete") {
                        tombstone()
                    } else {
                        self.value.unwrap_or(Value::Null)
                    };
                    let mut m = Map::new();
                    m.insert(field, value);
                    Some(m)
                }
                _ => None,
            },
        }
        .filter(|m| !m.is_empty());
        DeltaMessage {
            document_id: string(self.document_id).or_else(|| string(self.doc_id)),
            entries,
            vector_clock: object(self.vector_clock).or_else(|| object(self.clock)),
            client_id: string(self.client_id),
            message_id: string(self.message_id).or(id),
        }
    }
}

fn string(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn object(value: Option<Value>) -> Option<Map<String, Value>> {
    match value? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A binary `delta` payload read into its members, with the envelope members the
/// ordinary path takes out before the shape check: `type` and `id` (a `timestamp`
/// is read and dropped, as no handler uses it).
#[derive(Debug, Default)]
pub(crate) struct BinaryDelta {
    pub(crate) members: DeltaMembers,
    pub(crate) op_type: Option<Value>,
    pub(crate) id: Option<Value>,
}

impl BinaryDelta {
    /// Read a payload, or `None` when this reader does not know it (the ordinary
    /// path then decides what it is).
    pub(crate) fn read(payload: &[u8]) -> Option<BinaryDelta> {
        serde_json::from_slice(payload).ok()
    }
}

impl<'de> serde::Deserialize<'de> for BinaryDelta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<BinaryDelta, D::Error> {
        deserializer.deserialize_map(BinaryDeltaVisitor)
    }
}

struct BinaryDeltaVisitor;

impl<'de> Visitor<'de> for BinaryDeltaVisitor {
    type Value = BinaryDelta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta payload object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BinaryDelta, A::Error> {
        let mut out = BinaryDelta::default();
        while let Some(key) = map.next_key::<PayloadKey>()? {
            let slot = match key {
                PayloadKey::Type => &mut out.op_type,
                PayloadKey::Id => &mut out.id,
                PayloadKey::Timestamp => {
                    // Read as a value, not skipped: skipping accepts numbers and
                    // strings that the ordinary path refuses.
                    map.next_value::<Value>()?;
                    continue;
                }
                PayloadKey::Member(member) => out.members.slot(member),
            };
            // A repeated key keeps its last value, as a JSON object does.
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(out)
    }
}

/// A key of a binary delta payload, read without allocating; any other key is an
/// error, which sends the frame down the ordinary path.
enum PayloadKey {
    Type,
    Id,
    Timestamp,
    Member(Member),
}

impl<'de> serde::Deserialize<'de> for PayloadKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PayloadKey, D::Error> {
        deserializer.deserialize_str(PayloadKeyVisitor)
    }
}

struct PayloadKeyVisitor;

impl Visitor<'_> for PayloadKeyVisitor {
    type Value = PayloadKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<PayloadKey, E> {
        Ok(match key {
            "type" => PayloadKey::Type,
            "id" => PayloadKey::Id,
            "timestamp" => PayloadKey::Timestamp,
            other => PayloadKey::Member(
                Member::of(other).ok_or_else(|| E::custom("not a delta member"))?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_sdk_shape_and_keeps_the_last_of_a_repeated_key() {
        let read = BinaryDelta::read(
            br#"{"type":"set","documentId":"a","field":"f","value":1,"documentId":"d","clock":{"w":2},"id":"m","timestamp":5}"#,
        )
        .expect("read");
        assert_eq!(read.op_type, Some(json!("set")));
        assert_eq!(read.id, Some(json!("m")));
        let msg = read.members.into_message(Some("set"), Some("m".into()));
        assert_eq!(msg.document_id.as_deref(), Some("d"));
        assert_eq!(msg.entries, json!({"f": 1}).as_object().cloned());
        assert_eq!(msg.vector_clock, json!({"w": 2}).as_object().cloned());
        assert_eq!(msg.message_id.as_deref(), Some("m"));
    }

    #[test]
    fn an_escaped_key_is_read_as_its_text() {
        let read = BinaryDelta::read(br#"{"document\u0049d":"d"}"#).expect("read");
        assert_eq!(read.members.raw_document_id(), Some(&json!("d")));
    }

    #[test]
    fn gives_up_on_what_it_does_not_know() {
        for payload in [
            &br#"{"documentId":"d","extra":1}"#[..],
            br#"{"aVeryLongKeyIndeed":1}"#,
            br#"[1]"#,
            br#"{"documentId":"d"} x"#,
            br#"{"documentId":"d""#,
            b"\xff",
        ] {
            assert!(BinaryDelta::read(payload).is_none(), "{payload:?}");
        }
    }

    #[test]
    fn the_members_are_listed_in_key_order() {
        let members = DeltaMembers::from_body(
            json!({"vectorClock": {}, "changes": {}, "documentId": "d", "other": 1})
                .as_object()
                .cloned()
                .expect("object"),
        );
        let keys: Vec<&str> = members.present().map(|(k, _)| k).collect();
        assert_eq!(keys, ["changes", "documentId", "vectorClock"]);
    }
}
