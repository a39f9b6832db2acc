//! Awareness pruning: remove expired presence entries and announce each as a leave
//! (`state: null`, `clock + 1`) to local subscribers and, when clustered, to the
//! other instances.

use crate::awareness::AwarenessError;
use crate::fanout::publish;
use crate::sync::SyncService;

/// Prune once; returns how many entries expired.
pub(crate) async fn prune_and_announce(sync: &SyncService) -> Result<usize, AwarenessError> {
    let expired = sync.awareness.prune_expired(sync.now_ms()).await?;
    for entry in &expired {
        sync.metrics.awareness_expired.inc();
        publish::announce_leave(&sync.hub, entry);
    }
    Ok(expired.len())
}
