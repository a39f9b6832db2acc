//! What this instance publishes on pub/sub besides flushes: text and CRDT op relays
//! and awareness (docs/storage.md §6.4). Each message carries `origin` = this
//! instance and a fresh id, which the inbound loop (`crate::fanout::relay`) uses to
//! drop our own messages when Redis echoes them.

use serde_json::Value;

use crate::awareness::AwarenessEntry;
use crate::protocol::encode::next_message_id;
use crate::protocol::ServerMessage;
use crate::pubsub::PubSubState;
use crate::sync::Hub;

fn envelope(hub: &Hub, msg: &ServerMessage) -> Value {
    let mut body = msg.body();
    if let Value::Object(map) = &mut body {
        let now = hub.now_ms();
        map.insert("type".into(), Value::String(msg.kind().name().into()));
        map.insert("id".into(), Value::String(next_message_id(now)));
        map.insert("timestamp".into(), Value::from(now));
        map.insert(
            "origin".into(),
            Value::String(hub.settings().instance_id.clone()),
        );
    }
    body
}

fn clustered(hub: &Hub) -> bool {
    hub.pubsub().state() != PubSubState::SingleInstance
}

/// Publish an op relay (text states and positional text ops; counter and set ops
/// with `SYNCKIT_RELAY_CRDT_OPS`) on the document's delta channel.
pub(crate) fn publish_op_relay(hub: &Hub, document_id: &str, msg: &ServerMessage) {
    if clustered(hub) {
        hub.publish(
            &hub.settings().channels.delta(document_id),
            &envelope(hub, msg),
        );
    }
}

/// Send an awareness update to local awareness ∪ document subscribers (except the
/// sender) and, when it originated here, publish it. Returns whether a local
/// subscriber was left crowded (see [`Hub::send_to_subscribers`]).
pub(crate) fn broadcast_awareness(
    hub: &Hub,
    document_id: &str,
    msg: &ServerMessage,
    except: Option<u64>,
    publish: bool,
) -> bool {
    let crowded = hub
        .get(document_id)
        .is_some_and(|entry| hub.send_to_subscribers(&entry, msg, true, except));
    if publish && clustered(hub) {
        hub.publish(
            &hub.settings().channels.awareness(document_id),
            &envelope(hub, msg),
        );
    }
    crowded
}

/// Announce that an awareness entry is gone (its connection closed, or it expired):
/// a leave (`state: null`, `clock + 1`) to local subscribers and the other instances.
pub(crate) fn announce_leave(hub: &Hub, entry: &AwarenessEntry) {
    let leave = ServerMessage::AwarenessUpdate {
        document_id: entry.document_id.clone(),
        client_id: entry.client_id.clone(),
        state: Value::Null,
        clock: entry.clock.saturating_add(1),
    };
    let _ = broadcast_awareness(hub, &entry.document_id, &leave, None, true);
}
