//! `GET /admin/events`: an instance's notable events (storage degraded, Redis lost,
//! peers coming and going, refusals summarised, failed maintenance, shutdown),
//! newest first. Recorded by [`crate::events::EventLog`].

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    StorageDegraded,
    StorageRecovered,
    PubsubLost,
    PubsubBack,
    PeerOnline,
    PeerOffline,
    PeerGone,
    SlowClientClosed,
    AuthFailures,
    RateLimited,
    /// Client input the admission layer refused (too deep, NUL, clocks, chunks,
    /// awareness ownership, …; the rate limit has its own kind).
    InputRefused,
    MaintenanceFailed,
    ShutdownStarted,
    /// A kind this version does not know (a newer server's).
    #[serde(other)]
    Other,
}

/// How much an operator should care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl EventKind {
    /// The severity an event of this kind has.
    pub fn severity(self) -> Severity {
        match self {
            EventKind::StorageRecovered
            | EventKind::PubsubBack
            | EventKind::PeerOnline
            | EventKind::PeerOffline
            | EventKind::ShutdownStarted
            | EventKind::Other => Severity::Info,
            EventKind::SlowClientClosed
            | EventKind::AuthFailures
            | EventKind::RateLimited
            | EventKind::InputRefused
            | EventKind::PeerGone => Severity::Warn,
            EventKind::StorageDegraded | EventKind::PubsubLost | EventKind::MaintenanceFailed => {
                Severity::Error
            }
        }
    }

    /// The wire name (`storage_degraded`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::StorageDegraded => "storage_degraded",
            EventKind::StorageRecovered => "storage_recovered",
            EventKind::PubsubLost => "pubsub_lost",
            EventKind::PubsubBack => "pubsub_back",
            EventKind::PeerOnline => "peer_online",
            EventKind::PeerOffline => "peer_offline",
            EventKind::PeerGone => "peer_gone",
            EventKind::SlowClientClosed => "slow_client_closed",
            EventKind::AuthFailures => "auth_failures",
            EventKind::RateLimited => "rate_limited",
            EventKind::InputRefused => "input_refused",
            EventKind::MaintenanceFailed => "maintenance_failed",
            EventKind::ShutdownStarted => "shutdown_started",
            EventKind::Other => "other",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Grows by one per event of this instance's process (a restart starts again).
    pub seq: u64,
    /// Epoch ms of the (last) occurrence.
    pub at_ms: i64,
    pub kind: EventKind,
    pub severity: Severity,
    pub message: String,
    /// Occurrences this entry stands for (summaries count several).
    pub count: u64,
}

/// `GET /admin/events?after=<seq>&limit=<n>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsPage {
    pub(crate) instance_id: String,
    /// Newest first, only those with `seq > after`.
    pub(crate) events: Vec<Event>,
    /// Events no longer in the ring (it keeps the newest).
    pub(crate) dropped: u64,
}
