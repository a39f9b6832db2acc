//! `GET /stats` and `GET /metrics` from one snapshot: [`collect`] reads every number
//! once into the typed [`Stats`] (the admin contract, `crate::admin_api`), `/stats`
//! serialises it, and `/metrics` renders [`METRICS`] — one definition per metric
//! (name, type, help, and the `Stats` field it reads) — over the same value. A
//! metric cannot disagree with `/stats`, and one renamed in `Stats` fails to compile
//! here. The Prometheus text writer is [`render`]; a Prometheus client crate can
//! take its place by registering each [`MetricDef`] as a collector that reads a
//! fresh `Stats` at scrape time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::admin_api::stats::{
    AwarenessStats, BroadcastStats, ByteStats, ConnectionStats, DocumentStats, HistogramBucket,
    IpConnections, LatencyStats, MessageStats, PubSubStats,
};
use crate::admin_api::{FleetEntry, PeerStatus, PresenceMetadata, Stats};
use crate::metrics::{Counter, Refusal, LATENCY_BUCKETS_MS};
use crate::protocol::MessageType;
use crate::pubsub::PubSubState;
use crate::sync::wall_clock_ms;

/// A shared awareness store (Redis, PostgreSQL) slower than this leaves the client
/// count unknown rather than holding up `/stats` and scrapes.
const AWARENESS_COUNT_BUDGET: Duration = Duration::from_millis(500);

pub fn pubsub_label(state: &AppState) -> &'static str {
    match state.sync.hub.pubsub().state() {
        PubSubState::SingleInstance => "single-instance",
        PubSubState::Connected => "connected",
        PubSubState::Disconnected => "disconnected",
    }
}

fn by_type(counters: &[Counter]) -> std::collections::BTreeMap<String, u64> {
    MessageType::ALL
        .iter()
        .filter_map(|t| {
            let n = counters[t.index()].get();
            (n > 0).then(|| (t.name().to_owned(), n))
        })
        .collect()
}

fn latency(h: &crate::metrics::Histogram) -> LatencyStats {
    let mut cumulative = 0;
    let buckets = h
        .buckets()
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            cumulative += n;
            HistogramBucket {
                le: LATENCY_BUCKETS_MS.get(i).copied(),
                count: cumulative,
            }
        })
        .collect();
    LatencyStats {
        count: Some(h.count()),
        sum: Some(h.sum_ms()),
        buckets,
    }
}

/// What this instance tells the fleet about itself (heartbeats, `/stats`).
pub fn self_metadata(state: &AppState) -> PresenceMetadata {
    let hub = &state.sync.hub;
    let interval_ms = i64::try_from(state.config.presence_interval.as_millis()).unwrap_or(i64::MAX);
    PresenceMetadata {
        connections: Some(state.registry.total() as u64),
        documents: Some(hub.document_count() as u64),
        subscriptions: Some(hub.subscription_count() as u64),
        started_at: Some(started_at_ms(state)),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        host: state.host.clone(),
        heartbeat_interval_ms: Some(interval_ms),
        // Where the console can poll this instance's admin API (fleet discovery);
        // only when the configured address names a reachable host and port.
        admin: state
            .config
            .admin_listen
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
            .map(|a| format!("http://{a}")),
        resync: None,
        extra: Default::default(),
    }
}

fn started_at_ms(state: &AppState) -> i64 {
    let uptime_ms = i64::try_from(state.started.elapsed().as_millis()).unwrap_or(i64::MAX);
    wall_clock_ms().saturating_sub(uptime_ms)
}

/// This instance and the peers it hears on the presence channel.
pub fn fleet(state: &AppState) -> Vec<FleetEntry> {
    let now = wall_clock_ms();
    let mut out = vec![FleetEntry {
        server_id: state.instance_id().to_owned(),
        status: PeerStatus::Online,
        is_self: true,
        first_seen: None,
        last_seen: Some(now),
        metadata: self_metadata(state),
    }];
    out.extend(state.sync.fleet.instances(now));
    out
}

/// Every number of this instance, read once.
pub async fn collect(state: &AppState) -> Stats {
    let m = &state.sync.metrics;
    let hub = &state.sync.hub;
    let storage = hub.storage();
    let pubsub = hub.pubsub();
    let health = pubsub.health();
    let awareness_clients =
        match tokio::time::timeout(AWARENESS_COUNT_BUDGET, state.sync.awareness.count()).await {
            Ok(Ok(n)) => Some(n as u64),
            _ => None,
        };
    let mut persistence = storage.status();
    persistence.failures = Some(m.persist_failures.get());
    Stats {
        instance_id: Some(state.instance_id().to_owned()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        host: state.host.clone(),
        started_at_ms: Some(started_at_ms(state)),
        uptime_seconds: Some(state.started.elapsed().as_secs_f64()),
        connections: ConnectionStats {
            open: Some(m.connections_open.get()),
            authenticated: Some(m.connections_authenticated.get()),
            users: Some(m.distinct_users() as u64),
            accepted: Some(m.connections_accepted.get()),
            rejected_per_ip: Some(m.connections_rejected_per_ip.get()),
            rejected_capacity: Some(m.connections_rejected_capacity.get()),
            top_ips: state
                .registry
                .top_ips(10)
                .into_iter()
                .map(|(ip, n)| IpConnections {
                    ip: ip.to_string(),
                    connections: n as u64,
                })
                .collect(),
        },
        documents: DocumentStats {
            cached: Some(hub.document_count() as u64),
            max_cached: Some(state.config.max_cached_documents as u64),
            evicted: Some(m.documents_evicted.get()),
            subscriptions: Some(hub.subscription_count() as u64),
        },
        awareness: AwarenessStats {
            clients: awareness_clients,
            expired: Some(m.awareness_expired.get()),
            store: Some(state.sync.awareness.kind().to_owned()),
        },
        messages: MessageStats {
            inbound: Some(by_type(&m.messages_in)),
            outbound: Some(by_type(&m.messages_out)),
            invalid_frames: Some(m.invalid_frames.get()),
            rate_limited: Some(m.rate_limited.get()),
        },
        bytes: ByteStats {
            inbound: Some(m.bytes_in.get()),
            outbound: Some(m.bytes_out.get()),
        },
        errors: Some(m.errors().into_iter().collect()),
        refusals: Some(
            Refusal::ALL
                .iter()
                .map(|r| (r.label().to_owned(), m.refusals(*r)))
                .collect(),
        ),
        acks_sent: Some(m.acks_sent.get()),
        auth_failures: Some(m.auth_failures.get()),
        broadcast: BroadcastStats {
            flushes: Some(m.broadcast_flushes.get()),
            deliveries: Some(m.broadcast_deliveries.get()),
            slow_clients_closed: Some(m.slow_clients_closed.get()),
            latency_ms: latency(&m.broadcast_latency),
        },
        persistence,
        pubsub: PubSubStats {
            backend: Some(pubsub.kind().to_owned()),
            state: Some(pubsub_label(state).to_owned()),
            published: Some(m.pubsub_published.get()),
            received: Some(m.pubsub_received.get()),
            dropped: Some(health.dropped),
            receive_dropped: Some(health.receive_dropped),
            reconnects: Some(health.reconnects),
            ping_ms: health.ping_ms,
            last_error: health.last_error,
            resyncs: Some(m.resync_rounds.get()),
            resynced_fields: Some(m.resync_fields.get()),
        },
        instances: fleet(state),
    }
}

pub async fn stats(State(state): State<Arc<AppState>>) -> Response {
    Json(collect(&state).await).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = collect(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&stats),
    )
        .into_response()
}

/// Prometheus metric types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Where a metric's value comes from.
pub enum Source {
    /// One value; `None` leaves the metric out of this scrape (unknown).
    Value(fn(&Stats) -> Option<f64>),
    /// One series per label value.
    Labeled {
        label: &'static str,
        series: fn(&Stats) -> Vec<(String, f64)>,
    },
}

/// One metric: `synckit_<name>`.
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub source: Source,
}

fn n(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn i(v: Option<i64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn flag(v: bool) -> f64 {
    f64::from(u8::from(v))
}

/// Every message type, 0 for those never seen (`/stats` leaves them out).
fn per_type(map: &Option<std::collections::BTreeMap<String, u64>>) -> Vec<(String, f64)> {
    let Some(map) = map else { return Vec::new() };
    MessageType::ALL
        .iter()
        .map(|t| {
            let v = map.get(t.name()).copied().unwrap_or(0);
            (t.name().to_owned(), v as f64)
        })
        .collect()
}

macro_rules! metric {
    ($name:literal, $kind:ident, $help:literal, |$s:ident| $value:expr) => {
        MetricDef {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            source: Source::Value(|$s: &Stats| $value),
        }
    };
}

/// The metrics `/metrics` exports, in order (plus the broadcast latency histogram,
/// rendered from `broadcast.latencyMs`).
pub const METRICS: &[MetricDef] = &[
    metric!(
        "uptime_seconds",
        Gauge,
        "Seconds since the process started.",
        |s| s.uptime_seconds
    ),
    metric!(
        "connections_open",
        Gauge,
        "Open WebSocket connections.",
        |s| i(s.connections.open)
    ),
    metric!(
        "connections_authenticated",
        Gauge,
        "Authenticated connections.",
        |s| i(s.connections.authenticated)
    ),
    metric!("users", Gauge, "Distinct authenticated user ids.", |s| n(s
        .connections
        .users)),
    metric!(
        "connections_accepted_total",
        Counter,
        "Connections accepted.",
        |s| n(s.connections.accepted)
    ),
    metric!(
        "connections_rejected_per_ip_total",
        Counter,
        "Connections refused by the per-IP limit.",
        |s| n(s.connections.rejected_per_ip)
    ),
    metric!(
        "connections_rejected_capacity_total",
        Counter,
        "Connections refused at capacity.",
        |s| n(s.connections.rejected_capacity)
    ),
    metric!(
        "documents_cached",
        Gauge,
        "Documents loaded in memory.",
        |s| n(s.documents.cached)
    ),
    metric!(
        "bytes_in_total",
        Counter,
        "WebSocket payload bytes received.",
        |s| n(s.bytes.inbound)
    ),
    metric!(
        "bytes_out_total",
        Counter,
        "WebSocket payload bytes sent.",
        |s| n(s.bytes.outbound)
    ),
    metric!(
        "invalid_frames_total",
        Counter,
        "Frames that could not be decoded.",
        |s| n(s.messages.invalid_frames)
    ),
    metric!(
        "rate_limited_total",
        Counter,
        "Messages rejected by the rate limit.",
        |s| n(s.messages.rate_limited)
    ),
    metric!(
        "acks_sent_total",
        Counter,
        "Acks sent for durable writes.",
        |s| n(s.acks_sent)
    ),
    metric!(
        "auth_failures_total",
        Counter,
        "Rejected credentials.",
        |s| n(s.auth_failures)
    ),
    metric!(
        "broadcast_flushes_total",
        Counter,
        "Broadcast batches flushed.",
        |s| n(s.broadcast.flushes)
    ),
    metric!(
        "broadcast_deliveries_total",
        Counter,
        "Broadcast messages queued to subscribers.",
        |s| n(s.broadcast.deliveries)
    ),
    metric!(
        "slow_clients_closed_total",
        Counter,
        "Connections closed for reading too slowly.",
        |s| n(s.broadcast.slow_clients_closed)
    ),
    metric!(
        "persist_backlog",
        Gauge,
        "Writes accepted but not yet durable.",
        |s| n(s.persistence.backlog)
    ),
    metric!(
        "persist_committed_writes_total",
        Counter,
        "Writes committed to storage.",
        |s| n(s.persistence.committed_writes)
    ),
    metric!(
        "persist_retries_total",
        Counter,
        "Storage attempts that failed because it was unreachable (then retried).",
        |s| n(s.persistence.failed_attempts)
    ),
    metric!(
        "persist_refused_total",
        Counter,
        "Writes refused because the write queue was full.",
        |s| n(s.persistence.refused_full)
    ),
    metric!(
        "session_queue",
        Gauge,
        "Session row changes waiting to be written behind.",
        |s| n(s.persistence.session_queue)
    ),
    metric!(
        "session_writes_dropped_total",
        Counter,
        "Session row changes dropped because the session queue was full (repaired by the next reconciliation).",
        |s| n(s.persistence.sessions_dropped)
    ),
    metric!(
        "storage_degraded",
        Gauge,
        "1 while storage is unreachable and writes wait in memory.",
        |s| s.persistence.degraded.map(flag)
    ),
    metric!(
        "documents_evicted_total",
        Counter,
        "Idle documents unloaded to bound memory.",
        |s| n(s.documents.evicted)
    ),
    metric!(
        "persist_failures_total",
        Counter,
        "Writes that failed to persist.",
        |s| n(s.persistence.failures)
    ),
    metric!(
        "pubsub_published_total",
        Counter,
        "Messages published to other instances.",
        |s| n(s.pubsub.published)
    ),
    metric!(
        "pubsub_received_total",
        Counter,
        "Messages received from other instances.",
        |s| n(s.pubsub.received)
    ),
    metric!(
        "pubsub_dropped_total",
        Counter,
        "Messages for other instances dropped (queue full or Redis unreachable).",
        |s| n(s.pubsub.dropped)
    ),
    metric!(
        "pubsub_receive_dropped_total",
        Counter,
        "Messages from other instances dropped because the relay fell behind.",
        |s| n(s.pubsub.receive_dropped)
    ),
    metric!(
        "pubsub_reconnects_total",
        Counter,
        "Pub/sub connections re-established after a loss.",
        |s| n(s.pubsub.reconnects)
    ),
    metric!(
        "pubsub_connected",
        Gauge,
        "1 while the pub/sub backend is connected (or single-instance).",
        |s| s
            .pubsub
            .state
            .as_deref()
            .map(|st| flag(st != "disconnected"))
    ),
    metric!(
        "pubsub_ping_ms",
        Gauge,
        "Round trip of the last pub/sub health PING.",
        |s| s.pubsub.ping_ms
    ),
    metric!(
        "resync_rounds_total",
        Counter,
        "Resynchronisations of live documents from storage after pub/sub outages.",
        |s| n(s.pubsub.resyncs)
    ),
    metric!(
        "resync_fields_total",
        Counter,
        "Fields changed by those resynchronisations.",
        |s| n(s.pubsub.resynced_fields)
    ),
    metric!(
        "log_lines_dropped_total",
        Counter,
        "Log lines dropped because stderr was closed or could not keep up.",
        |_s| Some(crate::telemetry::dropped_lines() as f64)
    ),
    metric!(
        "awareness_expired_total",
        Counter,
        "Awareness entries expired.",
        |s| n(s.awareness.expired)
    ),
    MetricDef {
        name: "messages_in_total",
        kind: Kind::Counter,
        help: "Messages received by type.",
        source: Source::Labeled {
            label: "type",
            series: |s| per_type(&s.messages.inbound),
        },
    },
    MetricDef {
        name: "messages_out_total",
        kind: Kind::Counter,
        help: "Messages sent by type.",
        source: Source::Labeled {
            label: "type",
            series: |s| per_type(&s.messages.outbound),
        },
    },
    MetricDef {
        name: "refusals_total",
        kind: Kind::Counter,
        help: "Client input refused, by reason (README \"Limits and refusals\").",
        source: Source::Labeled {
            label: "reason",
            series: |s| {
                s.refusals
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), *v as f64))
                    .collect()
            },
        },
    },
    MetricDef {
        name: "errors_total",
        kind: Kind::Counter,
        help: "Error replies by message.",
        source: Source::Labeled {
            label: "error",
            series: |s| {
                s.errors
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), *v as f64))
                    .collect()
            },
        },
    },
];

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The Prometheus text exposition of `stats`.
pub fn render(stats: &Stats) -> String {
    let mut out = String::with_capacity(4096);
    for def in METRICS {
        let name = def.name;
        match &def.source {
            Source::Value(value) => {
                let Some(v) = value(stats) else { continue };
                let _ = writeln!(
                    out,
                    "# HELP synckit_{name} {}\n# TYPE synckit_{name} {}\nsynckit_{name} {v}",
                    def.help,
                    def.kind.name()
                );
            }
            Source::Labeled { label, series } => {
                let _ = writeln!(
                    out,
                    "# HELP synckit_{name} {}\n# TYPE synckit_{name} {}",
                    def.help,
                    def.kind.name()
                );
                for (value, v) in series(stats) {
                    let _ = writeln!(out, "synckit_{name}{{{label}=\"{}\"}} {v}", escape(&value));
                }
            }
        }
    }
    let h = &stats.broadcast.latency_ms;
    let _ = writeln!(out, "# HELP synckit_broadcast_latency_ms Time from first queued field to fan-out.\n# TYPE synckit_broadcast_latency_ms histogram");
    for b in &h.buckets {
        let le = b.le.map_or("+Inf".to_owned(), |le| le.to_string());
        let _ = writeln!(
            out,
            "synckit_broadcast_latency_ms_bucket{{le=\"{le}\"}} {}",
            b.count
        );
    }
    let _ = writeln!(
        out,
        "synckit_broadcast_latency_ms_sum {}\nsynckit_broadcast_latency_ms_count {}",
        h.sum.unwrap_or(0.0),
        h.count.unwrap_or(0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_reads_its_stats_field_and_unknowns_are_left_out() {
        let mut stats = Stats::default();
        stats.connections.open = Some(3);
        stats.persistence.degraded = Some(true);
        stats.messages.inbound = Some([("ping".to_owned(), 2)].into_iter().collect());
        stats.errors = Some([("Bad \"x\"".to_owned(), 1)].into_iter().collect());
        let text = render(&stats);
        assert!(
            text.contains("# TYPE synckit_connections_open gauge\nsynckit_connections_open 3\n")
        );
        assert!(text.contains("synckit_storage_degraded 1\n"));
        assert!(text.contains("synckit_messages_in_total{type=\"ping\"} 2\n"));
        assert!(text.contains("synckit_messages_in_total{type=\"delta\"} 0\n"));
        assert!(text.contains("synckit_errors_total{error=\"Bad \\\"x\\\"\"} 1\n"));
        assert!(
            !text.contains("synckit_users "),
            "unknown values are not exported as 0"
        );
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "one definition per metric");
    }
}
