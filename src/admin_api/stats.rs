//! `GET /stats`: one instance's numbers. Every field is optional when read (see the
//! module rules): `#[serde(default)]` on each struct makes an absent field `None`
//! and an absent group all `None`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::presence::FleetEntry;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Stats {
    pub instance_id: Option<String>,
    pub version: Option<String>,
    pub host: Option<String>,
    /// Epoch ms when the process started.
    pub started_at_ms: Option<i64>,
    pub uptime_seconds: Option<f64>,
    pub connections: ConnectionStats,
    pub documents: DocumentStats,
    pub awareness: AwarenessStats,
    pub messages: MessageStats,
    pub bytes: ByteStats,
    /// Error replies by (catalogue) message.
    pub errors: Option<BTreeMap<String, u64>>,
    /// Refused client input by reason (README "Limits and refusals"), every reason
    /// listed (0 included).
    pub refusals: Option<BTreeMap<String, u64>>,
    pub acks_sent: Option<u64>,
    pub auth_failures: Option<u64>,
    pub broadcast: BroadcastStats,
    pub persistence: PersistenceStats,
    pub pubsub: PubSubStats,
    /// This instance (first, `self: true`) and the peers it hears on presence.
    pub instances: Vec<FleetEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ConnectionStats {
    pub open: Option<i64>,
    pub authenticated: Option<i64>,
    pub users: Option<u64>,
    pub accepted: Option<u64>,
    pub rejected_per_ip: Option<u64>,
    pub rejected_capacity: Option<u64>,
    pub top_ips: Vec<IpConnections>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct IpConnections {
    pub(crate) ip: String,
    pub(crate) connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct DocumentStats {
    pub cached: Option<u64>,
    pub max_cached: Option<u64>,
    pub evicted: Option<u64>,
    pub subscriptions: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AwarenessStats {
    /// `None` when the store did not answer in time (never a made-up 0).
    pub(crate) clients: Option<u64>,
    pub(crate) expired: Option<u64>,
    pub(crate) store: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MessageStats {
    /// Messages received by type; types never seen are left out (they are 0).
    #[serde(rename = "in")]
    pub inbound: Option<BTreeMap<String, u64>>,
    #[serde(rename = "out")]
    pub outbound: Option<BTreeMap<String, u64>>,
    pub invalid_frames: Option<u64>,
    pub rate_limited: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ByteStats {
    #[serde(rename = "in")]
    pub(crate) inbound: Option<u64>,
    #[serde(rename = "out")]
    pub(crate) outbound: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct BroadcastStats {
    pub(crate) flushes: Option<u64>,
    pub(crate) deliveries: Option<u64>,
    pub(crate) slow_clients_closed: Option<u64>,
    /// Yields of writers whose broadcast crowded a subscriber.
    pub(crate) writers_paced: Option<u64>,
    pub(crate) latency_ms: LatencyStats,
}

/// A latency histogram in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LatencyStats {
    pub(crate) count: Option<u64>,
    pub(crate) sum: Option<f64>,
    /// Cumulative counts per upper bound, ascending; the last has `le: null` (+Inf).
    pub(crate) buckets: Vec<HistogramBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct HistogramBucket {
    /// Upper bound in ms; `None` is +Inf.
    pub(crate) le: Option<f64>,
    pub(crate) count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct PersistenceStats {
    /// `memory` or `postgres`.
    pub backend: Option<String>,
    /// True while storage is unreachable and writes wait in memory.
    pub degraded: Option<bool>,
    /// Writes accepted but not yet durable.
    pub backlog: Option<u64>,
    pub max_backlog: Option<u64>,
    pub last_error: Option<String>,
    pub committed_writes: Option<u64>,
    pub failed_attempts: Option<u64>,
    pub rejected_writes: Option<u64>,
    pub refused_full: Option<u64>,
    /// Session row changes waiting to be written.
    pub session_queue: Option<u64>,
    /// Session row changes dropped because the session queue was full.
    pub sessions_dropped: Option<u64>,
    pub failures: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct PubSubStats {
    /// `local` or `redis`.
    pub backend: Option<String>,
    /// `single-instance`, `connected` or `disconnected`.
    pub state: Option<String>,
    pub published: Option<u64>,
    pub received: Option<u64>,
    pub dropped: Option<u64>,
    pub receive_dropped: Option<u64>,
    pub reconnects: Option<u64>,
    pub ping_ms: Option<f64>,
    pub last_error: Option<String>,
    pub resyncs: Option<u64>,
    pub resynced_fields: Option<u64>,
}

fn sum(map: &Option<BTreeMap<String, u64>>) -> Option<u64> {
    map.as_ref().map(|m| m.values().sum())
}

impl Stats {
    /// Messages received, all types; unknown when the server did not say.
    pub fn messages_in(&self) -> Option<u64> {
        sum(&self.messages.inbound)
    }

    pub(crate) fn messages_out(&self) -> Option<u64> {
        sum(&self.messages.outbound)
    }

    /// Error replies plus undecodable frames.
    pub(crate) fn errors_total(&self) -> Option<u64> {
        Some(sum(&self.errors)? + self.messages.invalid_frames?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_unknown_not_zero() {
        let s: Stats =
            serde_json::from_str(r#"{"instanceId":"a","connections":{"open":3}}"#).expect("parse");
        assert_eq!(s.connections.open, Some(3));
        assert_eq!(s.connections.users, None);
        assert_eq!(s.persistence.backlog, None);
        assert_eq!(s.messages_in(), None);
        assert_eq!(s.errors_total(), None);
        let s: Stats = serde_json::from_str(
            r#"{"messages":{"in":{"ping":2,"delta":3},"invalidFrames":1},"errors":{"x":1}}"#,
        )
        .expect("parse");
        assert_eq!(s.messages_in(), Some(5));
        assert_eq!(s.errors_total(), Some(2));
    }
}
