//! Awareness (presence) store seam (docs/protocol.md §7.13–§7.16).
//!
//! Rules every store implements: an update with `clock` ≤ the stored clock is stale
//! and ignored; a `null` state (leave) removes the entry whatever its clock; an entry
//! expires `timeout` after its last accepted update.
//!
//! **Ownership.** An entry belongs to the connection (and user) that wrote it last.
//! An update or leave from another connection of *another* user is refused
//! ([`SetOutcome::NotOwner`]) while the entry is live, so no reader can replace or
//! remove someone else's presence. The same user may take its entry over from
//! another connection (a reconnect after a drop the server has not noticed yet),
//! and an expired entry, a left one or one whose connection closed is free again.
//! Shared stores (PostgreSQL, Redis) decide this atomically for the whole fleet.

pub(crate) mod bounded;
pub(crate) mod memory;
pub(crate) mod postgres;
pub(crate) mod redis;

use async_trait::async_trait;
use serde_json::Value;

pub use bounded::BoundedAwarenessStore;
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
    /// User of that connection; empty for entries relayed from another instance or
    /// written by a server that records none.
    pub user_id: String,
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
    /// The connection's user (empty for a peer instance's relayed update).
    pub user_id: String,
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
    /// A live entry of another connection and user: refused, nothing changed.
    NotOwner,
}

/// Whether `update` may change or remove `stored` (see the module doc): its own
/// connection, the same user, or an expired entry.
fn may_replace(stored: &AwarenessEntry, update: &AwarenessUpdate, expired: bool) -> bool {
    expired || stored.connection_id == update.connection_id || stored.user_id == update.user_id
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AwarenessError {
    #[error("awareness store unavailable: {0}")]
    Unavailable(String),
}

/// 9999-12-31T23:59:59Z in epoch milliseconds: every entry has expired by then, and
/// every store can represent it, so `prune_expired(END_OF_TIME_MS)` empties a store
/// (test mode's `POST /_test/clear`, docs/operations.md §1.5).
pub const END_OF_TIME_MS: i64 = 253_402_300_799_000;

#[async_trait]
pub trait AwarenessStore: Send + Sync + 'static {
    /// `memory`, `postgres` or `redis`, for health, stats and the console.
    fn kind(&self) -> &'static str;

    /// Whether other instances read and write the same entries. A shared store's
    /// expired entries are pruned by the `awareness-prune` job (one instance does
    /// it for the fleet); a private one is swept by its own server.
    fn is_shared(&self) -> bool;

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
    #[cfg(any(test, feature = "test-util"))]
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Remove expired entries and return them (for leaves).
    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError>;

    /// Number of live entries, for stats.
    async fn count(&self) -> Result<usize, AwarenessError>;
}
