//! What the feed reports, source by source: plain data (serde both ways, so `--once
//! --format json` prints it and tests build fixtures from it). Times are epoch
//! milliseconds; "now" is the app's injected clock, never read here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::admin_api::{CleanupRetention, Event, PeerStatus, PresenceMetadata};

/// One data source's health as the console last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum SourceState {
    /// Not configured (no URL given).
    #[default]
    Off,
    /// Answered; how long the probe took.
    Up { latency_ms: u64 },
    /// Configured but failing.
    Down { error: String },
}

impl SourceState {
    pub fn is_up(&self) -> bool {
        matches!(self, SourceState::Up { .. })
    }

    /// Short label for status lines.
    pub(crate) fn label(&self) -> String {
        match self {
            SourceState::Off => "off".into(),
            SourceState::Up { latency_ms } => format!("up {latency_ms}ms"),
            SourceState::Down { .. } => "DOWN".into(),
        }
    }
}

/// The numbers of one instance's `/stats`: the admin contract itself, read field by
/// field (an absent field is unknown, shown as `?`).
pub use crate::admin_api::Stats;

/// A live document as one instance reports it.
pub use crate::admin_api::LiveDocumentInfo as LiveDocument;

/// A session: live (from an instance) or persisted (a `sessions` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub user: Option<String>,
    pub client: Option<String>,
    pub instance: Option<String>,
    pub remote: Option<String>,
    pub connected_at_ms: i64,
    pub last_seen_ms: i64,
    pub subscriptions: Vec<String>,
    /// Reported by a running instance (else only its database row was seen).
    pub live: bool,
    /// Admin address of the instance that reported it (where to disconnect it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One client's presence in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessClient {
    pub document_id: String,
    pub client_id: String,
    pub state: Value,
    pub clock: u64,
    pub last_seen_ms: i64,
    /// Milliseconds until it expires, when known.
    pub expires_in_ms: Option<i64>,
}

/// A scheduler job of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    pub next_run_ms: Option<i64>,
    pub instance: String,
}

/// One maintenance run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub id: i64,
    pub job: String,
    pub instance_id: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub outcome: String,
    pub counts: Value,
    pub error: Option<String>,
}

impl RunInfo {
    pub(crate) fn duration_ms(&self) -> Option<i64> {
        self.finished_at_ms.map(|f| f - self.started_at_ms)
    }
}

/// Everything one instance's admin API answered in one poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// The admin address polled (`http://127.0.0.1:9091`).
    pub address: String,
    pub state: SourceState,
    /// When the poll was made (the feed's clock), for rates.
    pub sampled_at_ms: i64,
    pub stats: Option<Stats>,
    pub documents: Vec<LiveDocument>,
    pub sessions: Vec<SessionInfo>,
    pub awareness: Vec<AwarenessClient>,
    pub jobs: Vec<JobInfo>,
    pub runs: Vec<RunInfo>,
    /// New events since the last poll, newest first.
    pub events: Vec<Event>,
    /// The retention a cleanup run now would apply on this instance.
    pub cleanup: Option<CleanupRetention>,
    /// Pages that could not be read (the rest of the report stands).
    pub problems: Vec<String>,
}

/// A `documents` row with what the list shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoredDocument {
    pub id: String,
    pub fields: u64,
    pub size_bytes: u64,
    pub version: i64,
    pub updated_at_ms: i64,
}

/// What one PostgreSQL poll read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseReport {
    pub state: SourceState,
    /// The newest documents (matching the filter), one page.
    pub documents: Vec<StoredDocument>,
    /// Approximate row counts (planner estimates: exact counts of big tables cost
    /// a scan per refresh).
    pub documents_total: u64,
    pub sessions_total: u64,
    pub sessions: Vec<SessionInfo>,
    pub awareness: Vec<AwarenessClient>,
    pub runs: Vec<RunInfo>,
    /// Milliseconds the poll's queries took, for the Overview and BENCHMARKS.md.
    pub query_ms: u64,
}

/// One sampled pub/sub message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSample {
    pub at_ms: i64,
    pub channel: String,
    /// `delta`, `awareness`, `presence` or the channel's own kind.
    pub kind: String,
    pub document: Option<String>,
    pub size: usize,
    /// The publishing instance, when the payload names it.
    pub origin: Option<String>,
    /// The payload as JSON with long values cut (Enter on Traffic shows it); `None`
    /// when it is not JSON or too large to parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// Messages per second on one kind of channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRate {
    pub kind: String,
    pub per_second: f64,
    pub total: u64,
}

/// A fleet member announced on the presence channel, as the console's own Redis
/// tap heard it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FleetMember {
    pub server_id: String,
    pub last_seen_ms: i64,
    pub status: PeerStatus,
    /// What its last heartbeat said (host, version, admin address…).
    pub metadata: PresenceMetadata,
}

/// What the Redis tap saw since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisReport {
    pub state: SourceState,
    pub samples: Vec<TrafficSample>,
    pub rates: Vec<ChannelRate>,
    pub fleet: Vec<FleetMember>,
}

/// A recent delta of one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeltaInfo {
    pub client_id: String,
    pub operation: String,
    pub field: String,
    pub value: Option<Value>,
    pub clock: i64,
    pub at_ms: i64,
}

/// A snapshot of one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub id: String,
    pub size_bytes: i64,
    pub created_at_ms: i64,
}

/// The drill-down of one document, from the admin API and PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DocumentDetail {
    pub id: String,
    pub fields: Value,
    pub clock: BTreeMap<String, u64>,
    pub subscribers: Vec<String>,
    pub awareness: Vec<AwarenessClient>,
    pub deltas: Vec<DeltaInfo>,
    pub snapshots: Vec<SnapshotInfo>,
    /// Instances that have it loaded.
    pub loaded_on: Vec<String>,
    /// What could not be read (one line per source).
    pub problems: Vec<String>,
}
