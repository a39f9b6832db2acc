//! Live documents and their subscribers; broadcast batching and fan-out
//! (docs/protocol.md §8.6–§8.8).
//!
//! Each document has its own lock, held only for in-memory work (never across an
//! await). Field results are coalesced per document for the batch window and then
//! fanned out: every message is encoded once per encoding and the same bytes are
//! shared by all subscribers. Writes are submitted to storage under the document
//! lock, so storage sees them in the order they were applied.

use crate::hash::{FastMap, FastSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admission::{ClockRefusal, MAX_CLOCK_ADVANCE};
use super::clock::VectorClock;
use super::document::Document;
use super::peer::{Outgoing, Peer};
use super::text::TextState;
use crate::metrics::Metrics;
use crate::protocol::encode::{encode_body, field_delta_body, next_message_id};
use crate::protocol::message::tombstone;
use crate::protocol::{encode, EncodedFrame, Encoding, Framed, MessageType, ServerMessage};
use crate::pubsub::{Channels, PubSub, PubSubState, RecentIds};
use crate::storage::{
    DocumentWrite, FieldChange, PersistTicket, Persistence, StorageError, StoredDocument,
};
use crate::text::{StateJson, TextDoc, TextError};

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

#[derive(Default)]
struct ResyncMark {
    /// Planned and not yet finished.
    pending: u32,
    /// Fields changed since the first of them was planned: their live value is
    /// newer than anything a resynchronisation could read back from storage.
    touched: FastSet<String>,
}

impl DocState {
    fn touch<'a>(&mut self, fields: impl IntoIterator<Item = &'a String>) {
        if let Some(mark) = &mut self.resync {
            mark.touched.extend(fields.into_iter().cloned());
        }
    }

    fn plan_resync(&mut self) {
        self.resync.get_or_insert_with(ResyncMark::default).pending += 1;
    }

    fn finish_resync(&mut self) {
        if let Some(mark) = &mut self.resync {
            mark.pending = mark.pending.saturating_sub(1);
            if mark.pending == 0 {
                self.resync = None;
            }
        }
    }
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

/// A peer's text state merged within this long of a local one may have raced it
/// to storage (README "Running several instances"): the document is read back.
const CONCURRENT_TEXT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Whose text state a merge brings in.
#[derive(Debug, Clone, Copy)]
enum TextSource {
    /// A client's, at this wall time (ms): stored when it moved our state.
    Client(i64),
    /// A peer instance's relay (the peer stored it).
    Peer,
    /// Storage's, read back by a resynchronisation.
    Storage,
}

/// What `sync_response` needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocumentSnapshot {
    pub(crate) state: Map<String, Value>,
    pub(crate) clock: Map<String, Value>,
    pub(crate) text: Option<(crate::text::StateJson, f64)>,
}

/// What became of a client's text state.
#[derive(Debug)]
pub(crate) enum TextOutcome {
    /// Merged: the document's state now, and its persistence.
    Merged {
        json: crate::text::StateJson,
        ticket: PersistTicket,
    },
    /// Refused: nothing applied.
    Refused(crate::text::TextError),
    /// The write queue is full: nothing applied.
    Backlog(PersistTicket),
}

/// Text merges of a state over this many bytes, or into a document of more
/// blocks, run on the blocking pool (they may take more than a millisecond).
const BLOCKING_TEXT_BYTES: usize = 64 * 1024;
const BLOCKING_TEXT_BLOCKS: usize = 2_000;

/// One client field write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldWrite {
    pub(crate) field: String,
    pub(crate) value: Value,
    pub(crate) writer: String,
}

/// What one inbound message changes in one document.
#[derive(Debug, Default)]
pub(crate) struct Changes<'a> {
    pub(crate) fields: Vec<FieldWrite>,
    pub(crate) clocks: Vec<&'a Map<String, Value>>,
    /// The local connection that wrote them (its echo is its own reply).
    pub(crate) origin: Option<u64>,
}

/// The result of applying [`Changes`].
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) ticket: PersistTicket,
    /// Set when the write's clock was refused: nothing was applied.
    pub(crate) refused: Option<ClockRefusal>,
}

/// Summary of a live document, for stats and the admin API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DocumentSummary {
    pub(crate) id: String,
    pub(crate) subscribers: usize,
    pub(crate) awareness_subscribers: usize,
    pub(crate) fields: usize,
    pub(crate) approximate_bytes: usize,
    pub(crate) last_modified_ms: i64,
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

    /// A stored text state, parsed on the blocking pool when large.
    async fn restore_text(&self, id: &str, json: String, clock: f64) -> TextState {
        let limits = self.settings.text_limits;
        let json = crate::text::StateJson::new(json);
        if json.len() <= BLOCKING_TEXT_BYTES {
            return TextState::restored(json, clock, &limits);
        }
        let shared = json.clone();
        match tokio::task::spawn_blocking(move || TextState::restored(shared, clock, &limits)).await
        {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(document_id = %id, error = %e, "stored text state not parsed: served as stored");
                TextState::opaque(json, clock)
            }
        }
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

    /// Add a document subscriber (idempotent). Returns whether it was new.
    pub(crate) fn subscribe(&self, entry: &Arc<DocEntry>, peer: &Arc<Peer>) -> bool {
        let mut st = entry.lock();
        let added = add_peer(&mut st.subscribers, peer);
        if added {
            self.note_interest(entry, &mut st);
        }
        added
    }

    /// Add an awareness subscriber (idempotent).
    pub(crate) fn subscribe_awareness(&self, entry: &Arc<DocEntry>, peer: &Arc<Peer>) -> bool {
        let mut st = entry.lock();
        let added = add_peer(&mut st.awareness_subscribers, peer);
        if added {
            self.note_interest(entry, &mut st);
        }
        added
    }

    /// Remove a document subscription (the awareness one stays).
    pub(crate) fn unsubscribe(&self, id: &str, conn_id: u64) {
        if let Some(entry) = self.get(id) {
            let mut st = entry.lock();
            if remove_peer(&mut st.subscribers, conn_id) {
                self.drop_interest_if_idle(&entry, &st);
            }
        }
    }

    /// Remove an awareness subscription (the document one stays).
    pub(crate) fn unsubscribe_awareness(&self, id: &str, conn_id: u64) {
        if let Some(entry) = self.get(id) {
            let mut st = entry.lock();
            if remove_peer(&mut st.awareness_subscribers, conn_id) {
                self.drop_interest_if_idle(&entry, &st);
            }
        }
    }

    /// Forget a closed connection in every document it was in. Pending batches are
    /// kept: the other subscribers still get them (TS drops them; a bug).
    pub(crate) fn remove_peer<'a>(
        &self,
        conn_id: u64,
        documents: impl IntoIterator<Item = &'a str>,
    ) {
        for id in documents {
            if let Some(entry) = self.get(id) {
                let mut st = entry.lock();
                let removed = remove_peer(&mut st.subscribers, conn_id)
                    | remove_peer(&mut st.awareness_subscribers, conn_id);
                if removed {
                    self.drop_interest_if_idle(&entry, &st);
                }
            }
        }
    }

    /// Pub/sub follows local interest: subscribed while anyone here listens. Both
    /// calls happen only on the transition (first listener in, last one out), so the
    /// backend's subscribe counts stay balanced.
    ///
    /// Among several instances, a document nobody here listened to did not receive
    /// the peers' updates (a copy kept in the cache is stale), and updates published
    /// before the new subscription took effect are missed too: the document is
    /// resynchronised from shared storage shortly after.
    fn note_interest(&self, entry: &Arc<DocEntry>, st: &mut DocState) {
        if st.subscribers.len() + st.awareness_subscribers.len() != 1 {
            return;
        }
        self.pubsub
            .subscribe(&self.settings.channels.delta(&entry.id));
        self.pubsub
            .subscribe(&self.settings.channels.awareness(&entry.id));
        self.queue_resync(entry, st);
    }

    /// Plan a resynchronisation of one document from shared storage, run by the
    /// resync task after its settling delay (nothing to read back without shared
    /// storage and peers).
    fn queue_resync(&self, entry: &Arc<DocEntry>, st: &mut DocState) {
        if self.storage.is_shared() && self.pubsub.state() != PubSubState::SingleInstance {
            st.plan_resync();
            if self
                .resync_tx
                .try_send((entry.clone(), Instant::now()))
                .is_err()
            {
                tracing::debug!(document_id = %entry.id, "resync queue full: document not resynchronised");
                st.finish_resync();
            }
        }
    }

    /// The resynchronisation requests of documents gaining interest; taken once.
    pub(crate) fn take_resync_requests(&self) -> Option<ResyncRequests> {
        self.resync_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn drop_interest_if_idle(&self, entry: &DocEntry, st: &DocState) {
        if st.subscribers.is_empty() && st.awareness_subscribers.is_empty() {
            self.pubsub
                .unsubscribe(&self.settings.channels.delta(&entry.id));
            self.pubsub
                .unsubscribe(&self.settings.channels.awareness(&entry.id));
        }
    }

    pub(crate) fn snapshot(&self, entry: &DocEntry) -> DocumentSnapshot {
        let (state, clock, text) = {
            let st = entry.lock();
            let text = st.doc.text.as_ref().map(|t| (t.json_shared(), t.clock()));
            (st.doc.state_json(), st.doc.clock_json(), text)
        };
        DocumentSnapshot { state, clock, text }
    }

    /// Apply one inbound message's changes, queue the field results for broadcast,
    /// and submit the write to storage — all under the document lock.
    pub(crate) fn apply(
        &self,
        entry: &Arc<DocEntry>,
        changes: Changes<'_>,
        now_ms: i64,
    ) -> Applied {
        // Refuse before applying: a write nobody else has seen yet can be retried by
        // its client; one applied and broadcast but never persisted cannot.
        if self.storage.is_full() {
            return Applied {
                ticket: PersistTicket::done(Err(StorageError::BacklogFull(self.storage.backlog()))),
                refused: None,
            };
        }
        let mut st = entry.lock();
        if let Err(refusal) = check_clock(&st.doc.clock, &changes) {
            return Applied {
                ticket: PersistTicket::done(Ok(())),
                refused: Some(refusal),
            };
        }
        let origin = changes.origin;
        let (write, queued) = self.write_locked(&entry.id, &mut st, changes);
        if !write.is_empty() {
            st.last_modified_ms = now_ms;
        }
        let schedule = self.queue_locked(&mut st, queued, true);
        if let Some(origin) = origin {
            if !st.pending.order.is_empty() && !st.pending.writers.contains(&origin) {
                st.pending.writers.push(origin);
            }
        }
        let ticket = if write.is_empty() {
            PersistTicket::done(Ok(()))
        } else {
            self.storage.submit(write)
        };
        drop(st);
        if schedule {
            self.schedule_flush(entry);
        }
        Applied {
            ticket,
            refused: None,
        }
    }

    /// The in-memory part of [`Hub::apply`], under the document lock: merge the
    /// client clocks and write the fields, returning the storage write and the
    /// field results to broadcast.
    #[inline]
    fn write_locked(
        &self,
        id: &Arc<str>,
        st: &mut DocState,
        changes: Changes<'_>,
    ) -> (DocumentWrite, Vec<QueuedField>) {
        let mut write = DocumentWrite {
            document_id: id.clone(),
            changes: Vec::with_capacity(changes.fields.len()),
            clock: Vec::new(),
            text: None,
        };
        // Merge the client's clock before ticking: the writer's entry then ends up
        // strictly above the counter the client stamped its own write with, so the
        // SDK's LWW register takes the server's echo even when its client id sorts
        // above "server" (a tie would otherwise keep the local value).
        //
        // The document's clock holds at most `max_clock_entries` writers: once it is
        // full, a new writer's ticks go to the shared OVERFLOW_WRITER entry and the
        // entries a client clock names that the document lacks are not merged. The
        // write itself is applied either way, so a full clock never locks a
        // document; SDK clients order updates by max(clock), which still grows.
        let mut room = ClockRoom::new(&st.doc.clock, self.settings.max_clock_entries);
        let writers: Vec<String> = changes
            .fields
            .iter()
            .map(|f| room.writer(&st.doc.clock, &f.writer))
            .collect();
        let mut clock_changes: FastMap<String, u64> = FastMap::default();
        for clock in changes.clocks {
            let fitting = fitting_entries(&st.doc.clock, &mut room, clock);
            for (writer, value) in st.doc.clock.merge_json(fitting.as_ref().unwrap_or(clock)) {
                clock_changes.insert(writer, value);
            }
        }
        if room.full {
            self.metrics.refused(crate::metrics::Refusal::ClockFull);
        }
        let mut queued = Vec::with_capacity(changes.fields.len());
        for (FieldWrite { field, value, .. }, writer) in changes.fields.into_iter().zip(writers) {
            let out = st.doc.write_field(field, value, &writer);
            write.changes.push(FieldChange {
                field: out.field.clone(),
                value: (!out.deleted).then(|| out.authoritative.clone()),
                writer: out.writer.clone(),
                clock_value: out.tick,
            });
            queued.push((out.field, out.authoritative, Some(out.writer)));
        }
        for c in &write.changes {
            clock_changes.insert(c.writer.clone(), c.clock_value);
        }
        st.touch(write.changes.iter().map(|c| &c.field));
        // Persist the final value of every entry that moved.
        write.clock = clock_changes
            .into_keys()
            .map(|w| {
                let v = st.doc.clock.get(&w);
                (w, v)
            })
            .collect();
        (write, queued)
    }

    /// Apply field values another instance decided (not persisted here: the origin
    /// instance persisted them) and queue them for local broadcast.
    pub(crate) fn apply_remote(
        &self,
        entry: &Arc<DocEntry>,
        fields: &Map<String, Value>,
        clock: Option<&Map<String, Value>>,
        now_ms: i64,
    ) {
        let mut st = entry.lock();
        if let Some(clock) = clock {
            st.doc.clock.merge_json(clock);
        }
        st.touch(fields.keys());
        self.apply_remote_locked(&mut st, fields, now_ms);
        drop(st);
        // The origin instance already batched these (one message per flush there):
        // deliver at once instead of waiting a second batch window here.
        self.flush(entry);
    }

    /// Apply authoritative values and queue them for local broadcast (not for
    /// publishing). Returns whether a flush must be scheduled.
    fn apply_remote_locked(
        &self,
        st: &mut DocState,
        fields: &Map<String, Value>,
        now_ms: i64,
    ) -> bool {
        for (field, value) in fields {
            st.doc.apply_authoritative(field, value);
        }
        st.last_modified_ms = now_ms;
        let queued = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect();
        self.queue_locked(st, queued, false)
    }

    /// Plan a resynchronisation: from now on, record which fields change in every
    /// document somebody here subscribes to, and return those documents.
    pub(crate) fn begin_resync(&self) -> Vec<Arc<DocEntry>> {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        entries
            .into_iter()
            .filter(|entry| {
                let mut st = entry.lock();
                if st.subscribers.is_empty() {
                    return false;
                }
                st.plan_resync();
                true
            })
            .collect()
    }

    /// Bring a live document in line with what storage holds (after pub/sub was
    /// cut, other instances' writes are only there): every field that differs and
    /// did not change since [`Hub::begin_resync`] takes the stored value (a field
    /// storage lacks is deleted), broadcast to local subscribers like a remote
    /// update (the stored text is merged separately, by [`Hub::merge_stored_text`]).
    /// Returns the number of fields changed, or `None` when this instance has
    /// writes to the document not yet in storage — storage is then behind us and the
    /// caller retries later.
    pub(crate) fn reconcile(
        &self,
        entry: &Arc<DocEntry>,
        stored: Option<StoredDocument>,
        now_ms: i64,
    ) -> Option<usize> {
        let mut st = entry.lock();
        // Under the document lock: local writes submit under it too.
        if self.storage.has_pending(&entry.id) {
            return None;
        }
        let touched = st
            .resync
            .as_ref()
            .map(|m| m.touched.clone())
            .unwrap_or_default();
        st.finish_resync();
        let stored = stored.unwrap_or_default();
        let mut changes = Map::new();
        for (field, value) in &stored.fields {
            if !touched.contains(field) && st.doc.fields.get(field) != Some(value) {
                changes.insert(field.clone(), value.clone());
            }
        }
        for field in st.doc.fields.keys() {
            if !touched.contains(field) && !stored.fields.contains_key(field) {
                changes.insert(field.clone(), tombstone());
            }
        }
        for (writer, value) in &stored.clock {
            st.doc.clock.observe(writer, *value);
        }
        let schedule = self.apply_remote_locked(&mut st, &changes, now_ms);
        drop(st);
        if schedule {
            self.schedule_flush(entry);
        }
        Some(changes.len())
    }

    /// A planned resynchronisation gave up on a document.
    pub(crate) fn abandon_resync(&self, entry: &DocEntry) {
        entry.lock().finish_resync();
    }

    /// Merge a client's text state into the document and submit the merged state
    /// to storage. Parsing and merging run outside the document lock — on the
    /// blocking pool when large — one merge at a time per document (the text
    /// lane), so merges keep their order and readers are served meanwhile.
    pub(crate) async fn apply_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
        now_ms: i64,
    ) -> TextOutcome {
        if self.storage.is_full() {
            let e = StorageError::BacklogFull(self.storage.backlog());
            return TextOutcome::Backlog(PersistTicket::done(Err(e)));
        }
        match self
            .merge_text(entry, incoming, clock, TextSource::Client(now_ms))
            .await
        {
            Ok((json, ticket, _)) => TextOutcome::Merged {
                json,
                ticket: ticket.unwrap_or_else(|| PersistTicket::done(Ok(()))),
            },
            Err(e) => TextOutcome::Refused(e),
        }
    }

    /// Merge a text state another instance relayed (no persistence: the origin
    /// instance persisted it) and return the merged state.
    pub(crate) async fn merge_remote_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
    ) -> Result<crate::text::StateJson, crate::text::TextError> {
        self.merge_text(entry, incoming, clock, TextSource::Peer)
            .await
            .map(|(json, _, _)| json)
    }

    /// Merge the text state read back from storage (resynchronisation), in the
    /// text lane like any merge: when it changed ours, local subscribers get the
    /// result; when ours holds more than storage (a peer stored its merge over ours,
    /// or ours was never stored), ours is stored — storage must hold every side.
    /// Returns 1 when our text changed.
    pub(crate) async fn merge_stored_text(
        &self,
        entry: &Arc<DocEntry>,
        stored: Option<(String, f64)>,
    ) -> usize {
        match stored {
            Some((json, clock)) => {
                match self
                    .merge_text(entry, json, clock, TextSource::Storage)
                    .await
                {
                    Ok((_, _, changed)) => usize::from(changed),
                    Err(e) => {
                        tracing::warn!(document_id = %entry.id, error = %e, "stored text state not merged");
                        0
                    }
                }
            }
            None => {
                let _lane = entry.text_lane.lock().await;
                let ours = entry
                    .lock()
                    .doc
                    .text
                    .as_ref()
                    .filter(|t| !t.json().is_empty())
                    .map(|t| (t.json_shared(), t.clock()));
                if let Some((json, clock)) = ours {
                    self.store_text_behind(entry, json, clock);
                }
                0
            }
        }
    }

    /// Storage lacks part of the text this instance holds: store ours.
    fn store_text_behind(&self, entry: &DocEntry, state: crate::text::StateJson, clock: f64) {
        tracing::info!(document_id = %entry.id, "stored text lacked edits this instance holds (instances stored over each other): storing the merged text");
        let _ = self.storage.submit(text_write(&entry.id, state, clock));
    }

    /// The text lane: take the parsed document out, merge without the document
    /// lock, put it back and (for a client's state that moved it) submit it to
    /// storage — still in the lane, so storage sees merges in their order.
    /// Returns the state now, the persistence of a client's state, and whether the
    /// merge changed ours.
    async fn merge_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
        source: TextSource,
    ) -> Result<(StateJson, Option<PersistTicket>, bool), TextError> {
        let persist_at = match source {
            TextSource::Client(now_ms) => Some(now_ms),
            TextSource::Peer | TextSource::Storage => None,
        };
        // Only storage's state is checked for what ours holds beyond it (a full
        // parse; the others take the byte-comparing path).
        let reporting = matches!(source, TextSource::Storage);
        let _lane = entry.text_lane.lock().await;
        let doc = {
            let mut st = entry.lock();
            st.doc.text.get_or_insert_with(TextState::empty).take_doc()
        };
        let (doc, result, kept_more) = self.run_merge(entry, doc, incoming, reporting).await;
        let changed = matches!(result, Ok(Some(_)));
        let mut st = entry.lock();
        let text = st.doc.text.get_or_insert_with(TextState::empty);
        let before = text.clock();
        let outcome = result.map(|json| (json, clock));
        let accepted = outcome.as_ref().ok().cloned();
        text.put_back(doc, accepted);
        let (json, text_clock) = (text.json_shared(), text.clock());
        if json.is_empty() {
            st.doc.text = None;
        }
        outcome?;
        match source {
            TextSource::Client(_) => st.last_local_text = Some(Instant::now()),
            TextSource::Peer => {
                if st
                    .last_local_text
                    .is_some_and(|at| at.elapsed() < CONCURRENT_TEXT_WINDOW)
                {
                    // A peer's text right after ours: the two instances may have
                    // stored their merges over each other. Read storage back once
                    // things settle.
                    self.queue_resync(entry, &mut st);
                }
            }
            TextSource::Storage => {
                // Still in the text lane, which orders text writes; the copy of a
                // state that may be tens of megabytes is made outside the lock.
                drop(st);
                self.after_stored_merge(entry, &json, text_clock, changed, kept_more);
                return Ok((json, None, changed));
            }
        }
        let ticket = persist_at.and_then(|now_ms| {
            if !changed && text_clock == before {
                return None;
            }
            st.last_modified_ms = now_ms;
            let write = text_write(&entry.id, json.clone(), text_clock);
            Some(self.storage.submit(write))
        });
        Ok((json, ticket, changed))
    }

    /// One merge, outside the document lock: on the blocking pool when the state or
    /// the document is large (it may take more than a millisecond), inline
    /// otherwise. Returns the document to put back, the merge's result and whether
    /// ours holds more than `incoming` (only when `reporting`).
    async fn run_merge(
        &self,
        entry: &DocEntry,
        doc: Option<TextDoc>,
        incoming: String,
        reporting: bool,
    ) -> (Option<TextDoc>, Result<Option<StateJson>, TextError>, bool) {
        let limits = self.settings.text_limits;
        let large = incoming.len() > BLOCKING_TEXT_BYTES
            || doc
                .as_ref()
                .is_some_and(|d| d.block_count() > BLOCKING_TEXT_BLOCKS);
        if !large {
            return super::text::merge_reporting(doc, &incoming, &limits, reporting);
        }
        let fallback = entry.lock().doc.text.as_ref().map(TextState::json_shared);
        let work = move || super::text::merge_reporting(doc, &incoming, &limits, reporting);
        match tokio::task::spawn_blocking(work).await {
            Ok(merged) => merged,
            // The engine does not panic; if it ever did, rebuild the document
            // from its last state rather than lose it.
            Err(e) => {
                tracing::error!(document_id = %entry.id, error = %e, "text merge failed");
                let rebuilt = fallback
                    .filter(|j| !j.is_empty())
                    .map(|j| TextState::restored(j, 0.0, &limits).take_doc());
                let e = TextError::Malformed("internal error".into());
                (rebuilt.flatten(), Err(e), false)
            }
        }
    }

    /// After merging storage's text state (still in the text lane, which orders
    /// text writes; outside the document lock, since the copy of a state that may
    /// be tens of megabytes is made here): store ours when it held more than
    /// storage, and give local subscribers the result when it changed ours.
    fn after_stored_merge(
        &self,
        entry: &DocEntry,
        json: &StateJson,
        text_clock: f64,
        changed: bool,
        kept_more: bool,
    ) {
        if kept_more {
            self.store_text_behind(entry, json.clone(), text_clock);
        }
        if changed {
            // The SDK shape of a text relay: a whole-state `text-state` op.
            let msg = ServerMessage::DeltaBatch {
                document_id: entry.id.to_string(),
                deltas: vec![serde_json::json!({
                    "type": "text-state",
                    "documentId": &*entry.id,
                    "state": &**json,
                    "timestamp": text_clock,
                    "clientId": "storage",
                })],
                is_text_operation: true,
            };
            self.send_to_subscribers(entry, &msg, false, None);
        }
    }

    /// Returns whether a flush must be scheduled (the batch went from empty to not).
    fn queue_locked(&self, st: &mut DocState, fields: Vec<QueuedField>, local: bool) -> bool {
        if fields.is_empty() {
            return false;
        }
        let was_empty = st.pending.order.is_empty();
        for (field, value, writer) in fields {
            match st.pending.values.get_mut(&field) {
                Some(slot) => {
                    slot.value = value;
                    slot.local |= local;
                    slot.writer = writer;
                }
                None => {
                    st.pending.order.push(field.clone());
                    let pending = Pending {
                        value,
                        local,
                        writer,
                    };
                    st.pending.values.insert(field, pending);
                }
            }
        }
        if was_empty {
            st.pending.since = Some(Instant::now());
        }
        was_empty
    }

    fn schedule_flush(&self, entry: &Arc<DocEntry>) {
        if self.settings.batch_delay.is_zero() {
            self.flush(entry);
            return;
        }
        let due = Instant::now() + self.settings.batch_delay;
        if self.flush_tx.send((entry.clone(), due)).is_err() {
            // The flusher is gone (shutdown): deliver now rather than never.
            self.flush(entry);
        }
    }

    /// Send a document's pending batch: one SDK-shape `delta` per field to every
    /// subscriber including the writers, then publish the local part to pub/sub.
    ///
    /// A field's delta carries a compact clock — the entry its write ticked and the
    /// document's largest entry — not the whole clock: SDK clients order updates by
    /// max(clock), which this keeps, and a delta stays small however many writers
    /// the document has had (`sync_response` carries the whole clock).
    pub(crate) fn flush(&self, entry: &DocEntry) {
        let clustered = self.pubsub.state() != PubSubState::SingleInstance;
        let Some(taken) = take_batch(entry, clustered) else {
            return;
        };
        let now_ms = self.now_ms();
        let TakenBatch {
            batch,
            clocks,
            clock_json,
            full_clock,
            subscribers,
        } = taken;
        let PendingBatch {
            order,
            values,
            since,
            writers,
        } = batch;
        let (bodies, published) =
            delta_bodies(&entry.id, order, values, &clocks, &clock_json, now_ms);
        let delivered = self.deliver_deltas(&subscribers, &writers, &bodies, now_ms);
        let messages = delivered * bodies.len() as u64;
        self.metrics.broadcast_flushes.inc();
        self.metrics.broadcast_deliveries.add(messages);
        self.metrics.message_out(MessageType::Delta, messages);
        if let Some(since) = since {
            self.metrics
                .broadcast_latency
                .observe_ms(since.elapsed().as_secs_f64() * 1000.0);
        }
        if let (false, Some(full_clock)) = (published.is_empty(), full_clock) {
            let msg = serde_json::json!({
                "type": "delta",
                "id": next_message_id(now_ms),
                "timestamp": now_ms,
                "documentId": &*entry.id,
                "delta": published,
                "vectorClock": serde_json::from_str::<Value>(&full_clock).unwrap_or(Value::Null),
                "origin": self.settings.instance_id,
            });
            self.publish(&self.settings.channels.delta(&entry.id), &msg);
        }
    }

    /// Send a flush's deltas to every subscriber — encoded once per encoding, the
    /// same frames shared by all — the batch's writers as the echo of their own
    /// write. Returns how many subscribers took them; a subscriber too slow to take
    /// them is closed.
    #[inline]
    fn deliver_deltas(
        &self,
        subscribers: &PeerList,
        writers: &[u64],
        bodies: &[(String, String)],
        now_ms: i64,
    ) -> u64 {
        let frames_for = |encoding: Encoding| -> Framed {
            let frames: Vec<EncodedFrame> = bodies
                .iter()
                .map(|(id, body)| encode_body(MessageType::Delta, id, now_ms, body, encoding))
                .collect();
            Framed::new(&frames)
        };
        let mut binary: Option<Framed> = None;
        let mut json: Option<Framed> = None;
        let mut delivered = 0u64;
        for peer in subscribers.iter() {
            let frames = match peer.encoding() {
                Encoding::Binary => binary.get_or_insert_with(|| frames_for(Encoding::Binary)),
                Encoding::Json => json.get_or_insert_with(|| frames_for(Encoding::Json)),
            };
            let item = Outgoing::Frames(frames.clone());
            let queued = if writers.contains(&peer.conn_id) {
                peer.send_own(item)
            } else {
                peer.deliver(item)
            };
            if queued {
                delivered += 1;
            } else {
                self.metrics.slow_clients_closed.inc();
            }
        }
        delivered
    }

    /// Flush every pending batch now (shutdown).
    pub(crate) fn flush_all(&self) {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        for entry in entries {
            self.flush(&entry);
        }
    }

    pub(crate) fn publish(&self, channel: &str, msg: &Value) {
        if let Some(id) = msg.get("id").and_then(Value::as_str) {
            self.published_ids.remember(id);
        }
        self.pubsub
            .publish(channel, Bytes::from(msg.to_string().into_bytes()));
        self.metrics.pubsub_published.inc();
    }

    /// Whether a received message id is one we published (an echo).
    pub(crate) fn published_recently(&self, id: &str) -> bool {
        self.published_ids.contains(id)
    }

    /// Send one message now to a document's subscribers (and, for awareness, its
    /// awareness subscribers), except `except`.
    pub(crate) fn send_to_subscribers(
        &self,
        entry: &DocEntry,
        msg: &ServerMessage,
        include_awareness: bool,
        except: Option<u64>,
    ) -> u64 {
        let (subs, aware) = {
            let st = entry.lock();
            (st.subscribers.clone(), st.awareness_subscribers.clone())
        };
        let extra: &[Arc<Peer>] = if include_awareness { &aware } else { &[] };
        let now_ms = self.now_ms();
        let id = next_message_id(now_ms);
        let mut binary = None;
        let mut json = None;
        // A peer in both lists gets one copy; a set keeps this linear in the
        // number of subscribers.
        let mut seen: FastSet<u64> =
            FastSet::with_capacity_and_hasher(subs.len() + extra.len(), Default::default());
        let mut delivered = 0;
        for peer in subs.iter().chain(extra.iter()) {
            if Some(peer.conn_id) == except || !seen.insert(peer.conn_id) {
                continue;
            }
            // Framed once per encoding: each subscriber's writer sends the bytes as
            // they are.
            let framed = match peer.encoding() {
                Encoding::Binary => binary.get_or_insert_with(|| {
                    Framed::new(&[encode(msg, &id, now_ms, Encoding::Binary)])
                }),
                Encoding::Json => json.get_or_insert_with(|| {
                    Framed::new(&[encode(msg, &id, now_ms, Encoding::Json)])
                }),
            };
            if peer.deliver(Outgoing::Frames(framed.clone())) {
                delivered += 1;
            }
        }
        self.metrics.message_out(msg.kind(), delivered);
        delivered
    }

    pub(crate) fn document_count(&self) -> usize {
        self.docs().len()
    }

    pub(crate) fn summaries(&self) -> Vec<DocumentSummary> {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        let mut out: Vec<DocumentSummary> = entries
            .iter()
            .map(|e| {
                let st = e.lock();
                DocumentSummary {
                    id: e.id.to_string(),
                    subscribers: st.subscribers.len(),
                    awareness_subscribers: st.awareness_subscribers.len(),
                    fields: st.doc.fields.len(),
                    approximate_bytes: st.doc.approximate_size(),
                    last_modified_ms: st.last_modified_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Connection ids subscribed to a live document (documents, then awareness),
    /// for the admin API; `None` when the document is not loaded.
    pub(crate) fn subscriber_ids(&self, id: &str) -> Option<(Vec<u64>, Vec<u64>)> {
        let entry = self.get(id)?;
        let st = entry.lock();
        let ids = |list: &PeerList| list.iter().map(|p| p.conn_id).collect();
        Some((ids(&st.subscribers), ids(&st.awareness_subscribers)))
    }

    /// Unload a document before it is deleted from storage, so the cache cannot
    /// write it back. Refused (false) while anyone is subscribed, a broadcast is
    /// pending, writes are not yet durable, or a handler holds it; true when it is
    /// not (or no longer) loaded.
    pub(crate) fn forget(&self, id: &str) -> bool {
        let mut docs = self.docs();
        let Some(entry) = docs.get(id) else {
            return true;
        };
        if Arc::strong_count(entry) > 1 || self.storage.has_pending(id) {
            return false;
        }
        let idle = {
            let st = entry.lock();
            st.subscribers.is_empty()
                && st.awareness_subscribers.is_empty()
                && st.pending.order.is_empty()
        };
        if idle {
            docs.remove(id);
        }
        idle
    }

    /// Test mode's `POST /_test/clear` (docs/operations.md §1): every loaded
    /// document becomes empty — fields, clock, text and pending broadcast — and the
    /// ones nobody here listens to are unloaded; subscribers stay subscribed to the
    /// emptied documents. Writes already queued for storage are not touched (the
    /// caller drains them before clearing storage). Returns how many documents
    /// were loaded.
    pub(crate) fn clear(&self) -> usize {
        let mut docs = self.docs();
        let loaded = docs.len();
        docs.retain(|_, entry| {
            let mut st = entry.lock();
            st.doc = Document::default();
            st.pending = PendingBatch::default();
            st.last_modified_ms = 0;
            !(st.subscribers.is_empty() && st.awareness_subscribers.is_empty())
        });
        loaded
    }

    /// Total document subscriptions across live documents.
    pub(crate) fn subscription_count(&self) -> usize {
        let entries: Vec<Arc<DocEntry>> = self.docs().values().cloned().collect();
        entries.iter().map(|e| e.lock().subscribers.len()).sum()
    }
}

/// Whether a write's clock may be merged: no entry leads the document's largest
/// counter by more than [`MAX_CLOCK_ADVANCE`]. Checked before anything is applied.
fn check_clock(clock: &VectorClock, changes: &Changes<'_>) -> Result<(), ClockRefusal> {
    let highest = clock.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let limit = highest.saturating_add(MAX_CLOCK_ADVANCE);
    if changes
        .clocks
        .iter()
        .flat_map(|c| c.values())
        .any(|v| v.as_u64().is_some_and(|v| v > limit))
    {
        return Err(ClockRefusal::Advance);
    }
    Ok(())
}

/// Room for new writers in a document's clock during one write (see
/// [`Hub::write_locked`]).
struct ClockRoom {
    left: usize,
    /// Set when something did not fit.
    full: bool,
}

impl ClockRoom {
    fn new(clock: &VectorClock, max_entries: usize) -> ClockRoom {
        let own = clock.iter().filter(|(w, _)| *w != OVERFLOW_WRITER).count();
        ClockRoom {
            left: max_entries.saturating_sub(own),
            full: false,
        }
    }

    /// Whether `writer` has or gets an entry (taking room if it is new).
    fn admit(&mut self, clock: &VectorClock, writer: &str) -> bool {
        if clock.contains(writer) || writer == OVERFLOW_WRITER {
            return true;
        }
        if self.left == 0 {
            self.full = true;
            return false;
        }
        self.left -= 1;
        true
    }

    /// The entry a field write by `writer` ticks: its own, or the shared one.
    fn writer(&mut self, clock: &VectorClock, writer: &str) -> String {
        if self.admit(clock, writer) {
            writer.to_owned()
        } else {
            OVERFLOW_WRITER.to_owned()
        }
    }
}

/// The entries of a client clock that fit the document's clock (see
/// [`Hub::write_locked`]), copied only once one does not: `None` when the clock fits
/// whole (the usual case), so it is merged as it came.
#[inline]
fn fitting_entries(
    clock: &VectorClock,
    room: &mut ClockRoom,
    incoming: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let mut fitting: Option<Map<String, Value>> = None;
    for (i, (writer, value)) in incoming.iter().enumerate() {
        let admitted = room.admit(clock, writer);
        match (&mut fitting, admitted) {
            (None, true) | (Some(_), false) => {}
            (None, false) => {
                fitting = Some(
                    incoming
                        .iter()
                        .take(i)
                        .map(|(w, v)| (w.clone(), v.clone()))
                        .collect(),
                );
            }
            (Some(f), true) => {
                f.insert(writer.clone(), value.clone());
            }
        }
    }
    fitting
}

/// A document's pending batch, taken under its lock with what its deltas need
/// (see [`Hub::flush`]).
struct TakenBatch {
    batch: PendingBatch,
    /// Writer → its compact clock (JSON).
    clocks: FastMap<String, String>,
    /// The compact clock of a field no local writer ticked (JSON).
    clock_json: String,
    /// The whole clock, for other instances (clustered only).
    full_clock: Option<String>,
    subscribers: PeerList,
}

/// Take a document's pending batch, if any, under the lock only for that: the
/// deltas are built and sent without it.
#[inline]
fn take_batch(entry: &DocEntry, clustered: bool) -> Option<TakenBatch> {
    let mut st = entry.lock();
    if st.pending.order.is_empty() {
        return None;
    }
    let batch = std::mem::take(&mut st.pending);
    // The largest entry once per flush, not once per writer.
    let largest = largest_entry(&st.doc.clock);
    // One compact clock per distinct writer, not per field: a flush of one
    // writer's burst has thousands of fields and one writer.
    let mut clocks: FastMap<String, String> = FastMap::default();
    for w in batch.values.values().filter_map(|p| p.writer.as_deref()) {
        if !clocks.contains_key(w) {
            clocks.insert(w.to_owned(), compact_clock(&st.doc.clock, largest, Some(w)));
        }
    }
    Some(TakenBatch {
        batch,
        clocks,
        clock_json: compact_clock(&st.doc.clock, largest, None),
        // Other instances merge the whole clock (one message per flush).
        full_clock: clustered.then(|| st.doc.clock.to_json_string()),
        subscribers: st.subscribers.clone(),
    })
}

/// One delta body (with its message id) per field of a flushed batch, in
/// first-queued order, and the fields this instance must publish (its own).
#[inline]
fn delta_bodies(
    document_id: &str,
    order: Vec<String>,
    mut values: FastMap<String, Pending>,
    clocks: &FastMap<String, String>,
    clock_json: &str,
    now_ms: i64,
) -> (Vec<(String, String)>, Map<String, Value>) {
    let mut bodies = Vec::with_capacity(order.len());
    let mut published = Map::new();
    for field in order {
        if let Some(Pending {
            value,
            local,
            writer,
        }) = values.remove(&field)
        {
            let clock = writer
                .as_ref()
                .and_then(|w| clocks.get(w))
                .map_or(clock_json, String::as_str);
            bodies.push((
                next_message_id(now_ms),
                field_delta_body(document_id, &field, &value, clock),
            ));
            if local {
                published.insert(field, value);
            }
        }
    }
    (bodies, published)
}

/// A write of a document's whole text state and nothing else: a client's merge
/// that moved it, or ours when storage lacked part of it.
fn text_write(id: &Arc<str>, state: StateJson, clock: f64) -> DocumentWrite {
    DocumentWrite {
        document_id: id.clone(),
        changes: Vec::new(),
        clock: Vec::new(),
        text: Some((state, clock)),
    }
}

/// The document's largest clock entry (ties: the smallest writer id).
fn largest_entry(clock: &VectorClock) -> Option<(&str, u64)> {
    clock
        .iter()
        .max_by_key(|(w, v)| (**v, std::cmp::Reverse(*w)))
        .map(|(w, v)| (w.as_str(), *v))
}

/// The clock a broadcast delta carries: `writer`'s entry and the document's largest
/// one (so max(clock) is the document's), as JSON.
fn compact_clock(
    clock: &VectorClock,
    largest: Option<(&str, u64)>,
    writer: Option<&str>,
) -> String {
    let mut out = Map::new();
    if let Some((w, v)) = largest {
        out.insert(w.to_owned(), Value::from(v));
    }
    if let Some(w) = writer.filter(|w| clock.contains(w)) {
        out.insert(w.to_owned(), Value::from(clock.get(w)));
    }
    Value::Object(out).to_string()
}

/// Merge a stored text state into a document's (starting one if it has none),
/// returning the merged state and clock only when that changed it. Skipped while a
/// client's merge has the document out (the text lane): that merge's result is
/// relayed anyway, and the next resynchronisation reads storage again.
fn add_peer(list: &mut PeerList, peer: &Arc<Peer>) -> bool {
    // By pointer: a connection has one `Peer`, and comparing the list's pointers
    // does not touch every subscriber's memory — every write subscribes its writer
    // (idempotently), so this runs once per delta.
    if list.iter().any(|p| Arc::ptr_eq(p, peer)) {
        return false;
    }
    let mut next = Vec::with_capacity(list.len() + 1);
    next.extend(list.iter().cloned());
    next.push(peer.clone());
    *list = Arc::new(next);
    true
}

/// Returns whether the peer was there.
fn remove_peer(list: &mut PeerList, conn_id: u64) -> bool {
    if !list.iter().any(|p| p.conn_id == conn_id) {
        return false;
    }
    *list = Arc::new(
        list.iter()
            .filter(|p| p.conn_id != conn_id)
            .cloned()
            .collect(),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::LocalPubSub;

    fn hub(max_cached_documents: usize) -> Arc<Hub> {
        hub_on(Persistence::in_memory(), max_cached_documents)
    }

    fn hub_on(storage: Persistence, max_cached_documents: usize) -> Arc<Hub> {
        let (hub, _flushes) = Hub::new(
            Arc::new(storage),
            Arc::new(LocalPubSub::single_instance()),
            Arc::new(Metrics::default()),
            HubSettings {
                batch_delay: Duration::from_millis(50),
                instance_id: "test".into(),
                channels: Channels::new("synckit:"),
                max_cached_documents,
                max_clock_entries: 3,
                text_limits: crate::text::Limits::default(),
                clock: crate::clock::SystemClock::shared(),
            },
        );
        hub
    }

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

    #[tokio::test]
    async fn a_full_document_clock_shares_one_entry_among_new_writers() {
        let hub = hub(10);
        let entry = hub.open("d").await.expect("open");
        let write = |writer: &str| Changes {
            fields: vec![FieldWrite {
                field: writer.into(),
                value: Value::from(1),
                writer: writer.into(),
            }],
            ..Changes::default()
        };
        for w in ["a", "b", "c"] {
            assert_eq!(hub.apply(&entry, write(w), 0).refused, None);
        }
        // A new writer past the cap is applied, on the shared entry.
        assert_eq!(hub.apply(&entry, write("d"), 0).refused, None);
        assert_eq!(hub.apply(&entry, write("e"), 0).refused, None);
        let snap = hub.snapshot(&entry);
        assert_eq!(snap.state["d"], serde_json::json!(1));
        assert_eq!(snap.clock.len(), 4, "{:?}", snap.clock);
        assert_eq!(snap.clock[OVERFLOW_WRITER], serde_json::json!(2));
        // Known writers keep their own entries; a clock naming only known writers
        // merges, entries the document lacks are not merged once it is full.
        let clock = serde_json::json!({"a": 5, "zz": 1});
        let mut again = write("a");
        again.clocks = vec![clock.as_object().expect("object")];
        assert_eq!(hub.apply(&entry, again, 0).refused, None);
        let snap = hub.snapshot(&entry);
        assert_eq!(snap.clock["a"], serde_json::json!(6));
        assert!(!snap.clock.contains_key("zz"));
        // A jump far past the document's counters would freeze max(clock).
        let jump = serde_json::json!({"a": MAX_CLOCK_ADVANCE + 100});
        let mut far = write("a");
        far.clocks = vec![jump.as_object().expect("object")];
        assert_eq!(
            hub.apply(&entry, far, 0).refused,
            Some(ClockRefusal::Advance)
        );
        assert_eq!(hub.snapshot(&entry).clock["a"], serde_json::json!(6));
    }

    #[test]
    fn a_broadcast_clock_is_the_writer_and_the_largest_entry() {
        let clock: VectorClock = (0..1000).map(|i| (format!("w{i:04}"), i)).collect();
        let largest = largest_entry(&clock);
        assert_eq!(largest, Some(("w0999", 999)));
        let c: Value =
            serde_json::from_str(&compact_clock(&clock, largest, Some("w0007"))).expect("json");
        assert_eq!(c, serde_json::json!({"w0999": 999, "w0007": 7}));
        let c: Value = serde_json::from_str(&compact_clock(&clock, largest, None)).expect("json");
        assert_eq!(c, serde_json::json!({"w0999": 999}));
    }

    #[tokio::test]
    async fn a_writers_echo_is_its_own_reply_and_never_closes_it() {
        let (hub, _flushes) = Hub::new(
            Arc::new(Persistence::in_memory()),
            Arc::new(LocalPubSub::single_instance()),
            Arc::new(Metrics::default()),
            HubSettings {
                batch_delay: Duration::ZERO,
                instance_id: "test".into(),
                channels: Channels::new("synckit:"),
                max_cached_documents: 10,
                max_clock_entries: 10,
                text_limits: crate::text::Limits::default(),
                clock: crate::clock::SystemClock::shared(),
            },
        );
        let entry = hub.open("d").await.expect("open");
        // Neither outbox is drained: the writer and a subscriber that does not read.
        let (writer, _w) = Peer::new(1);
        let (reader, _r) = Peer::new(2);
        hub.subscribe(&entry, &writer);
        hub.subscribe(&entry, &reader);
        for i in 0..super::super::peer::DEFAULT_BROADCAST_BUDGET + 10 {
            let applied = hub.apply(
                &entry,
                Changes {
                    fields: vec![FieldWrite {
                        field: format!("f{i}"),
                        value: Value::from(i),
                        writer: "w".into(),
                    }],
                    origin: Some(writer.conn_id),
                    ..Changes::default()
                },
                0,
            );
            drop(applied);
        }
        assert!(
            !writer.overflowed().is_cancelled(),
            "the writer's echoes are its own replies"
        );
        assert!(writer.own_backlogged(), "so its socket stops being read");
        assert!(
            reader.overflowed().is_cancelled(),
            "a subscriber that does not read is closed"
        );
    }

    #[tokio::test]
    async fn a_full_write_queue_refuses_before_applying() {
        let storage = Persistence::new(
            Arc::new(crate::storage::MemoryStorage::new()),
            crate::storage::PersistenceSettings {
                max_backlog: 1,
                ..Default::default()
            },
        );
        let hub = hub_on(storage, 10);
        let entry = hub.open("d").await.expect("open");
        let write = |field: &str| Changes {
            fields: vec![FieldWrite {
                field: field.into(),
                value: Value::from(1),
                writer: "w".into(),
            }],
            ..Changes::default()
        };
        // No writer task runs, so the first write stays queued and fills the queue.
        let first = hub.apply(&entry, write("a"), 0);
        let second = hub.apply(&entry, write("b"), 0);
        assert!(matches!(
            second.ticket.wait().await,
            Err(StorageError::BacklogFull(1))
        ));
        let snap = hub.snapshot(&entry);
        assert!(snap.state.contains_key("a"));
        assert!(
            !snap.state.contains_key("b"),
            "a refused write is not applied"
        );
        drop(first);
    }
}
