//! Persistence seam. A backend implements three traits split by their callers —
//! [`SyncStore`] (the sync path), [`MaintenanceStore`] (the maintenance jobs and
//! their run log) and [`AdminStore`] (the admin API and test mode) — whose union is
//! [`StorageAdapter`], what the server holds. [`CompatStore`] carries the rest of the
//! TypeScript adapter's row-level operations, which only the tests use. There are
//! two real backends, memory and PostgreSQL, held to one conformance suite. The sync
//! path reaches storage through [`Persistence`], which queues writes in apply order,
//! commits them in groups, and resolves each write's [`PersistTicket`] only when it is
//! durable — an ack is sent only then.

pub(crate) mod memory;
pub mod migrate;
pub(crate) mod persistence;
pub(crate) mod postgres;
pub(crate) mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub use memory::MemoryStorage;
pub(crate) use persistence::{Persistence, PersistenceSettings};
pub(crate) use postgres::PostgresSettings;
pub use postgres::PostgresStorage;

/// A document as stored: fields, clock entries and text state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredDocument {
    pub fields: Map<String, Value>,
    pub clock: Vec<(String, u64)>,
    /// Fugue JSON and `textClock`.
    pub text: Option<(String, f64)>,
}

/// One field change of a write: `value` `None` is a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub value: Option<Value>,
    pub writer: String,
    pub clock_value: u64,
}

/// Everything one applied inbound message changed in one document: persisted as a
/// unit (one transaction in PostgreSQL).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    pub document_id: Arc<str>,
    pub changes: Vec<FieldChange>,
    /// Clock entries that moved, with their new values.
    pub clock: Vec<(String, u64)>,
    /// The merged text state, when the write touched it (shared with the
    /// document: a large state is not copied into the queue).
    pub text: Option<(crate::text::StateJson, f64)>,
}

impl DocumentWrite {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.clock.is_empty() && self.text.is_none()
    }

    /// The highest tick this write carries (its clock entries and its changes): every
    /// delta row it stores records it as `max_clock_value`, in both backends.
    pub(crate) fn max_clock_value(&self) -> u64 {
        self.clock
            .iter()
            .map(|(_, v)| *v)
            .chain(self.changes.iter().map(|c| c.clock_value))
            .max()
            .unwrap_or(0)
    }
}

/// A row of the `sessions` table (docs/storage.md §2.5).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub client_id: Option<String>,
    pub metadata: SessionMetadata,
}

/// A session row's `metadata` object, kept as its JSON text. Every open connection
/// holds one for its whole life; as a JSON tree it cost ~0.75 KiB (a B-tree node sized
/// for 11 entries plus six strings), as text ~80 B (BENCHMARKS.md, memory per idle
/// connection). It is read back as a tree only by the admin and compatibility reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMetadata(Box<str>);

impl SessionMetadata {
    /// The JSON text, as written to the `metadata` column.
    fn as_json(&self) -> &str {
        &self.0
    }

    /// The object as a JSON tree.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn to_value(&self) -> Value {
        // The text was printed from a `Value`, so it always parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl From<&Value> for SessionMetadata {
    fn from(value: &Value) -> SessionMetadata {
        SessionMetadata(value.to_string().into_boxed_str())
    }
}

impl From<Value> for SessionMetadata {
    fn from(value: Value) -> SessionMetadata {
        SessionMetadata::from(&value)
    }
}

/// Session rows written together by the write-behind queue (one transaction).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionBatch {
    /// Rows to insert, or to refresh (`last_seen`, `metadata`) when they exist.
    /// Shared with the write-behind table (and, in memory, with the store): a batch
    /// copies no row.
    upserts: Vec<Arc<SessionRecord>>,
    /// Rows to delete.
    pub(crate) deletes: Vec<String>,
    /// When set, also delete every row whose id starts with this prefix (one
    /// instance's sessions) and is not among `upserts`: the reconciliation after
    /// an outage or a dropped write.
    retain_prefix: Option<String>,
}

impl SessionBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty() && self.retain_prefix.is_none()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend cannot be reached (or is restarting): worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend rejected the statement: retrying the same thing will not help.
    #[error("storage query failed: {0}")]
    Query(String),
    #[cfg(any(test, feature = "test-util"))]
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },
    #[error("write queue full ({0} writes pending)")]
    BacklogFull(usize),
}

impl StorageError {
    /// Whether the same operation may succeed later (connection lost, server
    /// restarting, pool exhausted).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// A `documents` row (docs/storage.md §1.1); `state` is the stored JSON as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentRow {
    pub id: String,
    pub state: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `set` or `delete` (the `deltas.operation_type` values, docs/storage.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaOperation {
    Set,
    Delete,
}

impl DeltaOperation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeltaOperation::Set => "set",
            DeltaOperation::Delete => "delete",
        }
    }
}

/// A delta to insert (`saveDelta`).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelta {
    pub document_id: String,
    pub client_id: String,
    pub operation: DeltaOperation,
    pub field_path: String,
    /// `None` is SQL `NULL` (deletes); `Some(Value::Null)` is JSON `null`.
    pub value: Option<Value>,
    pub clock_value: u64,
    /// Highest clock entry of the document after this write (for "since" queries);
    /// defaults to `clock_value` when `None`.
    pub max_clock_value: Option<u64>,
}

/// A `deltas` row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaRow {
    pub id: uuid::Uuid,
    pub document_id: String,
    pub client_id: String,
    pub operation_type: String,
    pub field_path: String,
    pub value: Option<Value>,
    pub clock_value: u64,
    pub max_clock_value: Option<u64>,
    pub(crate) timestamp: DateTime<Utc>,
}

/// A `sessions` row.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub client_id: Option<String>,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub metadata: Option<Value>,
}

/// A snapshot to insert (`saveSnapshot`); the document row must exist.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSnapshot {
    pub document_id: String,
    pub state: Value,
    /// The vector clock at snapshot time.
    pub version: BTreeMap<String, u64>,
    pub compressed: bool,
}

/// A `snapshots` row. `version` is kept as stored: TS writes clock values as JSON
/// strings (node-pg returns BIGINT as text), we write numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRow {
    pub id: uuid::Uuid,
    pub document_id: String,
    pub state: Value,
    pub version: Value,
    pub size_bytes: i32,
    pub compressed: bool,
    pub(crate) created_at: DateTime<Utc>,
}

/// What a cleanup removes. `None` disables a step (the CLI maps `0` to `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupOptions {
    /// Sessions whose `last_seen` is older than this.
    pub sessions_older_than: Option<Duration>,
    /// Deltas whose `timestamp` is older than this.
    pub deltas_older_than: Option<Duration>,
    /// Snapshots whose `created_at` is older than this.
    pub snapshots_older_than: Option<Duration>,
    /// Keep at most this many newest snapshots per document.
    pub max_snapshots_per_document: Option<u32>,
    /// Count what would be removed without removing it.
    pub dry_run: bool,
    /// Rows deleted per statement, so no statement holds locks for long.
    pub batch_size: u32,
}

impl Default for CleanupOptions {
    /// TS defaults (docs/storage.md §4): 24 h, 30 days, 7 days, 10 per document.
    fn default() -> CleanupOptions {
        CleanupOptions {
            sessions_older_than: Some(Duration::from_secs(24 * 3600)),
            deltas_older_than: Some(Duration::from_secs(30 * 24 * 3600)),
            snapshots_older_than: Some(Duration::from_secs(7 * 24 * 3600)),
            max_snapshots_per_document: Some(10),
            dry_run: false,
            batch_size: 10_000,
        }
    }
}

/// Rows removed (or, in a dry run, that would be removed), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupCounts {
    pub sessions_deleted: u64,
    pub deltas_deleted: u64,
    pub snapshots_deleted: u64,
}

/// Resolves when a submitted write is durable (or definitively failed).
#[derive(Debug)]
pub struct PersistTicket(TicketInner);

#[derive(Debug)]
enum TicketInner {
    Done(Result<(), StorageError>),
    Waiting(oneshot::Receiver<Result<(), StorageError>>),
}

impl PersistTicket {
    pub(crate) fn done(result: Result<(), StorageError>) -> PersistTicket {
        PersistTicket(TicketInner::Done(result))
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Result<(), StorageError>>) -> PersistTicket {
        PersistTicket(TicketInner::Waiting(rx))
    }

    /// The outcome when already decided at submission (refused, or nothing to
    /// write); `None` while it waits for the backend.
    pub(crate) fn ready(&self) -> Option<Result<(), StorageError>> {
        match &self.0 {
            TicketInner::Done(r) => Some(r.clone()),
            TicketInner::Waiting(_) => None,
        }
    }

    pub(crate) async fn wait(self) -> Result<(), StorageError> {
        match self.0 {
            TicketInner::Done(r) => r,
            TicketInner::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(StorageError::Unavailable("storage writer stopped".into()))
            }),
        }
    }
}

/// How a maintenance run ended: the `outcome` of its `maintenance_runs` row
/// (docs/storage.md §1.11), which is `running` until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunStatus {
    Ok,
    Failed,
    /// Stopped by the server's shutdown before it finished (docs/operations.md §6).
    Interrupted,
}

impl RunStatus {
    /// The stored `outcome` value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// How a maintenance run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub(crate) status: RunStatus,
    /// What it did (`{"sessionsDeleted": 3, …}`).
    pub(crate) counts: Value,
    pub(crate) error: Option<String>,
}

/// One maintenance run (a `maintenance_runs` row); the admin API lists it as is.
pub(crate) use crate::admin_api::maintenance::RunRecord;

// The storage surface (docs/storage.md §3), split by who calls it. A backend that
// runs `serve` implements the first three; `StorageAdapter` is their union, which is
// what the server holds (`Arc<dyn StorageAdapter>`), since the crate's Rust version
// cannot turn a `dyn StorageAdapter` into a `dyn SyncStore`. Code that needs only
// part of it takes a generic bound instead (`&(impl MaintenanceStore + ?Sized)`), which
// a `&dyn StorageAdapter` satisfies.

/// What the sync path needs: reaching the backend, loading a document, the
/// transactional [`write_batch`](SyncStore::write_batch) and the write-behind
/// session rows. [`Persistence`] is its caller, plus the start-up check in `serve`.
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// `memory` or `postgres`: a label for logs, health and stats only. Behaviour
    /// follows the capabilities below, never this name.
    fn kind(&self) -> &'static str;

    /// Whether other instances (and later runs of this one) read what is stored
    /// here. Memory storage belongs to this process alone.
    fn is_shared(&self) -> bool;

    /// Whether what is stored here survives a restart of this process. Health
    /// reports a store that does not as `memory-only`.
    fn is_durable(&self) -> bool;

    /// Reach the backend (and, for PostgreSQL, make sure the schema is usable).
    async fn connect(&self) -> Result<(), StorageError>;
    async fn disconnect(&self);
    /// Cheap liveness probe (PostgreSQL: `SELECT 1`).
    async fn health_check(&self) -> Result<(), StorageError>;

    /// A document as the hub needs it: fields (rebuilt from deltas for rows that
    /// carry none), clock, text state.
    async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError>;

    /// Persist writes in order, atomically: all or none (one transaction).
    async fn write_batch(&self, writes: &[DocumentWrite]) -> Result<(), StorageError>;

    /// [`SyncStore::write_batch`] done here and now, by a store that needs no I/O for
    /// it (memory: map edits under its lock); `None` from one that does (PostgreSQL).
    /// The write queue uses it to commit a write as it is submitted instead of waking
    /// a writer task for it.
    fn write_batch_at_once(&self, writes: &[DocumentWrite]) -> Option<Result<(), StorageError>> {
        let _ = writes;
        None
    }

    /// Apply a [`SessionBatch`] atomically (the sync path's only session write).
    async fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StorageError>;

    /// Bump `last_seen` of these sessions to now (one statement).
    async fn touch_sessions(&self, ids: &[String]) -> Result<(), StorageError>;
}

/// What the maintenance jobs need (`src/maintenance/`): cleanup, snapshot and
/// compaction, and the run log that lets a fleet run each occurrence once.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// Documents with more than `threshold` delta rows, most first (compaction
    /// candidates), with their counts.
    async fn documents_over_delta_threshold(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, StorageError>;

    /// Store a snapshot; the document row must exist.
    async fn save_snapshot(&self, snapshot: &NewSnapshot) -> Result<SnapshotRow, StorageError>;

    /// Drop the deltas the latest snapshot covers (written at or before it);
    /// returns how many.
    async fn compact(&self, document_id: &str) -> Result<u64, StorageError>;

    /// Remove old sessions, deltas and snapshots in bounded batches.
    async fn cleanup(&self, options: &CleanupOptions) -> Result<CleanupCounts, StorageError>;

    /// Claim one scheduled occurrence of a job for this instance and record its
    /// start; `None` when another instance already claimed it (the fleet runs each
    /// occurrence once).
    async fn claim_run(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        instance_id: &str,
    ) -> Result<Option<i64>, StorageError>;

    /// Record how a claimed run ended.
    async fn finish_run(&self, id: i64, outcome: &RunOutcome) -> Result<(), StorageError>;

    /// The newest runs first (also what `/maintenance` and the console list).
    async fn recent_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StorageError>;
}

/// What the admin API and test mode need: a document as stored (for one that is not
/// loaded here; compaction snapshots it too), deleting one, and emptying storage.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    async fn get_document(&self, id: &str) -> Result<Option<DocumentRow>, StorageError>;

    async fn get_vector_clock(
        &self,
        document_id: &str,
    ) -> Result<BTreeMap<String, u64>, StorageError>;

    /// Delete a document with its clocks, deltas and snapshots.
    async fn delete_document(&self, id: &str) -> Result<bool, StorageError>;

    /// Delete every document (with its clocks, deltas and snapshots) and every
    /// session, in one transaction; returns how many documents went. Only test
    /// mode's `POST /_test/clear` calls it (docs/operations.md §1). The maintenance
    /// run log is kept: it is history, and a forgotten claim would let an
    /// occurrence run twice.
    async fn clear_all(&self) -> Result<u64, StorageError>;
}

/// Everything `serve` needs of a storage backend: implement [`SyncStore`],
/// [`MaintenanceStore`] and [`AdminStore`] and this follows.
pub trait StorageAdapter: SyncStore + MaintenanceStore + AdminStore {}

impl<T: SyncStore + MaintenanceStore + AdminStore> StorageAdapter for T {}

/// The rest of the TypeScript adapter's operations (docs/storage.md §3): row-level
/// CRUD the server itself never calls. Both backends implement it so the conformance
/// suite (`tests/it/storage_conformance.rs`) can seed and inspect rows the same way
/// on each; a new backend does not need it to run `serve`.
#[cfg(any(test, feature = "test-util"))]
#[async_trait]
pub trait CompatStore: Send + Sync + 'static {
    /// Whether the last contact with the backend succeeded.
    fn is_connected(&self) -> bool;

    /// Upsert the whole state (`version` bumps on update).
    async fn save_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError>;
    /// Replace the state of an existing document; `NotFound` otherwise.
    async fn update_document(&self, id: &str, state: &Value) -> Result<DocumentRow, StorageError>;
    /// Newest `updated_at` first.
    async fn list_documents(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<DocumentRow>, StorageError>;

    /// Set one entry (overwrite).
    async fn update_vector_clock(
        &self,
        document_id: &str,
        client_id: &str,
        value: u64,
    ) -> Result<(), StorageError>;
    /// Merge entries by maximum (`GREATEST`), in one transaction.
    async fn merge_vector_clock(
        &self,
        document_id: &str,
        clock: &BTreeMap<String, u64>,
    ) -> Result<(), StorageError>;

    async fn save_delta(&self, delta: &NewDelta) -> Result<DeltaRow, StorageError>;
    /// Newest first.
    async fn get_deltas(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError>;
    /// Deltas whose `max_clock_value` is above `since`, oldest first.
    async fn get_deltas_since(
        &self,
        document_id: &str,
        since: u64,
        limit: u32,
    ) -> Result<Vec<DeltaRow>, StorageError>;

    /// Insert, or on conflict refresh `last_seen` and `metadata`.
    async fn save_session(&self, session: &SessionRecord) -> Result<(), StorageError>;
    /// Set `last_seen`; `metadata` is kept when `None`. Returns whether it existed.
    async fn update_session(
        &self,
        id: &str,
        last_seen: DateTime<Utc>,
        metadata: Option<&Value>,
    ) -> Result<bool, StorageError>;
    async fn delete_session(&self, id: &str) -> Result<bool, StorageError>;
    /// A user's sessions, newest `last_seen` first.
    async fn get_sessions(&self, user_id: &str) -> Result<Vec<SessionRow>, StorageError>;
    /// All sessions, newest `last_seen` first.
    async fn list_sessions(&self, limit: u32, offset: u32)
        -> Result<Vec<SessionRow>, StorageError>;

    async fn get_snapshot(&self, id: uuid::Uuid) -> Result<Option<SnapshotRow>, StorageError>;
    async fn latest_snapshot(&self, document_id: &str)
        -> Result<Option<SnapshotRow>, StorageError>;
    /// Newest first.
    async fn list_snapshots(
        &self,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<SnapshotRow>, StorageError>;
    async fn delete_snapshot(&self, id: uuid::Uuid) -> Result<bool, StorageError>;
}
