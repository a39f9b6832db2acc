//! `GET /stats` and `GET /metrics` from one snapshot: `collect` reads every number
//! once into the typed [`Stats`] (the admin contract, `crate::admin_api`), `/stats`
//! serialises it, and `/metrics` renders [`METRICS`] — one definition per metric
//! (name, type, base unit, help, and what it reads) — over the same value plus what
//! `/stats` does not carry (process, PostgreSQL pool and timings, maintenance runs).
//! A metric cannot disagree with `/stats`, and one renamed in `Stats` fails to
//! compile here. The exposition is written by prometheus-client: the scrape is one
//! collector that encodes every definition (README "Monitoring" says why this crate).

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

/// A shared awareness store (Redis, PostgreSQL) slower than this leaves the client
/// count unknown rather than holding up `/stats` and scrapes.
const AWARENESS_COUNT_BUDGET: Duration = Duration::from_millis(500);

pub(crate) fn pubsub_label(state: &AppState) -> &'static str {
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
pub(crate) fn self_metadata(state: &AppState) -> PresenceMetadata {
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
    state.sync.now_ms().saturating_sub(uptime_ms)
}

/// This instance and the peers it hears on the presence channel.
pub(crate) fn fleet(state: &AppState) -> Vec<FleetEntry> {
    let now = state.sync.now_ms();
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
pub(crate) async fn collect(state: &AppState) -> Stats {
    let m = &state.sync.metrics;
    let hub = &state.sync.hub;
    let storage = hub.storage();
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
        connections: connection_stats(state),
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
            writers_paced: Some(m.writers_paced.get()),
            latency_ms: latency(&m.broadcast_latency),
        },
        persistence,
        pubsub: pubsub_stats(state),
        instances: fleet(state),
    }
}

/// The connection numbers of [`collect`], with the addresses holding the most.
fn connection_stats(state: &AppState) -> ConnectionStats {
    let m = &state.sync.metrics;
    ConnectionStats {
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
    }
}

/// The pub/sub numbers of [`collect`]: the backend's health and the resyncs.
fn pubsub_stats(state: &AppState) -> PubSubStats {
    let m = &state.sync.metrics;
    let pubsub = state.sync.hub.pubsub();
    let health = pubsub.health();
    PubSubStats {
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
    }
}

pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Response {
    Json(collect(&state).await).into_response()
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let scrape = Scrape {
        stats: collect(&state).await,
        extra: extra(&state),
    };
    match render(scrape) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics",
        )
            .into_response(),
    }
}

/// The OpenMetrics text format prometheus-client writes (Prometheus negotiates it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reads: the `/stats` snapshot, and the numbers `/stats` does not
/// carry (process, PostgreSQL pool and timings, maintenance runs).
#[derive(Debug, Default)]
pub struct Scrape {
    pub(crate) stats: Stats,
    pub(crate) extra: Extra,
}

#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) process: super::process::ProcessStats,
    /// PostgreSQL pool: (open connections, idle ones, the most it opens).
    pub(crate) pool: Option<(u32, usize, u32)>,
    pub(crate) postgres_acquire: Option<HistogramValue>,
    /// Per operation (`write_batch`, `load_document`).
    postgres_queries: Vec<(String, HistogramValue)>,
    pub(crate) jobs: Vec<(String, crate::metrics::JobTotals)>,
}

fn extra(state: &AppState) -> Extra {
    let process = &crate::metrics::PROCESS;
    let pool = state.postgres.as_ref();
    Extra {
        process: super::process::read(),
        pool: pool.map(|p| (p.size(), p.num_idle(), p.options().get_max_connections())),
        postgres_acquire: pool
            .is_some()
            .then(|| HistogramValue::from_ms(&process.postgres_acquire)),
        postgres_queries: if pool.is_some() {
            vec![
                (
                    "write_batch".to_owned(),
                    HistogramValue::from_ms(&process.postgres_write),
                ),
                (
                    "load_document".to_owned(),
                    HistogramValue::from_ms(&process.postgres_load),
                ),
            ]
        } else {
            Vec::new()
        },
        jobs: process.jobs(),
    }
}

/// A histogram in seconds: non-cumulative bucket counts by upper bound (the last
/// is `+Inf`), as prometheus-client encodes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistogramValue {
    pub(crate) sum: f64,
    pub(crate) count: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl HistogramValue {
    /// One of the millisecond histograms of `crate::metrics`, in seconds.
    fn from_ms(h: &crate::metrics::Histogram) -> HistogramValue {
        HistogramValue {
            sum: h.sum_ms() / 1000.0,
            count: h.count(),
            buckets: h
                .buckets()
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let le = LATENCY_BUCKETS_MS.get(i).map_or(f64::MAX, |ms| ms / 1000.0);
                    (le, n)
                })
                .collect(),
        }
    }

    /// The broadcast latency of `/stats` (cumulative counts in ms), in seconds.
    fn from_stats(l: &LatencyStats) -> HistogramValue {
        let mut previous = 0;
        if l.buckets.is_empty() {
            // Every histogram has its +Inf bucket, even one `/stats` left empty.
            return HistogramValue {
                sum: l.sum.unwrap_or(0.0) / 1000.0,
                count: l.count.unwrap_or(0),
                buckets: vec![(f64::MAX, l.count.unwrap_or(0))],
            };
        }
        HistogramValue {
            sum: l.sum.unwrap_or(0.0) / 1000.0,
            count: l.count.unwrap_or(0),
            buckets: l
                .buckets
                .iter()
                .map(|b| {
                    let n = b.count.saturating_sub(previous);
                    previous = b.count;
                    (b.le.map_or(f64::MAX, |ms| ms / 1000.0), n)
                })
                .collect(),
        }
    }

    fn from_job(t: &crate::metrics::JobTotals) -> HistogramValue {
        HistogramValue {
            sum: t.seconds,
            count: t.runs,
            buckets: t
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let le = crate::metrics::JOB_BUCKETS_SECONDS
                        .get(i)
                        .copied()
                        .unwrap_or(f64::MAX);
                    (le, *n)
                })
                .collect(),
        }
    }
}

/// Metric types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels carry the information (`synckit_build_info`).
    Info,
}

impl Kind {
    fn metric_type(self) -> prometheus_client::metrics::MetricType {
        use prometheus_client::metrics::MetricType;
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Info => MetricType::Info,
        }
    }
}

/// Base units, appended to the name as Prometheus expects (`_seconds`, `_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseUnit {
    Seconds,
    Bytes,
}

impl BaseUnit {
    fn unit(self) -> prometheus_client::registry::Unit {
        match self {
            BaseUnit::Seconds => prometheus_client::registry::Unit::Seconds,
            BaseUnit::Bytes => prometheus_client::registry::Unit::Bytes,
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    fn suffix(self) -> &'static str {
        match self {
            BaseUnit::Seconds => "_seconds",
            BaseUnit::Bytes => "_bytes",
        }
    }
}

/// One sample of a metric: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: SampleValue,
}

#[derive(Debug, Clone)]
pub(crate) enum SampleValue {
    Number(f64),
    Histogram(HistogramValue),
}

/// Where a metric's value comes from.
pub enum Source {
    /// One value of `/stats`; `None` leaves the metric out of this scrape (unknown).
    Value(fn(&Stats) -> Option<f64>),
    /// One series per label value of `/stats`.
    Labeled {
        label: &'static str,
        series: fn(&Stats) -> Vec<(String, f64)>,
    },
    /// Anything else of the scrape: histograms, several labels, values `/stats`
    /// does not carry.
    Samples(fn(&Scrape) -> Vec<Sample>),
}

/// One metric. `name` is the family name without its unit and `_total`, which
/// prometheus-client appends: `synckit_uptime` with unit seconds is exported as
/// `synckit_uptime_seconds`, the counter `synckit_acks_sent` as `synckit_acks_sent_total`.
pub struct MetricDef {
    pub name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) unit: Option<BaseUnit>,
    pub(crate) help: &'static str,
    pub source: Source,
}

impl MetricDef {
    /// The family name as exported (with the unit).
    #[cfg(any(test, feature = "test-util"))]
    pub fn family(&self) -> String {
        format!("{}{}", self.name, self.unit.map_or("", BaseUnit::suffix))
    }

    /// The name of a plain sample (counters end in `_total`, info in `_info`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn sample_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.family()),
            Kind::Info => format!("{}_info", self.family()),
            _ => self.family(),
        }
    }
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

fn one(value: Option<f64>) -> Vec<Sample> {
    value
        .map(|v| Sample {
            labels: Vec::new(),
            value: SampleValue::Number(v),
        })
        .into_iter()
        .collect()
}

fn by_job(
    s: &Scrape,
    value: impl Fn(&crate::metrics::JobTotals) -> Option<SampleValue>,
) -> Vec<Sample> {
    s.extra
        .jobs
        .iter()
        .filter_map(|(job, t)| {
            value(t).map(|value| Sample {
                labels: vec![("task", job.clone())],
                value,
            })
        })
        .collect()
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

/// One table entry; `metric!` and `samples!` differ only in the [`Source`] variant
/// and what its function reads.
macro_rules! metric_def {
    ($source:ident($arg:ty), $name:literal, $kind:ident, $unit:expr, $help:literal, |$s:ident| $value:expr) => {
        MetricDef {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            help: $help,
            source: Source::$source(|$s: &$arg| $value),
        }
    };
}

macro_rules! metric {
    ($name:literal, $kind:ident, $help:literal, |$s:ident| $value:expr) => {
        metric!($name, $kind, None, $help, |$s| $value)
    };
    ($name:literal, $kind:ident, $unit:expr, $help:literal, |$s:ident| $value:expr) => {
        metric_def!(Value(Stats), $name, $kind, $unit, $help, |$s| $value)
    };
}

macro_rules! samples {
    ($name:literal, $kind:ident, $unit:expr, $help:literal, |$s:ident| $value:expr) => {
        metric_def!(Samples(Scrape), $name, $kind, $unit, $help, |$s| $value)
    };
}

const SECONDS: Option<BaseUnit> = Some(BaseUnit::Seconds);
const BYTES: Option<BaseUnit> = Some(BaseUnit::Bytes);

/// Every metric `/metrics` exports, in order (README "Monitoring" lists them).
pub const METRICS: &[MetricDef] = &[
    samples!(
        "synckit_build",
        Info,
        None,
        "The running synckit: version and build profile.",
        |_s| vec![Sample {
            labels: vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                (
                    "profile",
                    if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned()
                ),
            ],
            value: SampleValue::Number(1.0),
        }]
    ),
    metric!(
        "synckit_uptime",
        Gauge,
        SECONDS,
        "Time since the server started.",
        |s| s.uptime_seconds
    ),
    metric!(
        "synckit_connections_open",
        Gauge,
        "Open WebSocket connections.",
        |s| i(s.connections.open)
    ),
    metric!(
        "synckit_connections_authenticated",
        Gauge,
        "Authenticated connections.",
        |s| i(s.connections.authenticated)
    ),
    metric!(
        "synckit_users",
        Gauge,
        "Distinct authenticated user ids.",
        |s| n(s.connections.users)
    ),
    metric!(
        "synckit_connections_accepted",
        Counter,
        "Connections accepted.",
        |s| n(s.connections.accepted)
    ),
    metric!(
        "synckit_connections_rejected_per_ip",
        Counter,
        "Connections refused by the per-IP limit.",
        |s| n(s.connections.rejected_per_ip)
    ),
    metric!(
        "synckit_connections_rejected_capacity",
        Counter,
        "Connections refused at capacity.",
        |s| n(s.connections.rejected_capacity)
    ),
    metric!(
        "synckit_documents_cached",
        Gauge,
        "Documents loaded in memory.",
        |s| n(s.documents.cached)
    ),
    metric!(
        "synckit_subscriptions",
        Gauge,
        "Document subscriptions of this instance's connections.",
        |s| n(s.documents.subscriptions)
    ),
    metric!(
        "synckit_awareness_clients",
        Gauge,
        "Awareness (presence) entries in the store (left out when a shared store is slow to answer).",
        |s| n(s.awareness.clients)
    ),
    metric!(
        "synckit_websocket_received",
        Counter,
        BYTES,
        "WebSocket payload received.",
        |s| n(s.bytes.inbound)
    ),
    metric!(
        "synckit_websocket_sent",
        Counter,
        BYTES,
        "WebSocket payload sent.",
        |s| n(s.bytes.outbound)
    ),
    metric!(
        "synckit_invalid_frames",
        Counter,
        "Frames that could not be decoded.",
        |s| n(s.messages.invalid_frames)
    ),
    metric!(
        "synckit_rate_limited",
        Counter,
        "Messages rejected by the rate limit.",
        |s| n(s.messages.rate_limited)
    ),
    metric!(
        "synckit_acks_sent",
        Counter,
        "Acks sent for durable writes.",
        |s| n(s.acks_sent)
    ),
    metric!(
        "synckit_auth_failures",
        Counter,
        "Rejected credentials.",
        |s| n(s.auth_failures)
    ),
    metric!(
        "synckit_broadcast_flushes",
        Counter,
        "Broadcast batches flushed.",
        |s| n(s.broadcast.flushes)
    ),
    metric!(
        "synckit_broadcast_deliveries",
        Counter,
        "Broadcast messages queued to subscribers.",
        |s| n(s.broadcast.deliveries)
    ),
    samples!(
        "synckit_broadcast_latency",
        Histogram,
        SECONDS,
        "Time from a document's first queued change to its fan-out.",
        |s| vec![Sample {
            labels: Vec::new(),
            value: SampleValue::Histogram(HistogramValue::from_stats(&s.stats.broadcast.latency_ms)),
        }]
    ),
    metric!(
        "synckit_slow_clients_closed",
        Counter,
        "Connections closed for reading too slowly.",
        |s| n(s.broadcast.slow_clients_closed)
    ),
    metric!(
        "synckit_writers_paced",
        Counter,
        "Yields of a writer (a connection, or the relay of other instances' writes) whose broadcast left a subscriber half its broadcast budget behind.",
        |s| n(s.broadcast.writers_paced)
    ),
    metric!(
        "synckit_persist_backlog",
        Gauge,
        "Writes accepted but not yet durable.",
        |s| n(s.persistence.backlog)
    ),
    metric!(
        "synckit_persist_committed_writes",
        Counter,
        "Writes committed to storage.",
        |s| n(s.persistence.committed_writes)
    ),
    metric!(
        "synckit_persist_retries",
        Counter,
        "Storage attempts that failed because it was unreachable (then retried).",
        |s| n(s.persistence.failed_attempts)
    ),
    metric!(
        "synckit_persist_refused",
        Counter,
        "Writes refused because the write queue was full.",
        |s| n(s.persistence.refused_full)
    ),
    metric!(
        "synckit_session_queue",
        Gauge,
        "Session row changes waiting to be written behind.",
        |s| n(s.persistence.session_queue)
    ),
    metric!(
        "synckit_session_writes_dropped",
        Counter,
        "Session row changes dropped because the session queue was full (repaired by the next reconciliation).",
        |s| n(s.persistence.sessions_dropped)
    ),
    metric!(
        "synckit_storage_degraded",
        Gauge,
        "1 while storage is unreachable and writes wait in memory.",
        |s| s.persistence.degraded.map(flag)
    ),
    metric!(
        "synckit_documents_evicted",
        Counter,
        "Idle documents unloaded to bound memory.",
        |s| n(s.documents.evicted)
    ),
    metric!(
        "synckit_persist_failures",
        Counter,
        "Writes that failed to persist.",
        |s| n(s.persistence.failures)
    ),
    samples!(
        "synckit_postgres_pool_connections",
        Gauge,
        None,
        "PostgreSQL pool connections by state (open, idle, max).",
        |s| s
            .extra
            .pool
            .map(|(open, idle, max)| {
                [("open", open as f64), ("idle", idle as f64), ("max", f64::from(max))]
                    .into_iter()
                    .map(|(state, v)| Sample {
                        labels: vec![("state", state.to_owned())],
                        value: SampleValue::Number(v),
                    })
                    .collect()
            })
            .unwrap_or_default()
    ),
    samples!(
        "synckit_postgres_acquire",
        Histogram,
        SECONDS,
        "Wait for a pooled PostgreSQL connection (and BEGIN) before a write batch.",
        |s| s
            .extra
            .postgres_acquire
            .clone()
            .map(|h| Sample {
                labels: Vec::new(),
                value: SampleValue::Histogram(h),
            })
            .into_iter()
            .collect()
    ),
    samples!(
        "synckit_postgres_query",
        Histogram,
        SECONDS,
        "PostgreSQL latency of the sync path, by operation (write_batch, load_document).",
        |s| s
            .extra
            .postgres_queries
            .iter()
            .map(|(op, h)| Sample {
                labels: vec![("operation", op.clone())],
                value: SampleValue::Histogram(h.clone()),
            })
            .collect()
    ),
    metric!(
        "synckit_pubsub_published",
        Counter,
        "Messages published to other instances.",
        |s| n(s.pubsub.published)
    ),
    metric!(
        "synckit_pubsub_received",
        Counter,
        "Messages received from other instances.",
        |s| n(s.pubsub.received)
    ),
    metric!(
        "synckit_pubsub_dropped",
        Counter,
        "Messages for other instances dropped (queue full or Redis unreachable).",
        |s| n(s.pubsub.dropped)
    ),
    metric!(
        "synckit_pubsub_receive_dropped",
        Counter,
        "Messages from other instances dropped because the relay fell behind.",
        |s| n(s.pubsub.receive_dropped)
    ),
    metric!(
        "synckit_pubsub_reconnects",
        Counter,
        "Pub/sub connections re-established after a loss.",
        |s| n(s.pubsub.reconnects)
    ),
    metric!(
        "synckit_pubsub_connected",
        Gauge,
        "1 while the pub/sub backend is connected (or single-instance).",
        |s| s
            .pubsub
            .state
            .as_deref()
            .map(|st| flag(st != "disconnected"))
    ),
    samples!(
        "synckit_pubsub_state",
        Gauge,
        None,
        "The pub/sub backend's state: 1 for the current one (single-instance, connected, disconnected).",
        |s| ["single-instance", "connected", "disconnected"]
            .into_iter()
            .map(|state| Sample {
                labels: vec![("state", state.to_owned())],
                value: SampleValue::Number(flag(s.stats.pubsub.state.as_deref() == Some(state))),
            })
            .collect()
    ),
    metric!(
        "synckit_pubsub_ping",
        Gauge,
        SECONDS,
        "Round trip of the last Redis health PING.",
        |s| s.pubsub.ping_ms.map(|ms| ms / 1000.0)
    ),
    metric!(
        "synckit_resync_rounds",
        Counter,
        "Resynchronisations of live documents from storage after pub/sub outages.",
        |s| n(s.pubsub.resyncs)
    ),
    metric!(
        "synckit_resync_fields",
        Counter,
        "Fields changed by those resynchronisations.",
        |s| n(s.pubsub.resynced_fields)
    ),
    metric!(
        "synckit_log_lines_dropped",
        Counter,
        "Log lines dropped because stderr was closed or could not keep up.",
        |_s| Some(crate::telemetry::dropped_lines() as f64)
    ),
    metric!(
        "synckit_awareness_expired",
        Counter,
        "Awareness entries expired.",
        |s| n(s.awareness.expired)
    ),
    samples!(
        "synckit_maintenance_runs",
        Counter,
        None,
        "Maintenance runs this process made, by job.",
        |s| by_job(s, |t| Some(SampleValue::Number(t.runs as f64)))
    ),
    samples!(
        "synckit_maintenance_failures",
        Counter,
        None,
        "Maintenance runs that failed, by job.",
        |s| by_job(s, |t| Some(SampleValue::Number(t.failures as f64)))
    ),
    samples!(
        "synckit_maintenance_duration",
        Histogram,
        SECONDS,
        "Duration of maintenance runs, by job.",
        |s| by_job(s, |t| Some(SampleValue::Histogram(HistogramValue::from_job(t))))
    ),
    samples!(
        "synckit_maintenance_last_success_timestamp",
        Gauge,
        SECONDS,
        "Unix time of the job's last successful run on this process.",
        |s| by_job(s, |t| t.last_success.map(SampleValue::Number))
    ),
    MetricDef {
        name: "synckit_messages_in",
        kind: Kind::Counter,
        unit: None,
        help: "Messages received by type.",
        source: Source::Labeled {
            label: "type",
            series: |s| per_type(&s.messages.inbound),
        },
    },
    MetricDef {
        name: "synckit_messages_out",
        kind: Kind::Counter,
        unit: None,
        help: "Messages sent by type.",
        source: Source::Labeled {
            label: "type",
            series: |s| per_type(&s.messages.outbound),
        },
    },
    MetricDef {
        name: "synckit_refusals",
        kind: Kind::Counter,
        unit: None,
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
        name: "synckit_errors",
        kind: Kind::Counter,
        unit: None,
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
    samples!(
        "process_cpu",
        Counter,
        SECONDS,
        "User and system CPU time spent.",
        |s| one(s.extra.process.cpu_seconds)
    ),
    samples!(
        "process_resident_memory",
        Gauge,
        BYTES,
        "Resident memory size.",
        |s| one(s.extra.process.resident_bytes)
    ),
    samples!(
        "process_virtual_memory",
        Gauge,
        BYTES,
        "Virtual memory size.",
        |s| one(s.extra.process.virtual_bytes)
    ),
    samples!(
        "process_open_fds",
        Gauge,
        None,
        "Open file descriptors.",
        |s| one(s.extra.process.open_fds)
    ),
    samples!(
        "process_max_fds",
        Gauge,
        None,
        "Limit of open file descriptors.",
        |s| one(s.extra.process.max_fds)
    ),
    samples!(
        "process_threads",
        Gauge,
        None,
        "OS threads.",
        |s| one(s.extra.process.threads)
    ),
    samples!(
        "process_start_time",
        Gauge,
        SECONDS,
        "Start time of the process since the Unix epoch.",
        |s| one(s.extra.process.start_time_seconds)
    ),
];

impl MetricDef {
    /// This metric's samples in `scrape`.
    pub(crate) fn samples(&self, scrape: &Scrape) -> Vec<Sample> {
        match &self.source {
            Source::Value(read) => one(read(&scrape.stats)),
            Source::Labeled { label, series } => series(&scrape.stats)
                .into_iter()
                .map(|(value, v)| Sample {
                    labels: vec![(*label, value)],
                    value: SampleValue::Number(v),
                })
                .collect(),
            Source::Samples(read) => read(scrape),
        }
    }
}

/// The scrape as a prometheus-client collector: every [`METRICS`] entry encoded by
/// the crate (names, units, `_total`, histogram buckets).
#[derive(Debug)]
struct Collector(Scrape);

impl prometheus_client::collector::Collector for Collector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        for def in METRICS {
            let samples = def.samples(&self.0);
            // An unknown value is left out rather than exported as 0.
            if samples.is_empty() && !matches!(def.source, Source::Labeled { .. }) {
                continue;
            }
            let unit = def.unit.map(BaseUnit::unit);
            let mut metric = encoder.encode_descriptor(
                def.name,
                def.help,
                unit.as_ref(),
                def.kind.metric_type(),
            )?;
            for sample in &samples {
                // prometheus-client 0.23 writes label values as given: escape them.
                let labels: Vec<(&str, String)> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| (*k, escape_label(v)))
                    .collect();
                if def.kind == Kind::Info {
                    metric.encode_info(&labels)?;
                    continue;
                }
                if labels.is_empty() {
                    encode_value(&mut metric, def.kind, &sample.value)?;
                } else {
                    encode_value(&mut metric.encode_family(&labels)?, def.kind, &sample.value)?;
                }
            }
        }
        Ok(())
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn encode_value(
    metric: &mut prometheus_client::encoding::MetricEncoder,
    kind: Kind,
    value: &SampleValue,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::NoLabelSet;
    // Whole numbers are written as integers (`3`, not `3.0`), as counts are.
    let whole = |v: f64| v.fract() == 0.0 && v.abs() < 9.0e15;
    match (value, kind) {
        (SampleValue::Number(v), Kind::Counter) if whole(*v) && *v >= 0.0 => {
            metric.encode_counter::<NoLabelSet, u64, f64>(&(*v as u64), None)
        }
        (SampleValue::Number(v), Kind::Counter) => {
            metric.encode_counter::<NoLabelSet, f64, f64>(v, None)
        }
        (SampleValue::Number(v), _) if whole(*v) => metric.encode_gauge(&(*v as i64)),
        (SampleValue::Number(v), _) => metric.encode_gauge(v),
        (SampleValue::Histogram(h), _) => {
            metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
        }
    }
}

/// The exposition of one scrape, in the OpenMetrics text format.
pub(crate) fn render(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collector(scrape)));
    let mut out = String::with_capacity(8192);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_reads_its_source_and_unknowns_are_left_out() {
        let mut scrape = Scrape::default();
        scrape.stats.connections.open = Some(3);
        scrape.stats.persistence.degraded = Some(true);
        scrape.stats.messages.inbound = Some([("ping".to_owned(), 2)].into_iter().collect());
        scrape.stats.errors = Some([("Bad \"x\"".to_owned(), 1)].into_iter().collect());
        scrape.stats.uptime_seconds = Some(5.0);
        scrape.stats.broadcast.latency_ms = latency(&crate::metrics::Histogram::default());
        scrape.extra.jobs = vec![(
            "cleanup".into(),
            crate::metrics::JobTotals {
                runs: 1,
                last_success: Some(1_700_000_000.0),
                ..Default::default()
            },
        )];
        let text = render(scrape).expect("encode");
        for expected in [
            "# TYPE synckit_connections_open gauge\nsynckit_connections_open 3\n",
            "synckit_storage_degraded 1\n",
            "# UNIT synckit_uptime_seconds seconds\n",
            "synckit_uptime_seconds 5\n",
            "synckit_messages_in_total{type=\"ping\"} 2",
            "synckit_messages_in_total{type=\"delta\"} 0",
            "synckit_errors_total{error=\"Bad \\\"x\\\"\"} 1",
            "synckit_build_info{version=\"",
            "synckit_broadcast_latency_seconds_bucket{le=\"0.001\"} 0",
            "synckit_maintenance_runs_total{task=\"cleanup\"} 1",
            "synckit_maintenance_last_success_timestamp_seconds{task=\"cleanup\"} 1700000000",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
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
