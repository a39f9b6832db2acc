//! The background task that expires the in-memory awareness store's entries and
//! broadcasts their leaves (shared stores are swept by the scheduler instead).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::AppState;

/// Expire awareness entries and broadcast their leaves (docs/protocol.md §7.16).
pub(crate) async fn awareness_sweeper(state: Arc<AppState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.awareness_sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = crate::maintenance::awareness::prune_and_announce(&state.sync).await {
            tracing::warn!(error = %e, "awareness sweep failed");
        }
    }
}
