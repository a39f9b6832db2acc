//! Bridge between the hub and pub/sub: what this instance publishes besides flushes
//! (text relays, awareness), and the loop that applies what other instances publish
//! (STORAGE.md §6.4). Messages carry `origin` = the publishing instance, so our own
//! messages are dropped if a backend echoes them.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::wall_clock_ms;
use crate::awareness::{AwarenessStore, AwarenessUpdate, SetOutcome};
use crate::metrics::Metrics;
use crate::protocol::encode::next_message_id;
use crate::protocol::ServerMessage;
use crate::pubsub::{ChannelKind, Incoming, PubSubState};

fn envelope(hub: &Hub, msg: &ServerMessage) -> Value {
    let mut body = msg.body();
    if let Value::Object(map) = &mut body {
        let now = wall_clock_ms();
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

/// Publish a text relay on the document's delta channel.
pub fn publish_text_relay(hub: &Hub, document_id: &str, msg: &ServerMessage) {
    if clustered(hub) {
        hub.publish(
            &hub.settings().channels.delta(document_id),
            &envelope(hub, msg),
        );
    }
}

/// Send an awareness update to local awareness ∪ document subscribers (except the
/// sender) and, when it originated here, publish it.
pub fn broadcast_awareness(
    hub: &Hub,
    document_id: &str,
    msg: &ServerMessage,
    except: Option<u64>,
    publish: bool,
) {
    if let Some(entry) = hub.get(document_id) {
        hub.send_to_subscribers(&entry, msg, true, except);
    }
    if publish && clustered(hub) {
        hub.publish(
            &hub.settings().channels.awareness(document_id),
            &envelope(hub, msg),
        );
    }
}

/// Apply messages from other instances until cancelled.
pub async fn run(
    hub: Arc<Hub>,
    awareness: Arc<dyn AwarenessStore>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        metrics.pubsub_received.inc();
        if let Err(reason) = apply(&hub, awareness.as_ref(), &incoming).await {
            tracing::debug!(channel = %incoming.channel, reason, "ignored pub/sub message");
        }
    }
}

async fn apply(
    hub: &Hub,
    awareness: &dyn AwarenessStore,
    incoming: &Incoming,
) -> Result<(), &'static str> {
    let (kind, document_id) = hub
        .settings()
        .channels
        .document_of(&incoming.channel)
        .ok_or("not a document channel")?;
    let msg: Value = serde_json::from_slice(&incoming.payload).map_err(|_| "not JSON")?;
    if msg.get("origin").and_then(Value::as_str) == Some(hub.settings().instance_id.as_str()) {
        return Err("own message");
    }
    let entry = hub.get(document_id).ok_or("document not live here")?;
    let now = wall_clock_ms();
    match (kind, msg.get("type").and_then(Value::as_str)) {
        (ChannelKind::Delta, Some("delta")) => {
            let fields = msg
                .get("delta")
                .and_then(Value::as_object)
                .ok_or("delta without fields")?;
            hub.apply_remote(
                &entry,
                fields,
                msg.get("vectorClock").and_then(Value::as_object),
                now,
            );
        }
        (ChannelKind::Delta, Some("delta_batch")) => {
            let ops = msg
                .get("deltas")
                .and_then(Value::as_array)
                .ok_or("batch without deltas")?;
            let mut relayed = Vec::with_capacity(ops.len());
            for op in ops {
                let mut op = op.clone();
                if let (Some("text-state"), Some(state)) = (
                    op.get("type").and_then(Value::as_str),
                    op.get("state").and_then(Value::as_str).map(str::to_owned),
                ) {
                    let clock = op
                        .get("timestamp")
                        .and_then(Value::as_f64)
                        .unwrap_or(now as f64);
                    let merged = hub.merge_remote_text(&entry, &state, clock);
                    if let Value::Object(m) = &mut op {
                        m.insert("state".into(), Value::String(merged));
                    }
                }
                relayed.push(op);
            }
            let out = ServerMessage::DeltaBatch {
                document_id: document_id.to_owned(),
                deltas: relayed,
                is_text_operation: true,
            };
            hub.send_to_subscribers(&entry, &out, false, None);
        }
        (ChannelKind::Awareness, Some("awareness_update")) => {
            let client_id = msg
                .get("clientId")
                .and_then(Value::as_str)
                .ok_or("no clientId")?
                .to_owned();
            let clock = msg.get("clock").and_then(Value::as_u64).unwrap_or(0);
            let state = msg.get("state").cloned().filter(|s| !s.is_null());
            let outcome = awareness
                .set(AwarenessUpdate {
                    document_id: document_id.to_owned(),
                    client_id: client_id.clone(),
                    connection_id: format!(
                        "remote:{}",
                        msg.get("origin")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown")
                    ),
                    state: state.clone(),
                    clock,
                    now_ms: now,
                })
                .await
                .map_err(|_| "awareness store failed")?;
            if outcome != SetOutcome::Stale {
                let out = ServerMessage::AwarenessUpdate {
                    document_id: document_id.to_owned(),
                    client_id,
                    state: state.unwrap_or(Value::Null),
                    clock,
                };
                hub.send_to_subscribers(&entry, &out, true, None);
            }
        }
        _ => return Err("unhandled type"),
    }
    Ok(())
}
