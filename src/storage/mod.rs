//! Persistence seam. The sync path loads documents through [`StorageAdapter`] and
//! submits every applied write to it in apply order; an ack is sent only when the
//! write's [`PersistTicket`] resolves, i.e. when the write is durable in that backend.

pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub use memory::MemoryStorage;

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
    /// The merged text state, when the write touched it.
    pub text: Option<(String, f64)>,
}

impl DocumentWrite {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.clock.is_empty() && self.text.is_none()
    }
}

/// A row of the `sessions` table (STORAGE.md §2.5).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub client_id: Option<String>,
    pub metadata: Value,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage query failed: {0}")]
    Query(String),
    #[error("write queue full ({0} writes pending)")]
    BacklogFull(usize),
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
    pub fn done(result: Result<(), StorageError>) -> PersistTicket {
        PersistTicket(TicketInner::Done(result))
    }

    pub fn waiting(rx: oneshot::Receiver<Result<(), StorageError>>) -> PersistTicket {
        PersistTicket(TicketInner::Waiting(rx))
    }

    pub async fn wait(self) -> Result<(), StorageError> {
        match self.0 {
            TicketInner::Done(r) => r,
            TicketInner::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(StorageError::Unavailable("storage writer stopped".into()))
            }),
        }
    }
}

#[async_trait]
pub trait StorageAdapter: Send + Sync + 'static {
    /// `memory` or `postgres`, for health and stats.
    fn kind(&self) -> &'static str;

    async fn load_document(&self, id: &str) -> Result<Option<StoredDocument>, StorageError>;

    /// Queue a write. Called under the document's lock so writes reach storage in
    /// the order they were applied; must not block.
    fn submit(&self, write: DocumentWrite) -> PersistTicket;

    async fn save_session(&self, session: SessionRecord) -> Result<(), StorageError>;

    /// Bump `last_seen` of these sessions to now.
    async fn touch_sessions(&self, ids: &[String]) -> Result<(), StorageError>;

    async fn delete_session(&self, id: &str) -> Result<(), StorageError>;

    /// Cheap liveness probe (PostgreSQL: `SELECT 1`).
    async fn health_check(&self) -> Result<(), StorageError>;

    /// Writes accepted but not yet durable.
    fn backlog(&self) -> usize;

    /// Wait until every submitted write is durable or `budget` runs out; returns
    /// whether the backlog was drained.
    async fn drain(&self, budget: std::time::Duration) -> bool;
}
