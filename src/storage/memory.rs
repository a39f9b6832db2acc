//! In-memory storage: the embedded default and the reference the PostgreSQL adapter
//! is held to. It implements every storage trait (the
//! [`StorageAdapter`](super::StorageAdapter) union and [`CompatStore`]) with the
//! semantics of the canonical schema (docs/storage.md §1–§4) — `version` 1 on insert
//! and +1 per update as the triggers do, cascading deletes, TS-readable
//! `documents.state`, batched cleanup — so the shared conformance suite passes
//! unchanged against both. Data survives hub eviction, not restarts.
//!
//! Everything sits behind one `std::sync::Mutex`, taken for short, synchronous
//! sections only (never across an `.await`): a `write_batch` is atomic because it
//! runs under one lock, and cleanup releases the lock between batches so the sync
//! path is never held up for long.

use crate::hash::{FastMap, FastSet};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
#[cfg(any(test, feature = "test-util"))]
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::shape::{clock_json, cutoff, from_db, rebuild_fields, snapshot_size, text_state, to_db};
use super::{AdminStore, MaintenanceStore, SyncStore};
use super::{
    CleanupCounts, CleanupOptions, DeltaOperation, DeltaRow, DocumentRow, DocumentWrite,
    NewSnapshot, RunOutcome, RunRecord, SessionBatch, SessionMetadata, SessionRecord, SnapshotRow,
    StorageError, StoredDocument,
};
#[cfg(any(test, feature = "test-util"))]
use super::{CompatStore, NewDelta, SessionRow};

/// Delta rows kept per document; older ones are dropped as new ones arrive. Deltas
/// are an audit trail nothing in the embedded server reads back (documents load
/// from `state`), and without PostgreSQL's cleanup job a long-running embedded
/// server would otherwise grow without bound on every field write. 10 000 keeps a
/// useful recent history at a few MB per busy document.
pub(crate) const MAX_DELTAS_PER_DOCUMENT: usize = 10_000;

#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    /// Simulated outage (tests): see `MemoryStorage::set_reachable`.
    unreachable: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    documents: FastMap<String, DocumentRow>,
    clocks: FastMap<String, BTreeMap<String, u64>>,
    /// Per document, in insertion order (which is timestamp order).
    deltas: FastMap<String, VecDeque<DeltaRow>>,
    sessions: FastMap<String, StoredSession>,
    snapshots: FastMap<Uuid, SnapshotRow>,
    /// Last delta timestamp handed out: delta timestamps are strictly increasing,
    /// like `clock_timestamp()` per row in PostgreSQL, so rows replay in apply order.
    last_delta_at: Option<DateTime<Utc>>,
    /// Maintenance runs, newest last, at most [`MAX_RUNS_KEPT`].
    runs: VecDeque<RunRecord>,
    next_run_id: i64,
}

/// A stored session row: the record as the sync path handed it over — shared with
/// the write-behind table, not copied, since every open connection has one
/// (BENCHMARKS.md, memory per idle connection) — and the two timestamps.
struct StoredSession {
    /// `id`, `user_id` and `client_id` as first inserted; `metadata` as last saved.
    record: Arc<SessionRecord>,
    #[cfg(any(test, feature = "test-util"))]
    connected_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

impl StoredSession {
    /// Take `metadata` from `update` and keep the rest, as `ON CONFLICT DO UPDATE`
    /// does; shares `update` when the rest is the same (the sync path's refresh).
    fn set_metadata(&mut self, update: &Arc<SessionRecord>) {
        let same_row =
            self.record.user_id == update.user_id && self.record.client_id == update.client_id;
        self.record = if same_row {
            Arc::clone(update)
        } else {
            Arc::new(SessionRecord {
                metadata: update.metadata.clone(),
                ..SessionRecord::clone(&self.record)
            })
        };
    }

    #[cfg(any(test, feature = "test-util"))]
    fn to_row(&self) -> SessionRow {
        SessionRow {
            id: self.record.id.clone(),
            user_id: self.record.user_id.clone(),
            client_id: self.record.client_id.clone(),
            connected_at: self.connected_at,
            last_seen: self.last_seen,
            metadata: Some(self.record.metadata.to_value()),
        }
    }
}

/// Maintenance runs remembered without a database: a bounded ring.
pub(crate) const MAX_RUNS_KEPT: usize = 200;

/// Now, at PostgreSQL's `timestamptz` precision (microseconds), so rows compare and
/// round-trip the same in both backends.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A clock value as a BIGINT column holds it: saturated at `i64::MAX`, so both
/// backends return the same number for out-of-range input.
fn bigint(value: u64) -> u64 {
    from_db(to_db(value))
}

/// What PostgreSQL reports when a row references a missing document.
fn missing_document(table: &str, document_id: &str) -> StorageError {
    StorageError::Query(format!(
        "insert or update on table \"{table}\" violates foreign key constraint \
         \"{table}_document_id_fkey\": document {document_id:?} does not exist"
    ))
}

/// A non-object `state` (or `fields`) left by another writer counts as empty, as in
/// the PostgreSQL upsert.
fn object_of(value: Option<&Value>) -> Map<String, Value> {
    match value {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    }
}

impl Inner {
    /// Insert (`version` 1) or replace the state (`version` + 1, `updated_at` now),
    /// as `INSERT … ON CONFLICT DO UPDATE` with the canonical triggers does.
    fn upsert_document(&mut self, id: &str, state: Value, at: DateTime<Utc>) -> &DocumentRow {
        // Looked up before the key is copied: nearly every write updates a row.
        if self.documents.contains_key(id) {
            if let Some(row) = self.documents.get_mut(id) {
                row.state = state;
                row.version += 1;
                row.updated_at = at;
            }
        } else {
            self.documents.insert(
                id.to_owned(),
                DocumentRow {
                    id: id.to_owned(),
                    state,
                    version: 1,
                    created_at: at,
                    updated_at: at,
                },
            );
        }
        &self.documents[id]
    }

    /// Insert a session row, or refresh `last_seen` and `metadata` of an existing one
    /// (`INSERT … ON CONFLICT DO UPDATE`).
    fn upsert_session(&mut self, session: &Arc<SessionRecord>, at: DateTime<Utc>) {
        self.sessions
            .entry(session.id.clone())
            .and_modify(|row| {
                // On conflict only `last_seen` and `metadata` change.
                row.last_seen = at;
                row.set_metadata(session);
            })
            .or_insert_with(|| StoredSession {
                record: Arc::clone(session),
                #[cfg(any(test, feature = "test-util"))]
                connected_at: at,
                last_seen: at,
            });
    }

    /// Create an empty field document unless the id exists (clock rows need one).
    #[cfg(any(test, feature = "test-util"))]
    fn ensure_document(&mut self, id: &str, at: DateTime<Utc>) {
        if !self.documents.contains_key(id) {
            self.upsert_document(id, json!({ "id": id, "fields": {} }), at);
        }
    }

    /// A delta row's time: `at` (the write's commit time), or just after the last
    /// row's, so rows keep their order in `timestamp` as on PostgreSQL.
    fn next_delta_time(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        let mut at = at;
        if let Some(last) = self.last_delta_at {
            if at <= last {
                at = last + chrono::Duration::microseconds(1);
            }
        }
        self.last_delta_at = Some(at);
        at
    }

    fn push_delta(&mut self, document_id: &str, row: DeltaRow) {
        update(&mut self.deltas, document_id, |rows| {
            rows.push_back(row);
            while rows.len() > MAX_DELTAS_PER_DOCUMENT {
                rows.pop_front();
            }
        });
    }

    /// A document's deltas oldest first (`timestamp, id`, the PostgreSQL order).
    fn sorted_deltas(&self, document_id: &str) -> Vec<DeltaRow> {
        let mut rows: Vec<DeltaRow> = self
            .deltas
            .get(document_id)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        rows.sort_by_key(|d| (d.timestamp, d.id));
        rows
    }

    /// A document's snapshots newest first (`created_at DESC, id DESC`).
    fn sorted_snapshots(&self, document_id: &str) -> Vec<SnapshotRow> {
        let mut rows: Vec<SnapshotRow> = self
            .snapshots
            .values()
            .filter(|s| s.document_id == document_id)
            .cloned()
            .collect();
        rows.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
        rows
    }

    /// Apply one group of writes exactly as the PostgreSQL group commit does: each
    /// touched document is upserted once per group (one `version` bump), its
    /// `fields` patched in apply order, text keys replaced, clock entries merged by
    /// maximum, and one delta row written per field change.
    fn apply_batch(&mut self, writes: &[DocumentWrite]) {
        let at = now();
        self.patch_documents(writes, at);
        for write in writes {
            self.merge_clock(write);
            self.log_deltas(write, at);
        }
    }

    /// Apply the batch's field changes to each document's state, one upsert per
    /// document. The stored state is taken, patched in place and put back: cloning it
    /// per write would cost O(fields) for every change.
    fn patch_documents(&mut self, writes: &[DocumentWrite], at: DateTime<Utc>) {
        // One write (a group of one, as a writer mostly takes at low rates): no map
        // of states to build for it.
        if let [write] = writes {
            let doc: &str = &write.document_id;
            let mut state = self.take_state(doc);
            patch_state(&mut state, doc, write);
            self.upsert_document(doc, Value::Object(state), at);
            return;
        }
        let mut order: Vec<&str> = Vec::new();
        let mut states: FastMap<&str, Map<String, Value>> = FastMap::default();
        for write in writes {
            let doc: &str = &write.document_id;
            let state = states.entry(doc).or_insert_with(|| {
                order.push(doc);
                self.take_state(doc)
            });
            patch_state(state, doc, write);
        }
        for doc in order {
            if let Some(state) = states.remove(doc) {
                self.upsert_document(doc, Value::Object(state), at);
            }
        }
    }

    /// A document's stored state taken out of its row to be patched (empty when
    /// there is none, or it is not an object), put back by `upsert_document`.
    fn take_state(&mut self, doc: &str) -> Map<String, Value> {
        match self.documents.get_mut(doc).map(|row| row.state.take()) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Merge a write's clock into its document's stored clock (max per writer).
    fn merge_clock(&mut self, write: &DocumentWrite) {
        update(&mut self.clocks, &write.document_id, |clock| {
            for (writer, value) in &write.clock {
                let value = bigint(*value);
                match clock.get_mut(writer) {
                    Some(entry) => *entry = (*entry).max(value),
                    None => {
                        clock.insert(writer.clone(), value);
                    }
                }
            }
        });
    }

    /// One delta-log row per field change of a write committed at `at`.
    fn log_deltas(&mut self, write: &DocumentWrite, at: DateTime<Utc>) {
        let max_clock = write.max_clock_value();
        for change in &write.changes {
            let timestamp = self.next_delta_time(at);
            let operation = if change.value.is_some() {
                DeltaOperation::Set
            } else {
                DeltaOperation::Delete
            };
            self.push_delta(
                &write.document_id,
                DeltaRow {
                    id: Uuid::new_v4(),
                    document_id: write.document_id.to_string(),
                    client_id: change.writer.clone(),
                    operation_type: operation.as_str().to_owned(),
                    field_path: change.field.clone(),
                    value: change.value.clone(),
                    clock_value: bigint(change.clock_value),
                    max_clock_value: Some(bigint(max_clock)),
                    timestamp,
                },
            );
        }
    }
}

/// Change the value under `key`, starting from its default when absent. The key is
/// copied only for a new entry (`entry()` copies it on every write, and nearly every
/// write finds its document's entry).
fn update<V: Default>(map: &mut FastMap<String, V>, key: &str, change: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => change(value),
        None => change(map.entry(key.to_owned()).or_default()),
    }
}

/// One write's changes to a document state (`{"id", "fields", …}`): set or delete each
/// field; a text write also sets the text columns' shape.
fn patch_state(state: &mut Map<String, Value>, doc: &str, write: &DocumentWrite) {
    if !state.get("fields").is_some_and(Value::is_object) {
        state.insert("fields".into(), Value::Object(Map::new()));
    }
    let Some(Value::Object(fields)) = state.get_mut("fields") else {
        return;
    };
    for change in &write.changes {
        match &change.value {
            Some(value) => {
                fields.insert(change.field.clone(), value.clone());
            }
            None => {
                fields.remove(&change.field);
            }
        }
    }
    if state.get("id").and_then(Value::as_str) != Some(doc) {
        state.insert("id".into(), Value::String(doc.to_owned()));
    }
    if let Some((crdt, clock)) = &write.text {
        state.insert("type".into(), json!("text"));
        state.insert("content".into(), json!(""));
        state.insert("crdt".into(), json!(crdt));
        state.insert("clock".into(), json!(clock));
    }
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// The state lock. A panic while it was held cannot leave a map half-edited in
    /// a way later readers trip over (every section is plain map edits), so a
    /// poisoned lock is taken over rather than failing all storage from then on.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulate an outage: while unreachable, the operations the sync path and the
    /// maintenance jobs use (connect, health check, load, write, sessions, cleanup)
    /// fail as `Unavailable`, the way an unreachable database does — so degradation
    /// can be exercised without one (the `test-util` feature). The run history stays readable: it is this
    /// process's own memory.
    #[cfg(any(test, feature = "test-util"))]
    pub fn set_reachable(&self, reachable: bool) {
        self.unreachable
            .store(!reachable, std::sync::atomic::Ordering::SeqCst);
    }

    /// A batch of writes applied under the lock (both ways of writing one).
    fn write_now(&self, writes: &[DocumentWrite]) -> Result<(), StorageError> {
        self.reachable()?;
        if writes.iter().all(DocumentWrite::is_empty) {
            return Ok(());
        }
        self.lock().apply_batch(writes);
        Ok(())
    }

    fn reachable(&self) -> Result<(), StorageError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StorageError::Unavailable(
                "memory storage set unreachable".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Number of stored sessions (for unit tests).
    #[cfg(test)]
    pub(crate) fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Test hook: move the timestamps of `table` rows (`documents`: `created_at`
    /// and `updated_at`; `deltas`: `timestamp`; `sessions`: `last_seen`;
    /// `snapshots`: `created_at`) back by `by` — the row with this id (uuids as
    /// text), or every row when `id` is `None`. Returns how many rows moved. The
    /// conformance suite does the same with an `UPDATE` on PostgreSQL.
    #[cfg(any(test, feature = "test-util"))]
    pub fn age_for_tests(&self, table: &str, id: Option<&str>, by: Duration) -> usize {
        let Ok(by) = chrono::Duration::from_std(by) else {
            return 0;
        };
        let hit = |key: &str| id.is_none_or(|id| id == key);
        let mut inner = self.lock();
        let mut moved = 0;
        match table {
            "documents" => {
                for row in inner.documents.values_mut().filter(|r| hit(&r.id)) {
                    row.created_at -= by;
                    row.updated_at -= by;
                    moved += 1;
                }
            }
            "deltas" => {
                for row in inner.deltas.values_mut().flatten() {
                    if hit(&row.id.to_string()) {
                        row.timestamp -= by;
                        moved += 1;
                    }
                }
            }
            "sessions" => {
                for row in inner.sessions.values_mut().filter(|r| hit(&r.record.id)) {
                    row.last_seen -= by;
                    moved += 1;
                }
            }
            "snapshots" => {
                for row in inner.snapshots.values_mut() {
                    if hit(&row.id.to_string()) {
                        row.created_at -= by;
                        moved += 1;
                    }
                }
            }
            _ => {}
        }
        moved
    }

    /// Remove `victims` in chunks of `batch`, each under its own short lock;
    /// `remove` drops one chunk and returns how many rows it removed (it re-checks
    /// the rule, since a row may have changed between the scan and the chunk).
    async fn remove_in_batches<K, F>(&self, victims: Vec<K>, batch: usize, mut remove: F) -> u64
    where
        K: Send,
        F: FnMut(&mut Inner, &[K]) -> usize + Send,
    {
        let mut total = 0u64;
        for chunk in victims.chunks(batch) {
            let removed = remove(&mut self.lock(), chunk);
            total += removed as u64;
            // Let the sync path in between batches, as PostgreSQL does between
            // statements.
            tokio::task::yield_now().await;
        }
        total
    }

    async fn cleanup_sessions(&self, before: DateTime<Utc>, options: &CleanupOptions) -> u64 {
        let victims: Vec<String> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.last_seen < before)
            .map(|s| s.record.id.clone())
            .collect();
        if options.dry_run {
            return victims.len() as u64;
        }
        self.remove_in_batches(victims, batch_len(options), |inner, chunk| {
            let mut removed = 0;
            for id in chunk {
                // A session touched since the scan is no longer expired.
                if inner.sessions.get(id).is_some_and(|s| s.last_seen < before) {
                    inner.sessions.remove(id);
                    removed += 1;
                }
            }
            removed
        })
        .await
    }

    async fn cleanup_deltas(&self, before: DateTime<Utc>, options: &CleanupOptions) -> u64 {
        let victims: Vec<(String, Uuid)> = self
            .lock()
            .deltas
            .values()
            .flatten()
            .filter(|d| d.timestamp < before)
            .map(|d| (d.document_id.clone(), d.id))
            .collect();
        if options.dry_run {
            return victims.len() as u64;
        }
        self.remove_in_batches(victims, batch_len(options), |inner, chunk| {
            let mut per_doc: FastMap<&str, FastSet<Uuid>> = FastMap::default();
            for (doc, id) in chunk {
                per_doc.entry(doc.as_str()).or_default().insert(*id);
            }
            let mut removed = 0;
            for (doc, ids) in per_doc {
                if let Some(rows) = inner.deltas.get_mut(doc) {
                    let len = rows.len();
                    rows.retain(|d| !(ids.contains(&d.id) && d.timestamp < before));
                    removed += len - rows.len();
                    if rows.is_empty() {
                        inner.deltas.remove(doc);
                    }
                }
            }
            removed
        })
        .await
    }

    async fn cleanup_snapshots(
        &self,
        before: Option<DateTime<Utc>>,
        options: &CleanupOptions,
    ) -> u64 {
        let keep = options
            .max_snapshots_per_document
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let victims: Vec<Uuid> = {
            let inner = self.lock();
            let documents: FastSet<&str> = inner
                .snapshots
                .values()
                .map(|s| s.document_id.as_str())
                .collect();
            let mut victims = Vec::new();
            for doc in documents {
                for (rank, snapshot) in inner.sorted_snapshots(doc).iter().enumerate() {
                    // `rank` is 0-based here; the SQL rank is 1-based.
                    let past_rank = keep.is_some_and(|keep| rank >= keep);
                    let too_old = before.is_some_and(|before| snapshot.created_at < before);
                    if past_rank || too_old {
                        victims.push(snapshot.id);
                    }
                }
            }
            victims
        };
        if options.dry_run {
            return victims.len() as u64;
        }
        self.remove_in_batches(victims, batch_len(options), |inner, chunk| {
            chunk
                .iter()
                .filter(|id| inner.snapshots.remove(id).is_some())
                .count()
        })
        .await
    }
}

/// Batch size as a chunk length; zero would never make progress.
fn batch_len(options: &CleanupOptions) -> usize {
    usize::try_from(options.batch_size.max(1)).unwrap_or(usize::MAX)
}

#[cfg(any(test, feature = "test-util"))]
fn sessions_sorted(mut rows: Vec<SessionRow>) -> Vec<SessionRow> {
    rows.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
    rows
}

fn page<T>(rows: Vec<T>, limit: u32, offset: u32) -> Vec<T> {
    rows.into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
}

#[async_trait]
impl SyncStore for MemoryStorage {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn is_durable(&self) -> bool {
        false
    }

    async fn connect(&self) -> Result<(), StorageError> {
        self.reachable()
    }

    async fn disconnect(&self) {}

    async fn health_check(&self) -> Result<(), StorageError> {
        self.reachable()
    }

    async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError> {
        self.reachable()?;
        let mut inner = self.lock();
        let Some(row) = inner.documents.get(id) else {
            return Ok(None);
        };
        let state = row.state.clone();
        let text = text_state(&state);
        let fields = match state.get("fields") {
            Some(Value::Object(fields)) => fields.clone(),
            _ if text.is_some() => Map::new(),
            _ => {
                // A row without `fields` (C#'s `{}`): rebuild from the deltas and
                // keep the result in `state`, as the PostgreSQL loader does.
                let rows: Vec<(String, String, Option<Value>)> = inner
                    .sorted_deltas(id)
                    .into_iter()
                    .map(|d| (d.operation_type, d.field_path, d.value))
                    .collect();
                if rows.is_empty() {
                    Map::new()
                } else {
                    let fields = rebuild_fields(rows);
                    let mut adopted = object_of(Some(&state));
                    adopted.insert("id".into(), Value::String(id.to_owned()));
                    adopted.insert("fields".into(), Value::Object(fields.clone()));
                    inner.upsert_document(id, Value::Object(adopted), now());
                    fields
                }
            }
        };
        let clock = inner
            .clocks
            .get(id)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        Ok(Some(StoredDocument {
            fields,
            clock,
            text,
        }))
    }

    async fn write_batch(&self, writes: &[DocumentWrite]) -> Result<(), StorageError> {
        self.write_now(writes)
    }

    fn write_batch_at_once(&self, writes: &[DocumentWrite]) -> Option<Result<(), StorageError>> {
        Some(self.write_now(writes))
    }

    async fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StorageError> {
        self.reachable()?;
        // One lock and one clock for the batch, as one transaction (and its
        // `NOW()`) on PostgreSQL.
        let at = now();
        let mut inner = self.lock();
        for session in &batch.upserts {
            inner.upsert_session(session, at);
        }
        for id in &batch.deletes {
            inner.sessions.remove(id);
        }
        if let Some(prefix) = &batch.retain_prefix {
            let keep: FastSet<&str> = batch.upserts.iter().map(|s| s.id.as_str()).collect();
            inner
                .sessions
                .retain(|id, _| !id.starts_with(prefix.as_str()) || keep.contains(id.as_str()));
        }
        Ok(())
    }

    async fn touch_sessions(&self, ids: &[String]) -> Result<(), StorageError> {
        self.reachable()?;
        let at = now();
        let mut inner = self.lock();
        for id in ids {
            if let Some(row) = inner.sessions.get_mut(id) {
                row.last_seen = at;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl MaintenanceStore for MemoryStorage {
    async fn documents_over_delta_threshold(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let mut over: Vec<(String, u64)> = self
            .lock()
            .deltas
            .iter()
            .map(|(doc, rows)| (doc.clone(), rows.len() as u64))
            .filter(|(_, n)| *n > threshold)
            .collect();
        over.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(page(over, limit, 0))
    }

    async fn save_snapshot(&self, snapshot: &NewSnapshot) -> Result<SnapshotRow, StorageError> {
        let mut inner = self.lock();
        if !inner.documents.contains_key(&snapshot.document_id) {
            return Err(missing_document("snapshots", &snapshot.document_id));
        }
        let row = SnapshotRow {
            id: Uuid::new_v4(),
            document_id: snapshot.document_id.clone(),
            state: snapshot.state.clone(),
            version: clock_json(&snapshot.version),
            size_bytes: snapshot_size(&snapshot.state),
            compressed: snapshot.compressed,
            created_at: now(),
        };
        inner.snapshots.insert(row.id, row.clone());
        Ok(row)
    }

    async fn compact(&self, document_id: &str) -> Result<u64, StorageError> {
        let mut inner = self.lock();
        let Some(covered) = inner
            .snapshots
            .values()
            .filter(|s| s.document_id == document_id)
            .map(|s| s.created_at)
            .max()
        else {
            return Ok(0);
        };
        let Some(rows) = inner.deltas.get_mut(document_id) else {
            return Ok(0);
        };
        let len = rows.len();
        rows.retain(|d| d.timestamp > covered);
        Ok((len - rows.len()) as u64)
    }

    async fn cleanup(&self, options: &CleanupOptions) -> Result<CleanupCounts, StorageError> {
        self.reachable()?;
        // One clock for every step, as on PostgreSQL.
        let at = now();
        let mut counts = CleanupCounts::default();
        if let Some(before) = cutoff(at, options.sessions_older_than) {
            counts.sessions_deleted = self.cleanup_sessions(before, options).await;
        }
        if let Some(before) = cutoff(at, options.deltas_older_than) {
            counts.deltas_deleted = self.cleanup_deltas(before, options).await;
        }
        let snapshots_before = cutoff(at, options.snapshots_older_than);
        if snapshots_before.is_some() || options.max_snapshots_per_document.is_some() {
            counts.snapshots_deleted = self.cleanup_snapshots(snapshots_before, options).await;
        }
        Ok(counts)
    }

    async fn claim_run(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        instance_id: &str,
    ) -> Result<Option<i64>, StorageError> {
        let mut inner = self.lock();
        if inner
            .runs
            .iter()
            .any(|r| r.job == job && r.scheduled_for == scheduled_for)
        {
            return Ok(None);
        }
        inner.next_run_id += 1;
        let id = inner.next_run_id;
        inner.runs.push_back(RunRecord {
            id,
            job: job.to_owned(),
            scheduled_for,
            instance_id: instance_id.to_owned(),
            started_at: now(),
            finished_at: None,
            outcome: "running".into(),
            counts: json!({}),
            error: None,
        });
        while inner.runs.len() > MAX_RUNS_KEPT {
            inner.runs.pop_front();
        }
        Ok(Some(id))
    }

    async fn finish_run(&self, id: i64, outcome: &RunOutcome) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if let Some(run) = inner.runs.iter_mut().find(|r| r.id == id) {
            run.finished_at = Some(now());
            run.outcome = outcome.status.label().into();
            run.counts = outcome.counts.clone();
            run.error = outcome.error.clone();
        }
        Ok(())
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let runs: Vec<RunRecord> = self.lock().runs.iter().rev().cloned().collect();
        Ok(page(runs, limit, 0))
    }
}

#[async_trait]
impl AdminStore for MemoryStorage {
    async fn get_document(&self, id: &str) -> Result<Option<DocumentRow>, StorageError> {
        Ok(self.lock().documents.get(id).cloned())
    }

    async fn get_vector_clock(
        &self,
        document_id: &str,
    ) -> Result<BTreeMap<String, u64>, StorageError> {
        Ok(self
            .lock()
            .clocks
            .get(document_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn delete_document(&self, id: &str) -> Result<bool, StorageError> {
        let mut inner = self.lock();
        if inner.documents.remove(id).is_none() {
            return Ok(false);
        }
        // ON DELETE CASCADE.
        inner.clocks.remove(id);
        inner.deltas.remove(id);
        inner.snapshots.retain(|_, s| s.document_id != id);
        Ok(true)
    }

    async fn clear_all(&self) -> Result<u64, StorageError> {
        self.reachable()?;
        let mut inner = self.lock();
        let documents = inner.documents.len() as u64;
        inner.documents.clear();
        inner.clocks.clear();
        inner.deltas.clear();
        inner.snapshots.clear();
        inner.sessions.clear();
        Ok(documents)
    }
}

// Only the tests call these (the server never does); they keep the TS adapter's
// row-level operations, held to the same conformance suite.
#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl CompatStore for MemoryStorage {
    fn is_connected(&self) -> bool {
        self.reachable().is_ok()
    }

    async fn save_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError> {
        Ok(self
            .lock()
            .upsert_document(id, state.clone(), now())
            .clone())
    }

    async fn update_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError> {
        let mut inner = self.lock();
        if !inner.documents.contains_key(id) {
            return Err(StorageError::NotFound {
                kind: "Document",
                id: id.to_owned(),
            });
        }
        Ok(inner.upsert_document(id, state.clone(), now()).clone())
    }

    async fn list_documents(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<DocumentRow>, StorageError> {
        let mut rows: Vec<DocumentRow> = self.lock().documents.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(page(rows, limit, offset))
    }

    async fn update_vector_clock(
        &self,
        document_id: &str,
        client_id: &str,
        value: u64,
    ) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.ensure_document(document_id, now());
        inner
            .clocks
            .entry(document_id.to_owned())
            .or_default()
            .insert(client_id.to_owned(), bigint(value));
        Ok(())
    }

    async fn merge_vector_clock(
        &self,
        document_id: &str,
        clock: &BTreeMap<String, u64>,
    ) -> Result<(), StorageError> {
        if clock.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.ensure_document(document_id, now());
        let stored = inner.clocks.entry(document_id.to_owned()).or_default();
        for (client, value) in clock {
            let value = bigint(*value);
            let entry = stored.entry(client.clone()).or_insert(value);
            *entry = (*entry).max(value);
        }
        Ok(())
    }

    async fn save_delta(&self, delta: &NewDelta) -> Result<DeltaRow, StorageError> {
        let mut inner = self.lock();
        if !inner.documents.contains_key(&delta.document_id) {
            return Err(missing_document("deltas", &delta.document_id));
        }
        let row = DeltaRow {
            id: Uuid::new_v4(),
            document_id: delta.document_id.clone(),
            client_id: delta.client_id.clone(),
            operation_type: delta.operation.as_str().to_owned(),
            field_path: delta.field_path.clone(),
            value: delta.value.clone(),
            clock_value: bigint(delta.clock_value),
            max_clock_value: Some(bigint(delta.max_clock_value.unwrap_or(delta.clock_value))),
            timestamp: inner.next_delta_time(now()),
        };
        inner.push_delta(&delta.document_id, row.clone());
        Ok(row)
    }

    async fn get_deltas(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError> {
        let mut rows = self.lock().sorted_deltas(document_id);
        rows.reverse();
        Ok(page(rows, limit, 0))
    }

    async fn get_deltas_since(
        &self,
        document_id: &str,
        since: u64,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError> {
        let rows = self
            .lock()
            .sorted_deltas(document_id)
            .into_iter()
            .filter(|d| d.max_clock_value.is_some_and(|m| m > since))
            .collect();
        Ok(page(rows, limit, 0))
    }

    async fn save_session(&self, session: &SessionRecord) -> Result<(), StorageError> {
        self.reachable()?;
        self.lock()
            .upsert_session(&Arc::new(session.clone()), now());
        Ok(())
    }

    async fn update_session(
        &self,
        id: &str,
        last_seen: DateTime<Utc>,
        metadata: Option<&Value>,
    ) -> Result<bool, StorageError> {
        let mut inner = self.lock();
        let Some(row) = inner.sessions.get_mut(id) else {
            return Ok(false);
        };
        row.last_seen = last_seen.trunc_subsecs(6);
        if let Some(metadata) = metadata {
            let update = SessionRecord {
                metadata: metadata.into(),
                ..SessionRecord::clone(&row.record)
            };
            row.set_metadata(&Arc::new(update));
        }
        Ok(true)
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StorageError> {
        self.reachable()?;
        Ok(self.lock().sessions.remove(id).is_some())
    }

    async fn get_sessions(&self, user_id: &str) -> Result<Vec<SessionRow>, StorageError> {
        let rows = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.record.user_id == user_id)
            .map(StoredSession::to_row)
            .collect();
        Ok(sessions_sorted(rows))
    }

    async fn list_sessions(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<SessionRow>, StorageError> {
        let rows = self
            .lock()
            .sessions
            .values()
            .map(StoredSession::to_row)
            .collect();
        Ok(page(sessions_sorted(rows), limit, offset))
    }

    async fn get_snapshot(&self, id: Uuid) -> Result<Option<SnapshotRow>, StorageError> {
        Ok(self.lock().snapshots.get(&id).cloned())
    }

    async fn latest_snapshot(
        &self,
        document_id: &str,
    ) -> Result<Option<SnapshotRow>, StorageError> {
        Ok(self.lock().sorted_snapshots(document_id).into_iter().next())
    }

    async fn list_snapshots(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<SnapshotRow>, StorageError> {
        Ok(page(self.lock().sorted_snapshots(document_id), limit, 0))
    }

    async fn delete_snapshot(&self, id: Uuid) -> Result<bool, StorageError> {
        Ok(self.lock().snapshots.remove(&id).is_some())
    }
}

/// Metadata stored with a session row.
pub(crate) fn session_metadata(
    ip: &str,
    user_agent: Option<&str>,
    server_id: &str,
) -> SessionMetadata {
    SessionMetadata::from(
        serde_json::json!({ "ip": ip, "userAgent": user_agent, "serverId": server_id }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FieldChange;
    use std::sync::Arc;

    fn write(field: &str, value: Option<Value>, clock: u64) -> DocumentWrite {
        DocumentWrite {
            document_id: Arc::from("d"),
            changes: vec![FieldChange {
                field: field.into(),
                value,
                writer: "w".into(),
                clock_value: clock,
            }],
            clock: vec![("w".into(), clock)],
            text: None,
        }
    }

    #[tokio::test]
    async fn writes_apply_in_order_and_load_back() {
        let s = MemoryStorage::new();
        assert_eq!(s.load_document("d").await.expect("load"), None);
        s.write_batch(&[write("a", Some(json!(1)), 1)])
            .await
            .expect("ok");
        s.write_batch(&[write("b", Some(json!(2)), 2), write("a", None, 3)])
            .await
            .expect("ok");
        let doc = s.load_document("d").await.expect("load").expect("exists");
        assert_eq!(Value::Object(doc.fields), json!({"b": 2}));
        assert_eq!(doc.clock, vec![("w".to_string(), 3)]);
        let row = s.get_document("d").await.expect("get").expect("exists");
        // One upsert per document per group, as on PostgreSQL.
        assert_eq!(row.version, 2);
    }

    #[tokio::test]
    async fn deltas_are_bounded_per_document() {
        let s = MemoryStorage::new();
        let writes: Vec<DocumentWrite> = (0..MAX_DELTAS_PER_DOCUMENT as u64 + 5)
            .map(|i| write("a", Some(json!(i)), i + 1))
            .collect();
        s.write_batch(&writes).await.expect("ok");
        let newest = s.get_deltas("d", u32::MAX).await.expect("deltas");
        assert_eq!(newest.len(), MAX_DELTAS_PER_DOCUMENT);
        assert_eq!(newest[0].clock_value, MAX_DELTAS_PER_DOCUMENT as u64 + 5);
    }

    #[tokio::test]
    async fn sessions_are_saved_and_deleted() {
        let s = MemoryStorage::new();
        s.save_session(&SessionRecord {
            id: "c1".into(),
            user_id: "u".into(),
            client_id: None,
            metadata: session_metadata("1.2.3.4", None, "srv"),
        })
        .await
        .expect("save");
        assert_eq!(s.session_count(), 1);
        assert!(s.delete_session("c1").await.expect("delete"));
        assert_eq!(s.session_count(), 0);
    }
}
