//! Presence: what a heartbeat's `metadata` says about its instance, and how `/stats`
//! lists the fleet (this instance and the peers it hears). Peers of other
//! implementations send other keys: they are kept in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `metadata` of `server_online` / `server_heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct PresenceMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<u64>,
    /// Epoch ms when the instance started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<i64>,
    /// Where the console can poll its admin API (`http://10.0.0.2:9091`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// On `server_online` after an outage: peers should read back its writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resync: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PresenceMetadata {
    /// Read a received metadata object; unusable values make the fields unknown.
    pub(crate) fn from_map(map: &Map<String, Value>) -> PresenceMetadata {
        serde_json::from_value(Value::Object(map.clone())).unwrap_or_default()
    }

    /// The wire object.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == PresenceMetadata::default()
    }
}

/// How an instance is known to the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    /// Heard within its last few heartbeats.
    Online,
    /// Said goodbye (`server_offline`): a clean stop.
    Offline,
    /// Silent for more than three heartbeats, without saying goodbye.
    Gone,
    /// A status this version does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

impl PeerStatus {
    pub(crate) fn label(self) -> &'static str {
        match self {
            PeerStatus::Online => "online",
            PeerStatus::Offline => "offline",
            PeerStatus::Gone => "gone",
            PeerStatus::Unknown => "unknown",
        }
    }
}

/// One entry of `/stats` `instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct FleetEntry {
    pub server_id: String,
    pub status: PeerStatus,
    /// The answering instance itself.
    #[serde(rename = "self", skip_serializing_if = "std::ops::Not::not")]
    pub is_self: bool,
    /// Epoch ms on the answering instance's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub metadata: PresenceMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_keys_are_kept_and_bad_values_are_unknown() {
        let map = serde_json::json!({"connections": 3, "pid": 42})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let m = PresenceMetadata::from_map(&map);
        assert_eq!(m.connections, Some(3));
        assert_eq!(m.extra.get("pid"), Some(&Value::from(42)));
        assert_eq!(m.to_map(), map);
        let bad = serde_json::json!({"connections": "many"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            PresenceMetadata::from_map(&bad),
            PresenceMetadata::default()
        );
        let status: PeerStatus = serde_json::from_str("\"rebooting\"").expect("other");
        assert_eq!(status, PeerStatus::Unknown);
    }
}
