//! The loop that applies what other instances publish (docs/storage.md §6.4): deltas
//! and relays into the hub (memory only), awareness into the store and to local
//! subscribers. Our own messages, echoed by Redis, are dropped by `origin` and by the
//! ids we remember. Presence messages update the fleet table and may ask for a resync.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::awareness::{AwarenessStore, AwarenessUpdate, SetOutcome};
use crate::protocol::ServerMessage;
use crate::pubsub::presence::PresenceEvent;
use crate::pubsub::{ChannelKind, Incoming};
use crate::sync::hub::{DocEntry, Hub};
use crate::sync::SyncService;

/// Apply messages from other instances until cancelled.
pub(crate) async fn run(
    sync: Arc<SyncService>,
    mut rx: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    let presence = sync.hub.settings().channels.presence();
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let result = if incoming.channel == presence {
            observe_presence(&sync, &incoming)
        } else {
            apply(&sync, &incoming).await
        };
        match result {
            Ok(()) => sync.metrics.pubsub_received.inc(),
            Err(reason) => {
                tracing::debug!(channel = %incoming.channel, reason, "ignored pub/sub message")
            }
        }
    }
}

fn observe_presence(sync: &SyncService, incoming: &Incoming) -> Result<(), &'static str> {
    let event = PresenceEvent::parse(&incoming.payload).ok_or("not a presence message")?;
    if event.server_id == sync.hub.settings().instance_id {
        return Err("own message");
    }
    sync.fleet.observe(&event, sync.now_ms());
    if event.asks_resync() {
        tracing::info!(peer = %event.server_id, "peer reconnected after an outage: resynchronising documents");
        sync.resync.notify_one();
    }
    Ok(())
}

/// Whether a remote awareness update is news to this instance's clients. Awareness
/// stores shared by the fleet (PostgreSQL, Redis) already hold what a peer
/// accepted; only the in-memory store keeps a per-instance copy to update.
async fn accept_awareness(
    store: &dyn AwarenessStore,
    update: AwarenessUpdate,
) -> Result<bool, &'static str> {
    if store.is_shared() {
        return Ok(true);
    }
    if update.state.is_none() {
        // Each instance expires its copy of a silent client and announces the leave;
        // only the first of the two announcements may reach the clients here.
        let known = store
            .get_all(&update.document_id, update.now_ms)
            .await
            .map_err(|_| "awareness store failed")?
            .iter()
            .any(|e| e.client_id == update.client_id);
        if !known {
            return Ok(false);
        }
    }
    let outcome = store
        .set(update)
        .await
        .map_err(|_| "awareness store failed")?;
    Ok(matches!(outcome, SetOutcome::Accepted | SetOutcome::Left))
}

async fn apply(sync: &SyncService, incoming: &Incoming) -> Result<(), &'static str> {
    let hub = &sync.hub;
    let (kind, document_id) = hub
        .settings()
        .channels
        .document_of(&incoming.channel)
        .ok_or("not a document channel")?;
    let msg: Value = serde_json::from_slice(&incoming.payload).map_err(|_| "not JSON")?;
    if is_own(hub, &msg) {
        return Err("own message");
    }
    let entry = hub.get(document_id).ok_or("document not live here")?;
    let now = sync.now_ms();
    match (kind, msg.get("type").and_then(Value::as_str)) {
        (ChannelKind::Delta, Some("delta")) => {
            let fields = msg
                .get("delta")
                .and_then(Value::as_object)
                .ok_or("delta without fields")?;
            let crowded = hub.apply_remote(
                &entry,
                fields,
                msg.get("vectorClock").and_then(Value::as_object),
                now,
            );
            pace(sync, crowded).await;
        }
        (ChannelKind::Delta, Some("delta_batch")) => {
            apply_batch(sync, &entry, document_id, msg, now).await?;
        }
        (ChannelKind::Awareness, Some("awareness_update")) => {
            apply_awareness(sync, &entry, document_id, &msg, now).await?;
        }
        _ => return Err("unhandled type"),
    }
    Ok(())
}

/// Whether a relayed message is this instance's own, come back.
fn is_own(hub: &Hub, msg: &Value) -> bool {
    match msg.get("origin").and_then(Value::as_str) {
        Some(origin) => origin == hub.settings().instance_id,
        // No origin: message ids are unique per instance only, so a peer's say
        // nothing, but one we published recently is ours.
        None => msg
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| hub.published_recently(id)),
    }
}

/// A peer's `delta_batch`: its text states merged into ours (what local
/// subscribers get is the merged state), the other ops passed on as they are.
async fn apply_batch(
    sync: &SyncService,
    entry: &Arc<DocEntry>,
    document_id: &str,
    mut msg: Value,
    now: i64,
) -> Result<(), &'static str> {
    let hub = &sync.hub;
    // Text relays say so (or carry text ops); relayed CRDT ops (counter, set) do not.
    let mut is_text = msg.get("isTextOperation") == Some(&Value::Bool(true));
    // Taken, not cloned: a text state may be tens of megabytes.
    let ops = match msg.get_mut("deltas") {
        Some(Value::Array(ops)) => std::mem::take(ops),
        _ => return Err("batch without deltas"),
    };
    let mut relayed = Vec::with_capacity(ops.len());
    for mut op in ops {
        let kind = op.get("type").and_then(Value::as_str);
        is_text |= matches!(kind, Some("text-state" | "text"));
        let is_text_state = kind == Some("text-state");
        let state = match op.get_mut("state") {
            Some(Value::String(state)) if is_text_state => Some(std::mem::take(state)),
            _ => None,
        };
        if let Some(state) = state {
            let clock = op
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(now as f64);
            // The origin instance checked it; a refusal here means this
            // instance's copy differs (or its limits do): not relayed.
            let merged = match hub.merge_remote_text(entry, state, clock).await {
                Ok(merged) => merged,
                Err(e) => {
                    tracing::warn!(document_id, error = %e, "relayed text state refused");
                    continue;
                }
            };
            if let Value::Object(m) = &mut op {
                m.insert("state".into(), Value::String(merged.to_string()));
            }
        }
        relayed.push(op);
    }
    let out = ServerMessage::DeltaBatch {
        document_id: document_id.to_owned(),
        deltas: relayed,
        is_text_operation: is_text,
    };
    pace(sync, hub.send_to_subscribers(entry, &out, false, None)).await;
    Ok(())
}

/// A peer's `awareness_update`, passed to local subscribers when it is news.
async fn apply_awareness(
    sync: &SyncService,
    entry: &Arc<DocEntry>,
    document_id: &str,
    msg: &Value,
    now: i64,
) -> Result<(), &'static str> {
    let client_id = msg
        .get("clientId")
        .and_then(Value::as_str)
        .ok_or("no clientId")?
        .to_owned();
    let clock = msg.get("clock").and_then(Value::as_u64).unwrap_or(0);
    let state = msg.get("state").cloned().filter(|s| !s.is_null());
    let update = AwarenessUpdate {
        document_id: document_id.to_owned(),
        client_id: client_id.clone(),
        connection_id: format!(
            "remote:{}",
            msg.get("origin")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        ),
        // A peer's relayed update: its instance checked the client's rights; here
        // it owns only what that peer's relays wrote.
        user_id: String::new(),
        state: state.clone(),
        clock,
        now_ms: now,
    };
    if accept_awareness(sync.awareness.as_ref(), update).await? {
        let out = ServerMessage::AwarenessUpdate {
            document_id: document_id.to_owned(),
            client_id,
            state: state.unwrap_or(Value::Null),
            clock,
        };
        pace(sync, sync.hub.send_to_subscribers(entry, &out, true, None)).await;
    }
    Ok(())
}

/// The relay is paced like a local writer (src/sync/peer.rs): a peer's messages
/// arrive as fast as Redis hands them over, and a local subscriber they left
/// crowded needs its writer task to run.
async fn pace(sync: &SyncService, crowded: bool) {
    if crowded {
        sync.metrics.writers_paced.inc();
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::awareness::MemoryAwarenessStore;
    use serde_json::json;

    fn update(state: Option<Value>, clock: u64) -> AwarenessUpdate {
        AwarenessUpdate {
            document_id: "d".into(),
            client_id: "c".into(),
            connection_id: "remote:peer".into(),
            user_id: String::new(),
            state,
            clock,
            now_ms: 1_000,
        }
    }

    #[tokio::test]
    async fn remote_awareness_is_news_once() {
        let store = MemoryAwarenessStore::new(std::time::Duration::from_secs(30));
        let accept = |u| accept_awareness(&store, u);
        assert_eq!(accept(update(None, 1)).await, Ok(false), "leave of nobody");
        assert_eq!(accept(update(Some(json!({"a": 1})), 1)).await, Ok(true));
        assert_eq!(
            accept(update(Some(json!({"a": 2})), 1)).await,
            Ok(false),
            "stale"
        );
        assert_eq!(accept(update(None, 2)).await, Ok(true), "leave");
        // Both instances expire a silent client and announce it: the second
        // announcement finds it gone here.
        assert_eq!(accept(update(None, 2)).await, Ok(false), "second leave");
    }
}
