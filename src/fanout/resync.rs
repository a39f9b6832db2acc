//! Resynchronisation after a pub/sub outage (docs/storage.md §6.6).
//!
//! While Redis was unreachable every instance kept serving its own clients, and the
//! updates they exchanged never crossed. Each instance persisted what it accepted,
//! so PostgreSQL holds the merged result: once pub/sub is back, every document with
//! local subscribers is read back from storage and the fields that differ are
//! applied like a remote update (memory only, broadcast in the SDK shape).
//!
//! A round runs when this instance reconnects after an outage, and when a peer
//! announces that it did (its `server_online` says `resync`): writes the peer
//! accepted while cut off are in storage by then, but we never heard of them.
//! A round also runs when PostgreSQL comes back after an outage: documents opened
//! while it was away were served from memory without their stored fields and text,
//! which the read-back brings in (and writes queued meanwhile are committed first).
//!
//! A single document is resynchronised when it gains its first local listener: a
//! copy left in the cache missed what peers wrote while nobody here listened, and
//! the channel subscription takes effect a moment after the document was read.
//!
//! Fields written live after a round was planned are left alone — their value is
//! newer than what storage may still hold — and a document with writes of ours not
//! yet committed waits for them (storage is behind us until then).
//!
//! Without PostgreSQL there is nothing shared to read back: documents converge only
//! as their fields are written again (README, "Running several instances"). The
//! text (Fugue) state read back is merged into ours (a CRDT merge loses neither side)
//! and sent to local subscribers when it changed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pubsub::Connection;
use crate::sync::hub::{DocEntry, Hub, ResyncRequests};
use crate::sync::SyncService;

/// Wait after the trigger before reading storage, so that peers' write queues have
/// committed what they accepted during the outage (a group commit takes
/// milliseconds; this leaves room for a loaded database).
const SETTLE: Duration = Duration::from_millis(500);

/// A document with uncommitted writes of ours is retried this often, this many
/// times (5 s in all), then left to converge on its next writes.
const RETRY: Duration = Duration::from_millis(200);
const ATTEMPTS: u32 = 25;

/// Serve rounds and single-document requests until cancelled.
pub(crate) async fn run(sync: Arc<SyncService>, cancel: CancellationToken) {
    let requests = sync.hub.take_resync_requests();
    tokio::join!(rounds(&sync, &cancel), requested(&sync, requests, &cancel));
}

async fn rounds(sync: &SyncService, cancel: &CancellationToken) {
    let mut connections = sync.hub.pubsub().connections();
    let mut recoveries = sync.hub.storage().recoveries();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sync.resync.notified() => {}
            _ = own_reconnection(&mut connections) => {
                tracing::info!("pub/sub is back after an outage: resynchronising documents");
            }
            Ok(()) = recoveries.changed() => {
                tracing::info!("storage is back after an outage: reading documents opened meanwhile back");
            }
        }
        round(sync, cancel).await;
    }
}

/// Documents that gained a local listener, each `SETTLE` after it did.
async fn requested(
    sync: &SyncService,
    requests: Option<ResyncRequests>,
    cancel: &CancellationToken,
) {
    let Some(mut rx) = requests else {
        return;
    };
    loop {
        let (entry, planned) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(planned + SETTLE) => {}
        }
        match reconcile(&sync.hub, &entry, cancel).await {
            Some(n) => {
                sync.metrics.resync_fields.add(n as u64);
                if n > 0 {
                    tracing::debug!(document_id = %entry.id, fields = n, "document resynchronised on first interest");
                }
            }
            None => sync.hub.abandon_resync(&entry),
        }
    }
}

/// Resolves when the backend reconnects after messages may have been missed.
async fn own_reconnection(rx: &mut Option<watch::Receiver<Connection>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rx.borrow_and_update().after_outage {
            return;
        }
    }
}

async fn round(sync: &SyncService, cancel: &CancellationToken) {
    let hub = &sync.hub;
    if !hub.storage().is_shared() {
        tracing::warn!("no shared storage (DATABASE_URL unset): documents cannot be resynchronised after the pub/sub outage; they converge as their fields are written again");
        return;
    }
    let documents = hub.begin_resync();
    if documents.is_empty() {
        return;
    }
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(SETTLE) => {}
    }
    let (mut fields, mut changed, mut skipped) = (0, 0, 0);
    for entry in &documents {
        match reconcile(hub, entry, cancel).await {
            Some(n) => {
                fields += n;
                changed += usize::from(n > 0);
            }
            None => {
                hub.abandon_resync(entry);
                skipped += 1;
            }
        }
    }
    sync.metrics.resync_rounds.inc();
    sync.metrics.resync_fields.add(fields as u64);
    tracing::info!(
        documents = documents.len(),
        changed,
        fields,
        skipped,
        "resynchronisation done"
    );
}

/// `Some(fields changed)`, or `None` when the document could not be reconciled.
async fn reconcile(hub: &Hub, entry: &Arc<DocEntry>, cancel: &CancellationToken) -> Option<usize> {
    for _ in 0..ATTEMPTS {
        if !hub.storage().has_pending(&entry.id) {
            match hub.storage().load_document(&entry.id).await {
                Ok(mut stored) => {
                    // The text is merged in the text lane (off the document lock,
                    // on the blocking pool when large), after the fields.
                    let text = stored.as_mut().and_then(|s| s.text.take());
                    if let Some(n) = hub.reconcile(entry, stored, hub.now_ms()) {
                        return Some(n + hub.merge_stored_text(entry, text).await);
                    }
                }
                Err(e) => {
                    tracing::warn!(document_id = %entry.id, error = %e, "could not read the document back for resynchronisation");
                    return None;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    tracing::warn!(document_id = %entry.id, "resynchronisation skipped: our writes to it stayed uncommitted");
    None
}
