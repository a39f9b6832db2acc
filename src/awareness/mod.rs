//! Awareness (presence) store seam (PROTOCOL.md §7.13–§7.16).
//!
//! Rules every store implements: an update with `clock` ≤ the stored clock is stale
//! and ignored; a `null` state (leave) always removes the entry; an entry expires
//! `timeout` after its last accepted update.

pub mod memory;
pub mod postgres;
pub mod redis;

use async_trait::async_trait;
use serde_json::Value;

pub use memory::MemoryAwarenessStore;
pub use postgres::PostgresAwarenessStore;
pub use redis::RedisAwarenessStore;

/// One client's presence in one document.
#[derive(Debug, Clone, PartialEq)]
pub struct AwarenessEntry {
    pub document_id: String,
    pub client_id: String,
    /// Connection that last updated it, so its leaves can be sent when it closes.
    pub connection_id: String,
    pub state: Value,
    pub clock: u64,
    pub last_seen_ms: i64,
}

/// An update as received from a client (or another instance).
#[derive(Debug, Clone, PartialEq)]
pub struct AwarenessUpdate {
    pub document_id: String,
    pub client_id: String,
    pub connection_id: String,
    /// `None` = leave.
    pub state: Option<Value>,
    pub clock: u64,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Stored; broadcast it.
    Accepted,
    /// Clock not newer than the stored one; drop silently.
    Stale,
    /// A leave; the entry (if any) is gone. Broadcast it.
    Left,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AwarenessError {
    #[error("awareness store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait AwarenessStore: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    async fn set(&self, update: AwarenessUpdate) -> Result<SetOutcome, AwarenessError>;

    /// Live (unexpired) entries of a document.
    async fn get_all(
        &self,
        document_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Remove every entry last written by a connection; returns them (for leaves).
    async fn remove_connection(
        &self,
        connection_id: &str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Entries whose last update is `timeout` or more before `now_ms`.
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Remove expired entries and return them (for leaves).
    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Number of live entries, for stats.
    async fn count(&self) -> Result<usize, AwarenessError>;
}
