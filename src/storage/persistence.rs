//! The sync path's way into storage: a bounded write-behind queue with group commit.
//!
//! Writes are submitted under their document's lock, so the queue holds them in apply
//! order. The queue has one lane per writer (`writers`, `SYNCKIT_PERSIST_WRITERS`) and
//! a document always lands in the same lane (by a hash of its id): each writer task
//! takes everything queued in its lane (up to a group size) and commits it as one
//! transaction, so several groups are in flight at once while one document's writes
//! still commit one group after another, in apply order. A store that commits
//! without I/O (memory) takes a write as it is submitted instead, when nothing of its
//! document is queued or in flight. Each write's
//! [`PersistTicket`] resolves when the transaction holding it commits, so acks mean
//! "durable". While the backend is unreachable the group is
//! retried with exponential backoff and new writes keep queueing — applied in memory
//! and broadcast, not yet acknowledged — until the backlog limit, past which a new
//! write is refused with [`StorageError::BacklogFull`] instead of being dropped. A
//! write the backend rejects outright (not a connection problem) fails alone: the
//! group is retried one write at a time so one bad row cannot wedge the queue.
//!
//! Session rows are write-behind too (no connection waits on the database to open
//! or close): the queue remembers which rows changed and writes them in one
//! transaction per short window. It holds at most `session_queue_max` changed rows;
//! past that a change is dropped and counted, and — as after any failed write —
//! the next successful write reconciles every row of this instance with the
//! sessions open now. A background prober (`probe_interval`, `probe_timeout`) keeps
//! the reachability that health and readiness report, so probes never wait on the
//! database and an outage shows within about one interval plus one timeout.

use crate::hash::{FastMap, FastSet};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    DocumentWrite, PersistTicket, SessionBatch, SessionRecord, StorageAdapter, StorageError,
    StoredDocument,
};

/// Session changes arriving within this window are written together.
const SESSION_BATCH_WINDOW: Duration = Duration::from_millis(50);

/// The last session write at shutdown gets this long (the database may be gone).
const SESSION_FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Tunables of the queue.
#[derive(Debug, Clone)]
pub struct PersistenceSettings {
    /// Writes held (queued or in flight) before new ones are refused.
    pub max_backlog: usize,
    /// Writes per transaction.
    pub max_group: usize,
    /// Writer tasks, each committing its own lane's groups: how many transactions can
    /// be in flight at once (docs/storage.md §3.6).
    pub writers: usize,
    /// Let a store that commits without I/O (memory) take a write as it is
    /// submitted ([`Persistence::submit`]); off, every write goes through the queue
    /// (what tests of the queue itself want).
    pub commit_at_once: bool,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often batched `last_seen` bumps are written.
    pub session_touch_interval: Duration,
    /// Changed session rows held for writing; past this, changes are dropped
    /// (counted) and repaired by the next reconciliation.
    pub session_queue_max: usize,
    /// The id prefix of this instance's session rows (`<instance id>:`), for the
    /// reconciliation; empty disables its deletes.
    pub session_prefix: String,
    /// How often the background prober checks that storage answers.
    pub probe_interval: Duration,
    /// A probe not answered within this counts as unreachable.
    pub probe_timeout: Duration,
}

/// Default of [`PersistenceSettings::max_backlog`] (`SYNCKIT_WRITE_QUEUE_MAX`).
pub(crate) const DEFAULT_MAX_BACKLOG: usize = 100_000;
/// Default of [`PersistenceSettings::session_queue_max`] (`SYNCKIT_SESSION_QUEUE_MAX`).
pub(crate) const DEFAULT_SESSION_QUEUE_MAX: usize = 10_000;
/// Default of [`PersistenceSettings::writers`] (`SYNCKIT_PERSIST_WRITERS`).
pub(crate) const DEFAULT_WRITERS: usize = 4;
/// Upper bound of [`PersistenceSettings::writers`]: each writer holds a pooled
/// connection while it commits, and the pool must keep some for loads and sessions.
pub(crate) const MAX_WRITERS: usize = 64;

impl Default for PersistenceSettings {
    fn default() -> PersistenceSettings {
        PersistenceSettings {
            max_backlog: DEFAULT_MAX_BACKLOG,
            max_group: 1_000,
            writers: DEFAULT_WRITERS,
            commit_at_once: true,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            session_touch_interval: Duration::from_secs(30),
            session_queue_max: DEFAULT_SESSION_QUEUE_MAX,
            session_prefix: String::new(),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

struct Queued {
    write: DocumentWrite,
    done: oneshot::Sender<Result<(), StorageError>>,
}

struct Queue {
    /// One per writer; a document's writes are always in the same lane, in apply
    /// order, which is what keeps them committing in order.
    lanes: Vec<VecDeque<Queued>>,
    /// Writes in all lanes.
    queued: usize,
    /// Writes taken by the writers and not yet resolved.
    in_flight: usize,
    /// Unpersisted writes per document: such a document must not be evicted and
    /// reloaded, or the reload would miss them.
    per_document: FastMap<Arc<str>, usize>,
}

impl Queue {
    fn new(lanes: usize) -> Queue {
        Queue {
            lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            queued: 0,
            in_flight: 0,
            per_document: FastMap::default(),
        }
    }

    fn backlog(&self) -> usize {
        self.queued + self.in_flight
    }
}

/// The lane (writer) of a document. A fixed seed keeps the choice stable for the
/// life of the process, which is all ordering needs (a client choosing colliding
/// ids only puts its documents in one lane).
fn lane_of(document_id: &str, lanes: usize) -> usize {
    use std::hash::BuildHasher;
    if lanes <= 1 {
        return 0;
    }
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(document_id);
    (hash % lanes as u64) as usize
}

/// Session rows as this instance wants them: the write-behind state.
#[derive(Default)]
struct SessionRows {
    /// Sessions open now: the rows that should exist (shared with the batches that
    /// write them).
    live: FastMap<String, Arc<SessionRecord>>,
    /// Rows changed since the last write: upserted when live, deleted otherwise.
    dirty: FastSet<String>,
    /// A change was dropped or a write failed: the next write rewrites every live
    /// row and deletes every other row of this instance.
    reconcile: bool,
}

/// Counters for stats and `/metrics`.
#[derive(Debug, Default)]
pub struct PersistenceCounters {
    pub committed_writes: AtomicU64,
    pub committed_groups: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub rejected_writes: AtomicU64,
    pub refused_full: AtomicU64,
    /// Session row changes dropped because the session queue was full.
    pub sessions_dropped: AtomicU64,
}

pub struct Persistence {
    adapter: Arc<dyn StorageAdapter>,
    settings: PersistenceSettings,
    queue: Mutex<Queue>,
    /// One per lane: a submit wakes only its document's writer.
    wakes: Vec<Notify>,
    idle: Notify,
    degraded: AtomicBool,
    /// How many times storage came back after being degraded: documents opened
    /// from memory meanwhile are read back then (`fanout::resync`).
    recoveries: watch::Sender<u64>,
    /// Set once `connect` succeeded (schema migrated or validated).
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    touched: Mutex<FastSet<String>>,
    sessions: Mutex<SessionRows>,
    session_wake: Notify,
    pub counters: PersistenceCounters,
}

impl Persistence {
    pub fn new(adapter: Arc<dyn StorageAdapter>, mut settings: PersistenceSettings) -> Persistence {
        settings.writers = settings.writers.clamp(1, MAX_WRITERS);
        let lanes = settings.writers;
        Persistence {
            adapter,
            settings,
            queue: Mutex::new(Queue::new(lanes)),
            wakes: (0..lanes).map(|_| Notify::new()).collect(),
            idle: Notify::new(),
            degraded: AtomicBool::new(false),
            recoveries: watch::Sender::new(0),
            ready: AtomicBool::new(false),
            last_error: Mutex::new(None),
            touched: Mutex::new(FastSet::default()),
            sessions: Mutex::new(SessionRows::default()),
            session_wake: Notify::new(),
            counters: PersistenceCounters::default(),
        }
    }

    /// Memory storage with default settings, for unit tests.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Persistence {
        Persistence::new(
            Arc::new(super::MemoryStorage::new()),
            PersistenceSettings::default(),
        )
    }

    pub fn adapter(&self) -> &Arc<dyn StorageAdapter> {
        &self.adapter
    }

    pub fn kind(&self) -> &'static str {
        self.adapter.kind()
    }

    /// Whether other instances (and later runs) read what is stored here: what
    /// read-backs after an outage, or on first interest, need.
    pub fn is_shared(&self) -> bool {
        self.adapter.is_shared()
    }

    /// Whether what is stored survives a restart (health's `memory-only` when not).
    pub fn is_durable(&self) -> bool {
        self.adapter.is_durable()
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes accepted but not yet durable.
    pub fn backlog(&self) -> usize {
        self.queue().backlog()
    }

    /// Whether new writes would be refused.
    pub fn is_full(&self) -> bool {
        self.backlog() >= self.settings.max_backlog
    }

    /// Whether a document has writes not yet durable.
    pub fn has_pending(&self, document_id: &str) -> bool {
        self.queue().per_document.contains_key(document_id)
    }

    /// True while the backend is failing (since the last failed attempt, until one
    /// succeeds).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queue a write; never waits on I/O. Call under the document lock so writes
    /// queue in apply order.
    ///
    /// A store that commits without I/O (memory) takes the write here instead, when
    /// storage is healthy, none of the document's writes is queued or in flight (so
    /// the document's writes still commit in order) and the write carries no text
    /// state: its ticket is decided at once and no writer task wakes for it. A text
    /// state may be tens of megabytes, and the store copies it; that copy is made by
    /// a writer task, not under the document's lock and the queue's. If the commit
    /// fails, the write is queued and retried like any other, and storage is marked
    /// degraded as a writer task's failure would mark it.
    pub fn submit(&self, write: DocumentWrite) -> PersistTicket {
        let mut queue = self.queue();
        let backlog = queue.backlog();
        if backlog >= self.settings.max_backlog {
            self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return PersistTicket::done(Err(StorageError::BacklogFull(backlog)));
        }
        let mut failed_at_once = None;
        if self.settings.commit_at_once
            && write.text.is_none()
            && !self.is_degraded()
            && !queue.per_document.contains_key(&*write.document_id)
        {
            // Under the queue lock, so no write of the document can be queued
            // meanwhile; the work is one write's field and clock edits, bounded by
            // the message size limit.
            match self
                .adapter
                .write_batch_at_once(std::slice::from_ref(&write))
            {
                Some(Ok(())) => {
                    self.counters
                        .committed_writes
                        .fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .committed_groups
                        .fetch_add(1, Ordering::Relaxed);
                    return PersistTicket::done(Ok(()));
                }
                Some(Err(e)) => failed_at_once = Some(e),
                None => {}
            }
        }
        let (done, rx) = oneshot::channel();
        *queue
            .per_document
            .entry(write.document_id.clone())
            .or_default() += 1;
        let lane = lane_of(&write.document_id, self.settings.writers);
        queue.lanes[lane].push_back(Queued { write, done });
        queue.queued += 1;
        drop(queue);
        self.wakes[lane].notify_one();
        if let Some(e) = failed_at_once {
            // After the queue lock: marking storage degraded reads the backlog.
            self.observe(&Err::<(), _>(e));
        }
        PersistTicket::waiting(rx)
    }

    pub async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError> {
        let mut result = self.adapter.load_document(id).await;
        if !self.ready.load(Ordering::Relaxed) {
            // Before the first successful connect the schema may not exist yet: any
            // failure means "not available yet", not "this document is broken".
            result = result.map_err(|e| match e {
                StorageError::Query(msg) => StorageError::Unavailable(msg),
                other => other,
            });
        }
        self.observe(&result);
        result
    }

    /// Connect now (migrating or validating the schema); `run` does the same with
    /// retries. Callers that want a fail-fast start use this first.
    pub async fn connect(&self) -> Result<(), StorageError> {
        let result = self.adapter.connect().await;
        match &result {
            Ok(()) => {
                self.ready.store(true, Ordering::Relaxed);
                self.set_healthy();
            }
            Err(e) => self.set_degraded(e),
        }
        result
    }

    fn session_rows(&self) -> MutexGuard<'_, SessionRows> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a session row (insert, or refresh on a re-authentication); written
    /// behind, never waited for.
    pub fn save_session(&self, session: SessionRecord) {
        let id = session.id.clone();
        let mut rows = self.session_rows();
        rows.live.insert(id.clone(), Arc::new(session));
        self.mark_session(&mut rows, id);
    }

    /// Remember to bump this session's `last_seen`; written in one statement per
    /// interval for all sessions touched meanwhile.
    pub fn touch_session(&self, id: &str) {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
    }

    /// Drop a session row; written behind, never waited for.
    pub fn delete_session(&self, id: &str) {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut rows = self.session_rows();
        rows.live.remove(id);
        self.mark_session(&mut rows, id.to_owned());
    }

    fn mark_session(&self, rows: &mut SessionRows, id: String) {
        if rows.dirty.len() < self.settings.session_queue_max || rows.dirty.contains(&id) {
            rows.dirty.insert(id);
        } else {
            // The live set still knows the truth: the reconciliation repairs it.
            rows.reconcile = true;
            let dropped = self
                .counters
                .sessions_dropped
                .fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(
                    dropped = dropped + 1,
                    max = self.settings.session_queue_max,
                    "session queue full: session row changes dropped until the next reconciliation"
                );
            }
        }
        self.session_wake.notify_one();
    }

    /// Session row changes waiting to be written.
    pub fn session_queue_len(&self) -> usize {
        self.session_rows().dirty.len()
    }

    /// Take what the next session write must do.
    fn take_session_batch(&self) -> SessionBatch {
        let mut rows = self.session_rows();
        let dirty = std::mem::take(&mut rows.dirty);
        let reconcile = std::mem::take(&mut rows.reconcile);
        let deletes = dirty
            .iter()
            .filter(|id| !rows.live.contains_key(*id))
            .cloned()
            .collect();
        let upserts = if reconcile {
            rows.live.values().cloned().collect()
        } else {
            dirty
                .iter()
                .filter_map(|id| rows.live.get(id).cloned())
                .collect()
        };
        let prefix = &self.settings.session_prefix;
        SessionBatch {
            upserts,
            deletes,
            retain_prefix: (reconcile && !prefix.is_empty()).then(|| prefix.clone()),
        }
    }

    /// Write the changed session rows; false when storage could not be reached (the
    /// next write then reconciles).
    async fn flush_sessions(&self) -> bool {
        let batch = self.take_session_batch();
        if batch.is_empty() {
            return true;
        }
        match self.adapter.write_sessions(&batch).await {
            Ok(()) => true,
            Err(e) if e.is_transient() => {
                self.session_rows().reconcile = true;
                tracing::debug!(error = %e, "session rows not written yet: reconciling when storage answers");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = batch.upserts.len() + batch.deletes.len(), "session rows rejected by storage");
                true
            }
        }
    }

    /// The session writer: batches changes per window, retries (reconciling) while
    /// storage is away, bumps `last_seen` per touch interval, and writes what is
    /// left when `stop` is cancelled.
    async fn run_sessions(&self, stop: &CancellationToken) {
        let mut touches = tokio::time::interval(self.settings.session_touch_interval);
        touches.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = self.settings.retry_min;
        loop {
            tokio::select! {
                _ = self.session_wake.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(SESSION_BATCH_WINDOW) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                _ = touches.tick() => {
                    self.flush_touches().await;
                    continue;
                }
                _ = stop.cancelled() => {
                    let last = async {
                        self.flush_sessions().await;
                        self.flush_touches().await;
                    };
                    let _ = tokio::time::timeout(SESSION_FINAL_FLUSH, last).await;
                    return;
                }
            }
            if self.flush_sessions().await {
                backoff = self.settings.retry_min;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => {}
            }
            backoff = (backoff * 2).min(self.settings.retry_max);
            self.session_wake.notify_one();
        }
    }

    /// The prober: checks storage every `probe_interval` with `probe_timeout`, so
    /// [`Persistence::is_degraded`] turns true soon after an outage starts (not only
    /// once a write fails) and health answers from memory.
    async fn run_prober(&self, stop: &CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let timeout = self.settings.probe_timeout;
            let probe = tokio::time::timeout(timeout, self.adapter.health_check()).await;
            match probe.unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                )))
            }) {
                Ok(()) if self.backlog() == 0 => self.set_healthy(),
                Ok(()) => {}
                Err(e) if e.is_transient() => self.set_degraded(&e),
                Err(e) => tracing::debug!(error = %e, "storage probe failed"),
            }
        }
    }

    /// Wait until every submitted write is durable or `budget` runs out; returns
    /// whether the backlog was drained.
    pub async fn drain(&self, budget: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let idle = self.idle.notified();
            if self.backlog() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.backlog() == 0;
            }
        }
    }

    fn observe<T>(&self, result: &Result<T, StorageError>) {
        match result {
            Ok(_) => {}
            Err(e) if e.is_transient() => self.set_degraded(e),
            Err(_) => {}
        }
    }

    fn set_degraded(&self, error: &StorageError) {
        self.counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                backend = self.kind(),
                error = %error,
                backlog = self.backlog(),
                "storage unreachable: serving from memory, writes queue until it returns"
            );
        }
    }

    fn set_healthy(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(backend = self.kind(), "storage reachable again");
            self.recoveries.send_modify(|n| *n += 1);
        }
    }

    /// Changes each time storage comes back after an outage.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    /// The writers: connect (retrying), then commit queued writes in groups, one
    /// writer per lane, until `stop` is cancelled and the queue is empty. Also writes
    /// batched session touches. Run it as one task per process.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // The prober stops with the writers: nothing asks for health after that.
        let prober_stop = CancellationToken::new();
        let writes = async {
            self.connect_with_retry(&stop).await;
            futures_util::future::join_all(
                (0..self.settings.writers).map(|lane| self.run_writes(lane, &stop)),
            )
            .await;
            prober_stop.cancel();
        };
        tokio::join!(
            writes,
            self.run_sessions(&stop),
            self.run_prober(&prober_stop)
        );
    }

    /// One lane's writer. Its groups commit one after another, so a document (which
    /// never changes lanes) has at most one transaction in flight.
    async fn run_writes(&self, lane: usize, stop: &CancellationToken) {
        loop {
            let group = self.take_group(lane);
            if group.is_empty() {
                self.idle.notify_waiters();
                tokio::select! {
                    _ = self.wakes[lane].notified() => continue,
                    _ = stop.cancelled() => {
                        if self.queue().lanes[lane].is_empty() {
                            return;
                        }
                        continue;
                    }
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn connect_with_retry(&self, stop: &CancellationToken) {
        if self.ready.load(Ordering::Relaxed) {
            return;
        }
        let mut backoff = self.settings.retry_min;
        loop {
            match self.connect().await {
                Ok(()) => return,
                Err(e) if !e.is_transient() => {
                    // A schema problem found after start (validation) will not fix
                    // itself; keep retrying so the operator can migrate without a
                    // restart, but say exactly what is wrong.
                    tracing::error!(error = %e, "storage is not usable yet");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.settings.retry_max);
        }
    }

    fn take_group(&self, lane: usize) -> Vec<Queued> {
        let mut queue = self.queue();
        let n = queue.lanes[lane].len().min(self.settings.max_group);
        let group: Vec<Queued> = queue.lanes[lane].drain(..n).collect();
        queue.queued -= n;
        queue.in_flight += n;
        group
    }

    async fn commit_group(&self, group: Vec<Queued>) {
        let (writes, senders): (Vec<DocumentWrite>, Vec<_>) =
            group.into_iter().map(|q| (q.write, q.done)).unzip();
        let outcomes: Vec<Result<(), StorageError>> = match self.commit(&writes).await {
            Ok(()) => writes.iter().map(|_| Ok(())).collect(),
            Err(e) if writes.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in &writes {
                    outcomes.push(self.commit(std::slice::from_ref(write)).await);
                }
                outcomes
            }
        };
        let mut queue = self.queue();
        queue.in_flight -= writes.len();
        for ((write, done), outcome) in writes.iter().zip(senders).zip(outcomes) {
            if let Some(n) = queue.per_document.get_mut(&write.document_id) {
                *n -= 1;
                if *n == 0 {
                    queue.per_document.remove(&write.document_id);
                }
            }
            match &outcome {
                Ok(()) => {
                    self.counters
                        .committed_writes
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters
                        .rejected_writes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(document_id = %write.document_id, error = %e, "write rejected by storage");
                }
            }
            let _ = done.send(outcome);
        }
        drop(queue);
        self.counters
            .committed_groups
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Commit writes in one transaction, retrying while the backend is unreachable;
    /// returns only success or a permanent error.
    async fn commit(&self, writes: &[DocumentWrite]) -> Result<(), StorageError> {
        let mut backoff = self.settings.retry_min;
        loop {
            match self.adapter.write_batch(writes).await {
                Ok(()) => {
                    self.set_healthy();
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    self.set_degraded(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn flush_touches(&self) {
        let ids: Vec<String> = {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            touched.drain().collect()
        };
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.adapter.touch_sessions(&ids).await {
            tracing::debug!(error = %e, sessions = ids.len(), "could not bump session last_seen");
        }
    }

    /// Summary for `/stats` and readiness.
    /// The persistence part of `/stats` (`failures` is the sync path's, added there).
    pub fn status(&self) -> crate::admin_api::stats::PersistenceStats {
        let load = |c: &AtomicU64| Some(c.load(Ordering::Relaxed));
        crate::admin_api::stats::PersistenceStats {
            backend: Some(self.kind().to_owned()),
            degraded: Some(self.is_degraded()),
            backlog: Some(self.backlog() as u64),
            max_backlog: Some(self.settings.max_backlog as u64),
            last_error: self.last_error(),
            committed_writes: load(&self.counters.committed_writes),
            failed_attempts: load(&self.counters.failed_attempts),
            rejected_writes: load(&self.counters.rejected_writes),
            refused_full: load(&self.counters.refused_full),
            session_queue: Some(self.session_queue_len() as u64),
            sessions_dropped: load(&self.counters.sessions_dropped),
            failures: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FieldChange, MemoryStorage, SyncStore};
    use serde_json::json;

    fn write(doc: &str, tick: u64) -> DocumentWrite {
        DocumentWrite {
            document_id: Arc::from(doc),
            changes: vec![FieldChange {
                field: "x".into(),
                value: Some(json!(tick)),
                writer: "w".into(),
                clock_value: tick,
            }],
            clock: vec![("w".into(), tick)],
            text: None,
        }
    }

    /// The field `x` of `doc` as stored.
    async fn stored_x(storage: &MemoryStorage, doc: &str) -> serde_json::Value {
        let stored = storage
            .load_document(doc)
            .await
            .expect("load")
            .expect("stored");
        stored.fields["x"].clone()
    }

    /// Cancels the writer tasks and waits, boundedly, for them to drain and stop.
    async fn stop_writers(stop: CancellationToken, run: tokio::task::JoinHandle<()>) {
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the writers stop once cancelled and drained")
            .expect("run task");
    }

    #[test]
    fn a_document_keeps_its_lane_and_documents_spread_over_all_lanes() {
        for lanes in [1, 2, 4, 7] {
            let mut per_lane = vec![0usize; lanes];
            for i in 0..1_000 {
                let doc = format!("doc-{i}");
                let lane = lane_of(&doc, lanes);
                assert_eq!(lane, lane_of(&doc, lanes));
                per_lane[lane] += 1;
            }
            assert!(
                per_lane.iter().all(|&n| n > 1_000 / lanes / 2),
                "{lanes} lanes: {per_lane:?}"
            );
        }
    }

    #[tokio::test]
    async fn several_writers_commit_every_write_and_stop_when_drained() {
        let storage = Arc::new(MemoryStorage::new());
        let settings = PersistenceSettings {
            writers: 4,
            max_group: 7,
            commit_at_once: false,
            ..PersistenceSettings::default()
        };
        let persistence = Arc::new(Persistence::new(storage.clone(), settings));
        let stop = CancellationToken::new();
        let run = tokio::spawn(persistence.clone().run(stop.clone()));
        let mut tickets = Vec::new();
        for tick in 1..=200 {
            for d in 0..10 {
                tickets.push(persistence.submit(write(&format!("d{d}"), tick)));
            }
        }
        for ticket in tickets {
            ticket.wait().await.expect("committed");
        }
        for d in 0..10 {
            let x = stored_x(&storage, &format!("d{d}")).await;
            assert_eq!(x, json!(200), "d{d} holds its last write");
        }
        assert_eq!(persistence.backlog(), 0);
        assert!(!persistence.has_pending("d0"));
        let counters = &persistence.counters;
        assert_eq!(counters.committed_writes.load(Ordering::Relaxed), 2_000);
        assert!(counters.committed_groups.load(Ordering::Relaxed) >= 2_000 / 7);
        stop_writers(stop, run).await;
    }

    #[tokio::test]
    async fn a_memory_write_is_committed_as_it_is_submitted() {
        let storage = Arc::new(MemoryStorage::new());
        let persistence = Persistence::new(storage.clone(), PersistenceSettings::default());
        // No writer task runs: the write is decided at submission or not at all.
        let ticket = persistence.submit(write("d", 1));
        assert!(matches!(ticket.ready(), Some(Ok(()))));
        assert_eq!(stored_x(&storage, "d").await, json!(1));
        assert_eq!(persistence.backlog(), 0);
        assert_eq!(
            persistence
                .counters
                .committed_writes
                .load(Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn a_write_behind_a_queued_one_of_its_document_waits_its_turn() {
        let storage = Arc::new(MemoryStorage::new());
        let persistence = Arc::new(Persistence::new(
            storage.clone(),
            PersistenceSettings::default(),
        ));
        storage.set_reachable(false);
        let first = persistence.submit(write("d", 1));
        assert!(
            first.ready().is_none(),
            "an unreachable store queues the write"
        );
        assert!(persistence.is_degraded(), "and the failure is recorded");
        assert_eq!(
            persistence.counters.failed_attempts.load(Ordering::Relaxed),
            1
        );
        storage.set_reachable(true);
        // As the writer task would on its next commit (it does not run yet): with
        // storage healthy, only d's own queued write holds d's next one back.
        persistence.set_healthy();
        let second = persistence.submit(write("d", 2));
        assert!(
            second.ready().is_none(),
            "d's second write overtook its first"
        );
        let other = persistence.submit(write("e", 1));
        assert!(
            matches!(other.ready(), Some(Ok(()))),
            "e has nothing queued"
        );

        let stop = CancellationToken::new();
        let run = tokio::spawn(persistence.clone().run(stop.clone()));
        first.wait().await.expect("first committed");
        second.wait().await.expect("second committed");
        assert_eq!(
            stored_x(&storage, "d").await,
            json!(2),
            "d's writes committed in order"
        );
        stop_writers(stop, run).await;
    }

    #[tokio::test]
    async fn a_text_write_goes_through_the_queue() {
        let storage = Arc::new(MemoryStorage::new());
        let persistence = Persistence::new(storage.clone(), PersistenceSettings::default());
        let mut text = write("d", 1);
        text.text = Some((Arc::new("{}".to_owned()), 1.0));
        let ticket = persistence.submit(text);
        assert!(
            ticket.ready().is_none(),
            "its state is copied by a writer task, not under the submitter's locks"
        );
        assert_eq!(persistence.backlog(), 1);
    }

    #[test]
    fn the_writer_count_is_bounded() {
        let make = |writers| {
            Persistence::new(
                Arc::new(MemoryStorage::new()),
                PersistenceSettings {
                    writers,
                    ..PersistenceSettings::default()
                },
            )
        };
        assert_eq!(make(0).wakes.len(), 1);
        assert_eq!(make(10_000).wakes.len(), MAX_WRITERS);
    }
}
