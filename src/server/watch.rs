//! The event watcher: once a second it compares this instance's state with the
//! last look and records what changed in its [`EventLog`] — storage degraded or
//! recovered, pub/sub lost or back, peers online, offline or gone — and sums up the
//! refusal counters (auth failures, rate-limit refusals, slow clients closed) into
//! summarised notes. Reading state that already exists keeps the connection path
//! untouched; code with more to say records directly (`sync.events.record`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::admin_api::{FleetEntry, PeerStatus};
use crate::events::{EventKind, EventLog};
use crate::pubsub::PubSubState;

/// How often the state is compared: transitions show within half a second (and
/// the reconnect and failure counters catch what is shorter).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What the watcher reads each time.
#[derive(Debug, Clone, Default)]
struct Observed {
    pub(crate) storage_degraded: bool,
    storage_error: Option<String>,
    pub(crate) pubsub: Option<PubSubState>,
    pubsub_error: Option<String>,
    pub(crate) peers: Vec<FleetEntry>,
    /// Pub/sub connections re-established so far: a loss shorter than the watch
    /// interval still counts one.
    pubsub_reconnects: u64,
    /// Storage attempts that failed so far: likewise for a short outage.
    storage_failures: u64,
    pub(crate) auth_failures: u64,
    pub(crate) rate_limited: u64,
    /// Other refusals of client input so far, by reason (`Refusal::label`).
    pub(crate) refused: BTreeMap<&'static str, u64>,
    pub(crate) slow_clients_closed: u64,
}

/// The last look.
#[derive(Debug, Default)]
struct Watcher {
    last: Option<Observed>,
    /// Pub/sub was lost and is not back yet.
    lost: bool,
    peers: BTreeMap<String, PeerStatus>,
}

fn peer_name(p: &FleetEntry) -> String {
    let id: String = p.server_id.chars().take(8).collect();
    match &p.metadata.host {
        Some(host) => format!("{id} ({host})"),
        None => id,
    }
}

/// One structured log line per peer transition (docs/operations.md §5): online at
/// INFO, offline (it said goodbye) at INFO, gone (silent) at WARN.
fn log_peer_transition(peer: &FleetEntry, before: Option<PeerStatus>) {
    let (status, message) = match peer.status {
        PeerStatus::Online => ("online", "peer instance online"),
        PeerStatus::Offline => ("offline", "peer instance offline: it said goodbye"),
        PeerStatus::Gone => ("gone", "peer instance gone: silent for 3 heartbeats"),
        PeerStatus::Unknown => return,
    };
    let (peer_id, host) = (&peer.server_id, peer.metadata.host.as_deref());
    let previous = before.map(PeerStatus::label);
    // tracing fixes a line's level at the call site: one call per level.
    if peer.status == PeerStatus::Gone {
        tracing::warn!(peer = %peer_id, host, previous, status, "{message}");
    } else {
        tracing::info!(peer = %peer_id, host, previous, status, "{message}");
    }
}

fn because(error: &Option<String>) -> String {
    error.as_ref().map_or(String::new(), |e| format!(": {e}"))
}

impl Watcher {
    /// Record what changed since the last call.
    pub(crate) fn observe(&mut self, now: &Observed, now_ms: i64, log: &EventLog) {
        let first = self.last.is_none();
        let last = self.last.take().unwrap_or_default();
        storage_events(&last, now, first, now_ms, log);
        self.pubsub_events(&last, now, first, now_ms, log);
        self.peer_events(now, now_ms, log);
        if !first {
            counter_events(&last, now, now_ms, log);
        }
        log.flush(now_ms);
        self.last = Some(now.clone());
    }

    /// Pub/sub lost and back.
    fn pubsub_events(
        &mut self,
        last: &Observed,
        now: &Observed,
        first: bool,
        now_ms: i64,
        log: &EventLog,
    ) {
        // Lost when seen going from connected to disconnected; back when a
        // connection was re-established (the reconnect counter also tells of a loss
        // shorter than a look, or one under way at the first look).
        if last.pubsub == Some(PubSubState::Connected)
            && now.pubsub == Some(PubSubState::Disconnected)
        {
            self.lost = true;
            let why = because(&now.pubsub_error);
            log.record(
                now_ms,
                EventKind::PubsubLost,
                format!("Redis pub/sub lost: instances are cut off from each other{why}"),
            );
        }
        let reconnected = !first && now.pubsub_reconnects > last.pubsub_reconnects;
        if now.pubsub == Some(PubSubState::Connected) && (reconnected || self.lost) {
            if !self.lost {
                let why = because(&now.pubsub_error);
                log.record(
                    now_ms,
                    EventKind::PubsubLost,
                    format!("Redis pub/sub lost briefly{why}"),
                );
            }
            self.lost = false;
            log.record(
                now_ms,
                EventKind::PubsubBack,
                "Redis pub/sub back: resynchronising live documents",
            );
        }
    }

    /// Peers coming online, saying goodbye or going silent.
    fn peer_events(&mut self, now: &Observed, now_ms: i64, log: &EventLog) {
        for peer in &now.peers {
            let before = self.peers.insert(peer.server_id.clone(), peer.status);
            if before == Some(peer.status) {
                continue;
            }
            let name = peer_name(peer);
            log_peer_transition(peer, before);
            match peer.status {
                PeerStatus::Online => {
                    log.record(now_ms, EventKind::PeerOnline, format!("peer {name} online"))
                }
                PeerStatus::Offline => log.record(
                    now_ms,
                    EventKind::PeerOffline,
                    format!("peer {name} offline (said goodbye)"),
                ),
                PeerStatus::Gone => log.record(
                    now_ms,
                    EventKind::PeerGone,
                    format!("peer {name} gone (silent for 3 heartbeats)"),
                ),
                PeerStatus::Unknown => {}
            }
        }
        self.peers
            .retain(|id, _| now.peers.iter().any(|p| &p.server_id == id));
    }
}

/// Storage degraded and recovered (also a failure shorter than a look).
fn storage_events(last: &Observed, now: &Observed, first: bool, now_ms: i64, log: &EventLog) {
    let brief_storage = !first
        && !now.storage_degraded
        && !last.storage_degraded
        && now.storage_failures > last.storage_failures;
    if brief_storage {
        let why = because(&now.storage_error);
        log.record(
            now_ms,
            EventKind::StorageDegraded,
            format!("storage failed briefly{why}"),
        );
        log.record(now_ms, EventKind::StorageRecovered, "storage recovered");
    }
    if now.storage_degraded != last.storage_degraded {
        if now.storage_degraded {
            let why = because(&now.storage_error);
            log.record(
                now_ms,
                EventKind::StorageDegraded,
                format!("storage degraded: writes wait in memory{why}"),
            );
        } else {
            log.record(
                now_ms,
                EventKind::StorageRecovered,
                "storage recovered: queued writes are being committed",
            );
        }
    }
}

/// Refusals since the last look, one summarised event per kind.
fn counter_events(last: &Observed, now: &Observed, now_ms: i64, log: &EventLog) {
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    let n = delta(now.auth_failures, last.auth_failures);
    log.note(
        now_ms,
        EventKind::AuthFailures,
        n,
        format!("{n} rejected credentials"),
    );
    let n = delta(now.rate_limited, last.rate_limited);
    log.note(
        now_ms,
        EventKind::RateLimited,
        n,
        format!("{n} messages refused by the rate limit"),
    );
    let refused: Vec<String> = now
        .refused
        .iter()
        .filter_map(|(reason, n)| {
            let d = delta(*n, last.refused.get(reason).copied().unwrap_or(0));
            (d > 0).then(|| format!("{reason} {d}"))
        })
        .collect();
    let n = delta(now.refused.values().sum(), last.refused.values().sum());
    log.note(
        now_ms,
        EventKind::InputRefused,
        n,
        format!("{n} client messages refused ({})", refused.join(", ")),
    );
    let n = delta(now.slow_clients_closed, last.slow_clients_closed);
    log.note(
        now_ms,
        EventKind::SlowClientClosed,
        n,
        format!("{n} slow clients closed (1013)"),
    );
}

fn observe(state: &AppState) -> Observed {
    let m = &state.sync.metrics;
    let storage = state.sync.hub.storage();
    let health = state.sync.hub.pubsub().health();
    Observed {
        storage_degraded: storage.is_degraded(),
        storage_error: storage.last_error(),
        pubsub: Some(state.sync.hub.pubsub().state()),
        pubsub_error: health.last_error,
        peers: state.sync.fleet.instances(state.sync.now_ms()),
        pubsub_reconnects: health.reconnects,
        storage_failures: storage
            .counters
            .failed_attempts
            .load(std::sync::atomic::Ordering::Relaxed),
        auth_failures: m.auth_failures.get(),
        rate_limited: m.rate_limited.get(),
        refused: crate::metrics::Refusal::ALL
            .iter()
            .filter(|r| **r != crate::metrics::Refusal::RateLimited)
            .map(|r| (r.label(), m.refusals(*r)))
            .collect(),
        slow_clients_closed: m.slow_clients_closed.get(),
    }
}

/// Watch until cancelled.
pub(crate) async fn run(state: Arc<AppState>, cancel: CancellationToken) {
    let mut watcher = Watcher::default();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        watcher.observe(&observe(&state), state.sync.now_ms(), &state.sync.events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, status: PeerStatus) -> FleetEntry {
        FleetEntry {
            server_id: id.into(),
            status,
            ..FleetEntry::default()
        }
    }

    #[test]
    fn refused_client_input_is_one_summarised_event_naming_the_reasons() {
        let log = EventLog::default();
        let mut w = Watcher::default();
        let mut o = Observed {
            refused: [("json_depth", 2), ("nul_character", 0)]
                .into_iter()
                .collect(),
            ..Observed::default()
        };
        w.observe(&o, 500, &log);
        o.refused.insert("json_depth", 5);
        o.refused.insert("nul_character", 1);
        w.observe(&o, 1_000, &log);
        let (events, _) = log.page(0, 100);
        let refused = events
            .iter()
            .find(|e| e.kind == EventKind::InputRefused)
            .expect("recorded");
        assert_eq!(
            refused.message,
            "4 client messages refused (json_depth 3, nul_character 1)"
        );
        assert_eq!(
            EventKind::InputRefused.severity(),
            crate::admin_api::Severity::Warn
        );
    }

    #[test]
    fn transitions_are_recorded_once_and_counters_summarised() {
        let log = EventLog::default();
        let mut w = Watcher::default();
        let mut o = Observed {
            pubsub: Some(PubSubState::Disconnected),
            peers: vec![peer("peer-b-123456", PeerStatus::Online)],
            auth_failures: 5,
            ..Observed::default()
        };
        w.observe(&o, 500, &log);
        o.pubsub = Some(PubSubState::Connected);
        w.observe(&o, 1_000, &log);
        w.observe(&o, 2_000, &log);
        let kinds = |log: &EventLog| -> Vec<EventKind> {
            log.page(0, 100).0.iter().rev().map(|e| e.kind).collect()
        };
        assert_eq!(
            kinds(&log),
            vec![EventKind::PeerOnline],
            "counters start from the first look"
        );
        o.storage_degraded = true;
        o.storage_error = Some("connection refused".into());
        o.pubsub = Some(PubSubState::Disconnected);
        o.peers[0].status = PeerStatus::Offline;
        o.auth_failures = 8;
        w.observe(&o, 3_000, &log);
        w.observe(&o, 4_000, &log);
        o.storage_degraded = false;
        o.pubsub = Some(PubSubState::Connected);
        w.observe(&o, 5_000, &log);
        // Outages shorter than a look show in the counters.
        o.pubsub_reconnects += 1;
        o.storage_failures += 2;
        w.observe(&o, 6_000, &log);
        assert_eq!(
            kinds(&log),
            vec![
                EventKind::PeerOnline,
                EventKind::StorageDegraded,
                EventKind::PubsubLost,
                EventKind::PeerOffline,
                EventKind::AuthFailures,
                EventKind::StorageRecovered,
                EventKind::PubsubBack,
                EventKind::StorageDegraded,
                EventKind::StorageRecovered,
                EventKind::PubsubLost,
                EventKind::PubsubBack,
            ]
        );
        let (events, _) = log.page(0, 100);
        let offline = events
            .iter()
            .find(|e| e.kind == EventKind::PeerOffline)
            .expect("offline");
        assert_eq!(offline.message, "peer peer-b-1 offline (said goodbye)");
        let auth = events
            .iter()
            .find(|e| e.kind == EventKind::AuthFailures)
            .expect("auth");
        assert_eq!(
            (auth.count, auth.message.as_str()),
            (3, "3 rejected credentials")
        );
        let degraded = events
            .iter()
            .find(|e| e.kind == EventKind::StorageDegraded)
            .expect("degraded");
        assert!(
            degraded.message.ends_with(": connection refused"),
            "{}",
            degraded.message
        );
    }

    /// Log lines written while `f` runs, as JSON values.
    fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
        #[derive(Clone, Default)]
        struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = capture.0.lock().expect("capture").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn peer_transitions_are_logged_once_each() {
        let log = EventLog::default();
        let mut w = Watcher::default();
        let mut o = Observed {
            peers: vec![peer("peer-b-123456", PeerStatus::Online)],
            ..Observed::default()
        };
        let lines = logged(|| {
            w.observe(&o, 1_000, &log);
            w.observe(&o, 2_000, &log);
            o.peers[0].status = PeerStatus::Offline;
            w.observe(&o, 3_000, &log);
            w.observe(&o, 4_000, &log);
            o.peers[0].status = PeerStatus::Online;
            w.observe(&o, 5_000, &log);
            o.peers[0].status = PeerStatus::Gone;
            w.observe(&o, 6_000, &log);
            w.observe(&o, 7_000, &log);
        });
        let peers: Vec<(&str, &str, Option<&str>)> = lines
            .iter()
            .filter(|l| l["fields"]["peer"] == "peer-b-123456")
            .map(|l| {
                (
                    l["level"].as_str().unwrap_or(""),
                    l["fields"]["status"].as_str().unwrap_or(""),
                    l["fields"]["previous"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            peers,
            vec![
                ("INFO", "online", None),
                ("INFO", "offline", Some("online")),
                ("INFO", "online", Some("offline")),
                ("WARN", "gone", Some("online")),
            ],
            "{lines:?}"
        );
    }
}
