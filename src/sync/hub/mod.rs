//! Live documents and their subscribers; broadcast batching and fan-out
//! (docs/protocol.md §8.6–§8.8).
//!
//! Each document has its own lock, held only for in-memory work (never across an
//! await). Field results are coalesced per document for the batch window and then
//! fanned out: every message is encoded once per encoding and the same bytes are
//! shared by all subscribers. Writes are submitted to storage under the document
//! lock, so storage sees them in the order they were applied.
//!
//! One [`Hub`], its work split by concern:
//! - `mod.rs` (this file): the hub and a live document's state, the types its parts
//!   share, and the cache of live documents (loading, least-recently-used eviction).
//! - `subscribers.rs`: document and awareness subscriptions, the pub/sub interest
//!   they imply, and sending one message to a document's subscribers.
//! - `writes.rs`: field writes (local and remote) under the document lock, the
//!   clock bounds they are checked against, and the snapshot `sync_response` reads.
//! - `text.rs`: text states, merged one at a time per document in its text lane.
//! - `batching.rs`: the per-document broadcast batch, its flush and fan-out, and
//!   publishing to pub/sub.
//! - `resync.rs`: resynchronisation from shared storage (planning, reconciling).
//! - `admin.rs`: summaries and unloading, for stats, the admin API and test mode.
//! - `test_support.rs` (tests only): the hubs every file's unit tests start from.

use crate::hash::FastMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::document::Document;
use super::peer::Peer;
use crate::metrics::Metrics;
use crate::pubsub::{Channels, PubSub, RecentIds};
use crate::storage::{Persistence, StorageError};

mod admin;
mod batching;
mod resync;
mod subscribers;
#[cfg(test)]
mod test_support;
mod text;
mod writes;

pub(crate) use text::TextOutcome;
pub(crate) use writes::{Changes, FieldWrite};
use resync::ResyncMark;

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    /// Broadcast coalescing window (`SYNC_BATCH_DELAY`); zero flushes inline.
    pub(crate) batch_delay: Duration,
    /// This instance's id: the `origin` of everything it publishes.
    pub(crate) instance_id: String,
    pub(crate) channels: Channels,
    /// Loaded documents kept in memory before idle ones are unloaded (LRU).
    pub(crate) max_cached_documents: usize,
    /// Vector-clock entries (writers) a document may hold besides the shared
    /// [`OVERFLOW_WRITER`] entry; see [`Hub::apply`].
    pub(crate) max_clock_entries: usize,
    /// Bounds on text states and merged text documents.
    pub(crate) text_limits: crate::text::Limits,
    /// Where the hub reads wall time (message ids, timestamps, read-backs): the
    /// server's clock, so a test's injected clock reaches fan-out too.
    pub(crate) clock: crate::clock::SharedClock,
}

/// A subscriber list, copied on change so a flush can iterate it without the lock.
type PeerList = Arc<Vec<Arc<Peer>>>;

#[derive(Default)]
struct PendingBatch {
    /// Fields in first-queued order; later values overwrite earlier ones.
    order: Vec<String>,
    /// Field → its pending value.
    values: FastMap<String, Pending>,
    since: Option<Instant>,
    /// Local connections whose writes are in the batch: to them it is the echo of
    /// their own write (see [`Peer::send_own`]).
    writers: Vec<u64>,
}

/// A field value waiting for the next broadcast flush.
struct Pending {
    value: Value,
    /// Whether this instance produced it and must publish it.
    local: bool,
    /// The clock entry the write ticked (local writes), sent with the broadcast.
    writer: Option<String>,
}

/// A field queued for broadcast: name, value, and the clock entry its write ticked.
type QueuedField = (String, Value, Option<String>);

/// The clock entry a document's new writers share once its clock is full.
const OVERFLOW_WRITER: &str = "overflow";

struct DocState {
    doc: Document,
    subscribers: PeerList,
    awareness_subscribers: PeerList,
    pending: PendingBatch,
    last_modified_ms: i64,
    /// Set while resynchronisations of this document are planned.
    resync: Option<ResyncMark>,
    /// When a client's text state was last merged and stored here: a peer's text
    /// arriving soon after may have been stored over ours (or ours over it).
    last_local_text: Option<Instant>,
}

/// One live document.
pub(crate) struct DocEntry {
    pub(crate) id: Arc<str>,
    state: Mutex<DocState>,
    /// Hub tick of the last `open`, for least-recently-used eviction.
    last_used: AtomicU64,
    /// Held (across awaits) by the text merge in progress: one at a time per
    /// document, in arrival order, without holding `state` (README "Text engine").
    text_lane: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DocEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocEntry").field("id", &self.id).finish_non_exhaustive()
    }
}

impl DocEntry {
    fn lock(&self) -> MutexGuard<'_, DocState> {
        // A panic while holding the lock leaves the state as it was before the
        // failed write, which is still consistent: keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Hub {
    docs: Mutex<FastMap<Arc<str>, Arc<DocEntry>>>,
    storage: Arc<Persistence>,
    pubsub: Arc<dyn PubSub>,
    metrics: Arc<Metrics>,
    settings: HubSettings,
    flush_tx: mpsc::UnboundedSender<(Arc<DocEntry>, Instant)>,
    use_counter: AtomicU64,
    /// Cache size at which the next eviction scan may run (see [`Hub::evict_idle`]).
    next_eviction_scan: AtomicUsize,
    #[cfg(test)]
    eviction_scans: AtomicU64,
    /// Ids of messages we published, to recognise them if they come back.
    published_ids: RecentIds,
    /// Documents that gained local interest, for [`crate::fanout::resync`].
    resync_tx: mpsc::Sender<(Arc<DocEntry>, Instant)>,
    resync_rx: Mutex<Option<ResyncRequests>>,
}

/// Documents to resynchronise, with when they were planned.
pub(crate) type ResyncRequests = mpsc::Receiver<(Arc<DocEntry>, Instant)>;

/// Resynchronisations waiting for their turn. Past this (a burst of subscriptions
/// faster than storage answers), a document is not resynchronised on first
/// interest: the queue would otherwise pin documents in memory without bound.
const RESYNC_QUEUE: usize = 10_000;

/// The flush queue consumed by [`crate::fanout::flusher::run`]. Unbounded, but it holds at
/// most one entry per document with a pending batch.
pub(crate) type FlushQueue = mpsc::UnboundedReceiver<(Arc<DocEntry>, Instant)>;

impl Hub {
    pub(crate) fn new(
        storage: Arc<Persistence>,
        pubsub: Arc<dyn PubSub>,
        metrics: Arc<Metrics>,
        settings: HubSettings,
    ) -> (Arc<Hub>, FlushQueue) {
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let (resync_tx, resync_rx) = mpsc::channel(RESYNC_QUEUE);
        let hub = Arc::new(Hub {
            docs: Mutex::new(FastMap::default()),
            storage,
            pubsub,
            metrics,
            settings,
            flush_tx,
            use_counter: AtomicU64::new(0),
            next_eviction_scan: AtomicUsize::new(0),
            #[cfg(test)]
            eviction_scans: AtomicU64::new(0),
            published_ids: RecentIds::default(),
            resync_tx,
            resync_rx: Mutex::new(Some(resync_rx)),
        });
        (hub, flush_rx)
    }

    pub(crate) fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// Wall time in epoch milliseconds, from the hub's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.settings.clock.now_ms()
    }

    pub fn storage(&self) -> &Arc<Persistence> {
        &self.storage
    }

    pub(crate) fn pubsub(&self) -> &Arc<dyn PubSub> {
        &self.pubsub
    }

    fn docs(&self) -> MutexGuard<'_, FastMap<Arc<str>, Arc<DocEntry>>> {
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live document, if loaded.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<DocEntry>> {
        self.docs().get(id).cloned()
    }

    fn tick(&self) -> u64 {
        self.use_counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The live document if it is loaded, counted as a use (for eviction) like
    /// [`Hub::open`]: what a session takes without waiting.
    pub(crate) fn open_live(&self, id: &str) -> Option<Arc<DocEntry>> {
        let entry = self.get(id)?;
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        Some(entry)
    }

    /// The live document, loading it from storage on first access.
    pub(crate) async fn open(&self, id: &str) -> Result<Arc<DocEntry>, StorageError> {
        if let Some(entry) = self.open_live(id) {
            return Ok(entry);
        }
        // While storage is known to be down (the prober says so) the document is
        // opened from memory at once: a subscribe never waits on the database.
        let load = if self.storage.is_degraded() {
            Ok(None)
        } else {
            self.storage.load_document(id).await
        };
        let stored = match load {
            Ok(stored) => stored,
            // Storage down: serve the document from memory (docs/storage.md §5). Writes
            // still queue as patches merged into the stored fields, so nothing the
            // database holds is overwritten; the stored fields themselves show up
            // once the document is loaded again after the database returns.
            Err(e) if e.is_transient() => {
                tracing::warn!(document_id = %id, error = %e, "storage unreachable: opening the document from memory");
                None
            }
            Err(e) => return Err(e),
        };
        let mut doc = Document::default();
        if let Some(stored) = stored {
            doc.fields = stored.fields.into_iter().collect();
            for (writer, value) in stored.clock {
                doc.clock.observe(&writer, value);
            }
            // Restored fields need a clock entry so SDK 0.3.0 can apply the state
            // (it reads max(values(clock))); TS's restored writer is `storage`.
            if !doc.fields.is_empty() && doc.clock.is_empty() {
                doc.clock.observe("storage", 1);
            }
            if let Some((json, clock)) = stored.text {
                doc.text = Some(self.restore_text(id, json, clock).await);
            }
        }
        let mut docs = self.docs();
        // Another connection may have loaded it meanwhile: keep the first.
        let entry = docs
            .entry(Arc::from(id))
            .or_insert_with(|| {
                Arc::new(DocEntry {
                    id: Arc::from(id),
                    state: Mutex::new(DocState {
                        doc,
                        subscribers: Arc::new(Vec::new()),
                        awareness_subscribers: Arc::new(Vec::new()),
                        pending: PendingBatch::default(),
                        last_modified_ms: 0,
                        resync: None,
                        last_local_text: None,
                    }),
                    last_used: AtomicU64::new(0),
                    text_lane: tokio::sync::Mutex::new(()),
                })
            })
            .clone();
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        if docs.len() > self.settings.max_cached_documents
            && docs.len() >= self.next_eviction_scan.load(Ordering::Relaxed)
        {
            self.evict_idle(&mut docs);
        }
        Ok(entry)
    }

    /// Unload least recently used documents until the cache is at 90% of its bound
    /// (so eviction runs once per many loads, not on every one). Skipped — and
    /// passed over, not waited on — are documents with subscribers, a pending
    /// broadcast, writes not yet durable (a reload would miss them), or a handle
    /// held outside the map (a handler is working on it).
    ///
    /// A scan is linear in the cache and runs under the map's lock, so the next one
    /// waits until the cache has grown by another tenth of its bound: when nearly
    /// everything is in use (nothing to evict), loads do not each pay for a scan —
    /// a scan is amortised over `max/10` loads, and the cache may exceed its bound
    /// by that much while its documents are in use.
    fn evict_idle(&self, docs: &mut FastMap<Arc<str>, Arc<DocEntry>>) {
        #[cfg(test)]
        self.eviction_scans.fetch_add(1, Ordering::Relaxed);
        let target = self.settings.max_cached_documents * 9 / 10;
        let mut idle: Vec<(u64, Arc<str>)> = docs
            .iter()
            .filter(|(id, entry)| {
                if Arc::strong_count(entry) > 1 || self.storage.has_pending(id) {
                    return false;
                }
                let st = entry.lock();
                st.subscribers.is_empty()
                    && st.awareness_subscribers.is_empty()
                    && st.pending.order.is_empty()
            })
            .map(|(id, entry)| (entry.last_used.load(Ordering::Relaxed), id.clone()))
            .collect();
        idle.sort_unstable();
        let excess = docs.len().saturating_sub(target);
        for (_, id) in idle.into_iter().take(excess) {
            docs.remove(&id);
            self.metrics.documents_evicted.inc();
        }
        let step = (self.settings.max_cached_documents / 10).max(1);
        self.next_eviction_scan
            .store(docs.len().saturating_add(step), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::test_support::hub;

    #[tokio::test]
    async fn idle_documents_are_evicted_least_recently_used_first() {
        let hub = hub(10);
        let (peer, _outbox) = Peer::new(1);
        // Document 0 keeps a subscriber; documents 1.. are idle.
        let kept = hub.open("doc-0").await.expect("open");
        hub.subscribe(&kept, &peer);
        drop(kept);
        for i in 1..=10 {
            drop(hub.open(&format!("doc-{i}")).await.expect("open"));
        }
        // 11 > 10: evicted down to 9, oldest idle first, the subscribed one kept.
        assert_eq!(hub.document_count(), 9);
        assert!(
            hub.get("doc-0").is_some(),
            "a document with subscribers stays"
        );
        assert!(hub.get("doc-1").is_none() && hub.get("doc-2").is_none());
        assert!(hub.get("doc-10").is_some(), "the newest stays");
        assert_eq!(hub.metrics.documents_evicted.get(), 2);

        // A recently used document survives the next round; a held handle too.
        drop(hub.open("doc-3").await.expect("touch"));
        let held = hub.open("doc-4").await.expect("hold");
        for i in 11..=12 {
            drop(hub.open(&format!("doc-{i}")).await.expect("open"));
        }
        assert!(hub.get("doc-3").is_some());
        assert!(hub.get("doc-4").is_some());
        assert!(hub.get("doc-5").is_none(), "next oldest idle goes");
        drop(held);
    }

    #[tokio::test]
    async fn a_cache_full_of_documents_in_use_is_not_scanned_on_every_load() {
        let hub = hub(100);
        // Every document stays in use (a handle held): nothing can be evicted.
        let mut held = Vec::new();
        for i in 0..300 {
            held.push(hub.open(&format!("busy-{i}")).await.expect("open"));
        }
        assert_eq!(hub.document_count(), 300);
        let scans = hub.eviction_scans.load(Ordering::Relaxed);
        // 200 loads past the bound: one scan per 10 loads, not one per load.
        assert!(scans <= 21, "{scans} scans for 200 loads past the bound");
        assert!(scans >= 1);
        // Once documents are idle again, the next scan brings the cache back down.
        held.clear();
        for i in 0..10 {
            drop(hub.open(&format!("late-{i}")).await.expect("open"));
        }
        assert!(hub.document_count() <= 100, "{}", hub.document_count());
    }
}
