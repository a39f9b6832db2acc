//! Awareness pruning: remove expired presence entries and announce each as a leave
//! (`state: null`, `clock + 1`) to local subscribers and, when clustered, to the
//! other instances.

use serde_json::Value;

use crate::awareness::AwarenessError;
use crate::fanout::publish;
use crate::protocol::ServerMessage;
use crate::sync::SyncService;

/// Prune once; returns how many entries expired.
pub(crate) async fn prune_and_announce(sync: &SyncService) -> Result<usize, AwarenessError> {
    let expired = sync.awareness.prune_expired(sync.now_ms()).await?;
    for entry in &expired {
        sync.metrics.awareness_expired.inc();
        let leave = ServerMessage::AwarenessUpdate {
            document_id: entry.document_id.clone(),
            client_id: entry.client_id.clone(),
            state: Value::Null,
            clock: entry.clock.saturating_add(1),
        };
        publish::broadcast_awareness(&sync.hub, &entry.document_id, &leave, None, true);
    }
    Ok(expired.len())
}
