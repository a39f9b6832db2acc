//! Fleet presence on `<prefix>presence` (docs/storage.md §6.4): the TS payloads
//! `server_online` / `server_offline`, plus a periodic `server_heartbeat` carrying
//! the instance's stats, and the table every instance keeps of the others.
//!
//! Times in the table are the *receiver's* clock, so skew between hosts cannot make
//! a live instance look gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::admin_api::{FleetEntry, PeerStatus, PresenceMetadata};

/// An instance silent for more than this many heartbeats is shown as gone.
pub(crate) const GONE_AFTER_HEARTBEATS: u32 = 3;

/// Instances gone or offline are still listed this many heartbeats, then forgotten.
const FORGET_AFTER_HEARTBEATS: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresenceKind {
    Online,
    Offline,
    Heartbeat,
}

impl PresenceKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PresenceKind::Online => "server_online",
            PresenceKind::Offline => "server_offline",
            PresenceKind::Heartbeat => "server_heartbeat",
        }
    }

    fn parse(name: &str) -> Option<PresenceKind> {
        [
            PresenceKind::Online,
            PresenceKind::Offline,
            PresenceKind::Heartbeat,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One presence message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PresenceEvent {
    pub(crate) kind: PresenceKind,
    pub(crate) server_id: String,
    /// `{}` when absent (TS `server_offline` has none).
    pub(crate) metadata: Map<String, Value>,
}

impl PresenceEvent {
    /// The wire payload (TS shape; `metadata` omitted when empty, like TS offline).
    pub(crate) fn to_json(&self, now_ms: i64) -> Value {
        let mut v = json!({
            "type": self.kind.name(),
            "serverId": self.server_id,
            "timestamp": now_ms,
        });
        if !self.metadata.is_empty() {
            v["metadata"] = Value::Object(self.metadata.clone());
        }
        v
    }

    /// Parse a received payload; `None` for anything that is not presence.
    pub(crate) fn parse(payload: &[u8]) -> Option<PresenceEvent> {
        let v: Value = serde_json::from_slice(payload).ok()?;
        Some(PresenceEvent {
            kind: PresenceKind::parse(v.get("type")?.as_str()?)?,
            server_id: v.get("serverId")?.as_str()?.to_owned(),
            metadata: v
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Whether the sender asks its peers to resynchronise (it was cut off and may
    /// hold writes they never received).
    pub(crate) fn asks_resync(&self) -> bool {
        self.kind == PresenceKind::Online
            && self.metadata.get("resync").and_then(Value::as_bool) == Some(true)
    }
}

#[derive(Debug, Clone)]
struct Record {
    first_seen_ms: i64,
    last_seen_ms: i64,
    offline: bool,
    metadata: Map<String, Value>,
}

/// The other instances, as last heard.
pub(crate) struct Fleet {
    /// Our own heartbeat period: the default for peers that do not state theirs.
    interval: Duration,
    peers: Mutex<HashMap<String, Record>>,
}

impl Fleet {
    pub(crate) fn new(interval: Duration) -> Fleet {
        Fleet {
            interval,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn observe(&self, event: &PresenceEvent, now_ms: i64) {
        let mut peers = self.peers();
        let record = peers
            .entry(event.server_id.clone())
            .or_insert_with(|| Record {
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                offline: false,
                metadata: Map::new(),
            });
        record.last_seen_ms = now_ms;
        record.offline = event.kind == PresenceKind::Offline;
        if !event.metadata.is_empty() {
            record.metadata = event.metadata.clone();
        }
    }

    /// The peer's stated heartbeat period, else ours.
    fn period_ms(&self, record: &Record) -> i64 {
        record
            .metadata
            .get("heartbeatIntervalMs")
            .and_then(Value::as_i64)
            .filter(|ms| *ms > 0)
            .unwrap_or_else(|| i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX))
    }

    /// Every known peer with its status (`online`, `offline` — said goodbye — or
    /// `gone` — silent), sorted by id. Long-gone peers are forgotten here.
    pub(crate) fn instances(&self, now_ms: i64) -> Vec<FleetEntry> {
        let mut peers = self.peers();
        peers.retain(|_, r| {
            now_ms - r.last_seen_ms <= self.period_ms(r) * i64::from(FORGET_AFTER_HEARTBEATS)
        });
        let mut out: Vec<FleetEntry> = peers
            .iter()
            .map(|(id, r)| {
                let silent = now_ms - r.last_seen_ms;
                let status = if r.offline {
                    PeerStatus::Offline
                } else if silent > self.period_ms(r) * i64::from(GONE_AFTER_HEARTBEATS) {
                    PeerStatus::Gone
                } else {
                    PeerStatus::Online
                };
                FleetEntry {
                    server_id: id.clone(),
                    status,
                    is_self: false,
                    first_seen: Some(r.first_seen_ms),
                    last_seen: Some(r.last_seen_ms),
                    metadata: PresenceMetadata::from_map(&r.metadata),
                }
            })
            .collect();
        out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: PresenceKind, id: &str, metadata: Value) -> PresenceEvent {
        PresenceEvent {
            kind,
            server_id: id.into(),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn payloads_have_the_ts_shape_and_round_trip() {
        let on = event(PresenceKind::Online, "s1", json!({"startedAt": 5}));
        let v = on.to_json(42);
        assert_eq!(
            v,
            json!({"type": "server_online", "serverId": "s1", "timestamp": 42, "metadata": {"startedAt": 5}})
        );
        assert_eq!(PresenceEvent::parse(v.to_string().as_bytes()), Some(on));
        let off = event(PresenceKind::Offline, "s1", json!({}));
        assert_eq!(
            off.to_json(7),
            json!({"type": "server_offline", "serverId": "s1", "timestamp": 7})
        );
        assert_eq!(PresenceEvent::parse(br#"{"type":"delta"}"#), None);
        assert_eq!(PresenceEvent::parse(b"nope"), None);
        assert!(event(PresenceKind::Online, "x", json!({"resync": true})).asks_resync());
        assert!(!event(PresenceKind::Heartbeat, "x", json!({"resync": true})).asks_resync());
    }

    #[test]
    fn silent_instances_are_gone_after_three_heartbeats_and_forgotten_later() {
        let fleet = Fleet::new(Duration::from_secs(10));
        fleet.observe(
            &event(PresenceKind::Heartbeat, "b", json!({"connections": 3})),
            0,
        );
        fleet.observe(&event(PresenceKind::Online, "a", json!({})), 0);
        let status = |now| -> Vec<(String, String)> {
            fleet
                .instances(now)
                .iter()
                .map(|v| (v.server_id.clone(), v.status.label().to_owned()))
                .collect()
        };
        assert_eq!(
            status(30_000),
            vec![("a".into(), "online".into()), ("b".into(), "online".into())]
        );
        fleet.observe(&event(PresenceKind::Heartbeat, "b", json!({})), 25_000);
        assert_eq!(
            status(30_001),
            vec![("a".into(), "gone".into()), ("b".into(), "online".into())]
        );
        assert_eq!(
            fleet.instances(30_001)[1].metadata.connections,
            Some(3),
            "a heartbeat without metadata keeps the last known"
        );
        fleet.observe(&event(PresenceKind::Offline, "b", json!({})), 31_000);
        assert_eq!(status(31_000)[1].1, "offline");
        assert_eq!(status(600_001).len(), 1, "a is forgotten after 60 periods");
    }
}
