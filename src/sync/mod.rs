//! The sans-I/O sync core: documents, the hub of live documents and subscribers, and
//! the per-connection session state machine. Nothing here owns a socket or waits on
//! a backend: a session's every step returns what it asks for as data
//! ([`session::Outcome`]), which the connection layer carries out; broadcasts reach
//! their connections through a bounded outbox ([`peer::Peer`]).

pub(crate) mod acks;
pub mod admission;
pub(crate) mod chunks;
pub(crate) mod clock;
pub(crate) mod document;
pub(crate) mod hub;
pub mod peer;
mod rate_limit;
pub(crate) mod session;
pub(crate) mod text;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::auth::Authenticator;
use crate::awareness::AwarenessStore;
use crate::metrics::Metrics;
use crate::pubsub::Fleet;

pub(crate) use hub::Hub;
pub use peer::{Outgoing, Peer};
pub use session::Session;

/// Settings of the message handlers.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub(crate) auth_required: bool,
    /// Logical message (payload) limit, bytes.
    pub max_message_bytes: usize,
    /// Limit of a message carrying only text states (README "Text engine").
    pub(crate) max_text_message_bytes: usize,
    /// Messages per minute per connection (pings not counted); 0 = unlimited.
    pub max_messages_per_minute: u32,
    pub(crate) playground_access_filter: bool,
    pub relay_crdt_ops: bool,
    pub instance_id: String,
    pub awareness_timeout: Duration,
    /// How long a connection may stay unauthenticated when auth is required.
    pub auth_timeout: Duration,
    /// The admission layer's bounds (README "Limits and refusals").
    pub limits: admission::Limits,
}

/// What every session shares.
pub struct SyncService {
    pub hub: Arc<Hub>,
    pub(crate) awareness: Arc<dyn AwarenessStore>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) metrics: Arc<Metrics>,
    pub settings: SyncSettings,
    /// The other instances, as heard on the presence channel.
    pub(crate) fleet: Arc<Fleet>,
    /// Asks the resync task ([`crate::fanout::resync::run`]) for a round.
    pub(crate) resync: Arc<Notify>,
    /// Notable events of this instance (admin API, console Events view).
    pub(crate) events: Arc<crate::events::EventLog>,
    /// Where wall time comes from: the system clock, or a test's ([`crate::clock`]).
    pub(crate) clock: crate::clock::SharedClock,
    /// Work started in the background (a closed connection's awareness leaves, the
    /// server's background tasks): shutdown joins it, within its budget, before the
    /// pools close (docs/operations.md §6).
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

impl SyncService {
    /// Wall time in epoch milliseconds, from this service's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The TS/Go/Python playground policy (docs/protocol.md §6), opt-in.
fn playground_allows(document_id: &str) -> bool {
    document_id == "playground"
        || document_id.starts_with("playground:")
        || document_id == "wordwall"
        || document_id.starts_with("wordwall:")
        || document_id.starts_with("room:")
        || document_id.bytes().take_while(u8::is_ascii_digit).count() >= 13
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playground_policy() {
        for ok in [
            "playground",
            "playground:x",
            "wordwall",
            "wordwall:1",
            "room:a",
            "1700000000000-x",
        ] {
            assert!(playground_allows(ok), "{ok}");
        }
        for no in ["todo-1", "room", "playgroundx", "123456789012-x"] {
            assert!(!playground_allows(no), "{no}");
        }
    }
}
