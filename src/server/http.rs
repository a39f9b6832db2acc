//! Plain HTTP endpoints (OPERATIONS.md §1): info, health probes, stats, Prometheus
//! metrics, rooms; plus the awareness expiry sweep and the common response layers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::{AppState, Lifecycle, ServerConfig};
use crate::metrics::LATENCY_BUCKETS_MS;
use crate::protocol::MessageType;
use crate::pubsub::PubSubState;

pub async fn info() -> Response {
    Json(json!({
        "name": "SyncKit Server",
        "version": env!("CARGO_PKG_VERSION"),
        "implementation": "rust",
        "description": "Production-ready WebSocket sync server",
        "endpoints": {"health": "/health", "ws": "/ws", "auth": "/auth"},
        "features": {
            "websocket": "Real-time sync via WebSocket",
            "auth": "JWT authentication",
            "sync": "Delta-based document synchronization",
            "crdt": "LWW conflict resolution"
        }
    }))
    .into_response()
}

pub fn unavailable(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": reason})),
    )
        .into_response()
}

fn iso_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn pubsub_label(state: &AppState) -> &'static str {
    match state.sync.hub.pubsub().state() {
        PubSubState::SingleInstance => "single-instance",
        PubSubState::Connected => "connected",
        PubSubState::Disconnected => "disconnected",
    }
}

/// TS body, always 200 `healthy` (the upstream test harness needs that); degradation
/// is reported in the extra keys and in `/health/ready`.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let hub = &state.sync.hub;
    let documents: Vec<Value> = if state.config.health_list_documents {
        hub.summaries()
            .into_iter()
            .map(|d| json!({"id": d.id, "subscribers": d.subscribers, "lastModified": d.last_modified_ms}))
            .collect()
    } else {
        Vec::new()
    };
    let storage = storage_label(hub.storage()).await;
    Json(json!({
        "status": "healthy",
        "timestamp": iso_now(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": state.started.elapsed().as_secs_f64(),
        "connections": {
            "totalConnections": state.registry.total(),
            "totalUsers": state.sync.metrics.distinct_users(),
            "totalClients": state.registry.total(),
        },
        "documents": {"totalDocuments": hub.document_count(), "documents": documents},
        "storage": storage,
        "pubsub": pubsub_label(&state),
        "instanceId": state.instance_id(),
    }))
    .into_response()
}

fn probe(status: &str, started: Instant, extra: Value) -> Response {
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({"status": status, "duration": started.elapsed().as_secs_f64() * 1000.0});
    (code, Json(merge(body, extra))).into_response()
}

pub async fn live() -> Response {
    probe("healthy", Instant::now(), Value::Null)
}

/// The pub/sub part of `/health/ready`: backend, state and the last PING round trip.
fn pubsub_check(state: &AppState) -> Value {
    let pubsub = state.sync.hub.pubsub();
    let health = pubsub.health();
    json!({"pubsub": {
        "backend": pubsub.kind(),
        "state": pubsub_label(state),
        "pingMs": health.ping_ms,
        "lastError": health.last_error,
    }})
}

/// Unhealthy while starting or draining; degraded when a configured backend is down
/// (the server keeps serving from memory).
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    if state.lifecycle() != Lifecycle::Ready {
        return probe("unhealthy", started, Value::Null);
    }
    let storage_ok = storage_label(state.sync.hub.storage()).await != "degraded";
    let pubsub_ok = state.sync.hub.pubsub().state() != PubSubState::Disconnected;
    probe(
        if storage_ok && pubsub_ok {
            "healthy"
        } else {
            "degraded"
        },
        started,
        pubsub_check(&state),
    )
}

/// Shallow-merge two JSON objects (`extra` wins).
fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// `memory-only`, `connected`, or `degraded` (unreachable, or writes waiting for it).
async fn storage_label(storage: &crate::storage::Persistence) -> &'static str {
    let reachable = storage.health_check().await.is_ok();
    match (storage.kind(), reachable && !storage.is_degraded()) {
        ("memory", true) => "memory-only",
        (_, true) => "connected",
        (_, false) => "degraded",
    }
}

pub async fn rooms(State(state): State<Arc<AppState>>) -> Response {
    let summaries = state.sync.hub.summaries();
    let rooms: Vec<Value> = summaries
        .iter()
        .filter(|d| d.id.starts_with("room:") && !d.id.contains(":text:"))
        .map(|d| json!({"id": &d.id["room:".len()..], "subscriberCount": d.subscribers, "lastModified": d.last_modified_ms}))
        .collect();
    let wordwall = summaries
        .iter()
        .find(|d| d.id == "wordwall")
        .map(|d| json!({"id": "wordwall", "subscriberCount": d.subscribers, "lastModified": d.last_modified_ms}));
    Json(json!({
        "rooms": rooms,
        "totalConnections": state.registry.total(),
        "totalRooms": rooms.len(),
        "wordwall": wordwall,
    }))
    .into_response()
}

fn by_type(counters: &[crate::metrics::Counter]) -> Value {
    let mut map = serde_json::Map::new();
    for t in MessageType::ALL {
        let n = counters[t.index()].get();
        if n > 0 {
            map.insert(t.name().into(), Value::from(n));
        }
    }
    Value::Object(map)
}

pub async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.sync.metrics;
    let storage = state.sync.hub.storage();
    let top_ips: Vec<Value> = state
        .registry
        .top_ips(10)
        .into_iter()
        .map(|(ip, n)| json!({"ip": ip.to_string(), "connections": n}))
        .collect();
    let errors: serde_json::Map<String, Value> = m
        .errors()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    let awareness_clients = state.sync.awareness.count().await.unwrap_or(0);
    Json(json!({
        "instanceId": state.instance_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.started.elapsed().as_secs_f64(),
        "connections": {
            "open": m.connections_open.get(),
            "authenticated": m.connections_authenticated.get(),
            "users": m.distinct_users(),
            "accepted": m.connections_accepted.get(),
            "rejectedPerIp": m.connections_rejected_per_ip.get(),
            "rejectedCapacity": m.connections_rejected_capacity.get(),
            "topIps": top_ips,
        },
        "documents": {"cached": state.sync.hub.document_count(), "maxCached": state.config.max_cached_documents, "evicted": m.documents_evicted.get(), "subscriptions": state.sync.hub.subscription_count()},
        "awareness": {"clients": awareness_clients, "expired": m.awareness_expired.get(), "store": state.sync.awareness.kind()},
        "messages": {"in": by_type(&m.messages_in), "out": by_type(&m.messages_out), "invalidFrames": m.invalid_frames.get(), "rateLimited": m.rate_limited.get()},
        "bytes": {"in": m.bytes_in.get(), "out": m.bytes_out.get()},
        "errors": errors,
        "acksSent": m.acks_sent.get(),
        "authFailures": m.auth_failures.get(),
        "broadcast": {
            "flushes": m.broadcast_flushes.get(),
            "deliveries": m.broadcast_deliveries.get(),
            "slowClientsClosed": m.slow_clients_closed.get(),
            "latencyMs": {"count": m.broadcast_latency.count(), "sum": m.broadcast_latency.sum_ms()},
        },
        "persistence": merge(storage.status(), json!({"failures": m.persist_failures.get()})),
        "pubsub": pubsub_stats(&state),
        "instances": instances(&state),
    }))
    .into_response()
}

fn pubsub_stats(state: &AppState) -> Value {
    let m = &state.sync.metrics;
    let pubsub = state.sync.hub.pubsub();
    let h = pubsub.health();
    json!({
        "backend": pubsub.kind(),
        "state": pubsub_label(state),
        "published": m.pubsub_published.get(),
        "received": m.pubsub_received.get(),
        "dropped": h.dropped,
        "receiveDropped": h.receive_dropped,
        "reconnects": h.reconnects,
        "pingMs": h.ping_ms,
        "lastError": h.last_error,
        "resyncs": m.resync_rounds.get(),
        "resyncedFields": m.resync_fields.get(),
    })
}

/// This instance and the peers it hears on the presence channel (for the console).
fn instances(state: &AppState) -> Vec<Value> {
    let mut out = vec![super::presence::self_entry(state)];
    out.extend(state.sync.fleet.instances(crate::sync::wall_clock_ms()));
    out
}

/// Prometheus text exposition of the same numbers as `/stats`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.sync.metrics;
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP synckit_{name} {help}\n# TYPE synckit_{name} {kind}\nsynckit_{name} {value}"
        );
    };
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the process started.",
        state.started.elapsed().as_secs_f64(),
    );
    metric(
        "connections_open",
        "gauge",
        "Open WebSocket connections.",
        m.connections_open.get() as f64,
    );
    metric(
        "connections_authenticated",
        "gauge",
        "Authenticated connections.",
        m.connections_authenticated.get() as f64,
    );
    metric(
        "users",
        "gauge",
        "Distinct authenticated user ids.",
        m.distinct_users() as f64,
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        m.connections_accepted.get() as f64,
    );
    metric(
        "connections_rejected_per_ip_total",
        "counter",
        "Connections refused by the per-IP limit.",
        m.connections_rejected_per_ip.get() as f64,
    );
    metric(
        "connections_rejected_capacity_total",
        "counter",
        "Connections refused at capacity.",
        m.connections_rejected_capacity.get() as f64,
    );
    metric(
        "documents_cached",
        "gauge",
        "Documents loaded in memory.",
        state.sync.hub.document_count() as f64,
    );
    metric(
        "bytes_in_total",
        "counter",
        "WebSocket payload bytes received.",
        m.bytes_in.get() as f64,
    );
    metric(
        "bytes_out_total",
        "counter",
        "WebSocket payload bytes sent.",
        m.bytes_out.get() as f64,
    );
    metric(
        "invalid_frames_total",
        "counter",
        "Frames that could not be decoded.",
        m.invalid_frames.get() as f64,
    );
    metric(
        "rate_limited_total",
        "counter",
        "Messages rejected by the rate limit.",
        m.rate_limited.get() as f64,
    );
    metric(
        "acks_sent_total",
        "counter",
        "Acks sent for durable writes.",
        m.acks_sent.get() as f64,
    );
    metric(
        "auth_failures_total",
        "counter",
        "Rejected credentials.",
        m.auth_failures.get() as f64,
    );
    metric(
        "broadcast_flushes_total",
        "counter",
        "Broadcast batches flushed.",
        m.broadcast_flushes.get() as f64,
    );
    metric(
        "broadcast_deliveries_total",
        "counter",
        "Broadcast messages queued to subscribers.",
        m.broadcast_deliveries.get() as f64,
    );
    metric(
        "slow_clients_closed_total",
        "counter",
        "Connections closed for reading too slowly.",
        m.slow_clients_closed.get() as f64,
    );
    metric(
        "persist_backlog",
        "gauge",
        "Writes accepted but not yet durable.",
        state.sync.hub.storage().backlog() as f64,
    );
    let counters = &state.sync.hub.storage().counters;
    let load =
        |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
    metric(
        "persist_committed_writes_total",
        "counter",
        "Writes committed to storage.",
        load(&counters.committed_writes),
    );
    metric(
        "persist_retries_total",
        "counter",
        "Storage attempts that failed because it was unreachable (then retried).",
        load(&counters.failed_attempts),
    );
    metric(
        "persist_refused_total",
        "counter",
        "Writes refused because the write queue was full.",
        load(&counters.refused_full),
    );
    metric(
        "storage_degraded",
        "gauge",
        "1 while storage is unreachable and writes wait in memory.",
        f64::from(u8::from(state.sync.hub.storage().is_degraded())),
    );
    metric(
        "documents_evicted_total",
        "counter",
        "Idle documents unloaded to bound memory.",
        m.documents_evicted.get() as f64,
    );
    metric(
        "persist_failures_total",
        "counter",
        "Writes that failed to persist.",
        m.persist_failures.get() as f64,
    );
    metric(
        "pubsub_published_total",
        "counter",
        "Messages published to other instances.",
        m.pubsub_published.get() as f64,
    );
    metric(
        "pubsub_received_total",
        "counter",
        "Messages received from other instances.",
        m.pubsub_received.get() as f64,
    );
    let health = state.sync.hub.pubsub().health();
    metric(
        "pubsub_dropped_total",
        "counter",
        "Messages for other instances dropped (queue full or Redis unreachable).",
        health.dropped as f64,
    );
    metric(
        "pubsub_receive_dropped_total",
        "counter",
        "Messages from other instances dropped because the relay fell behind.",
        health.receive_dropped as f64,
    );
    metric(
        "pubsub_reconnects_total",
        "counter",
        "Pub/sub connections re-established after a loss.",
        health.reconnects as f64,
    );
    metric(
        "pubsub_connected",
        "gauge",
        "1 while the pub/sub backend is connected (or single-instance).",
        f64::from(u8::from(
            state.sync.hub.pubsub().state() != PubSubState::Disconnected,
        )),
    );
    if let Some(ping) = health.ping_ms {
        metric(
            "pubsub_ping_ms",
            "gauge",
            "Round trip of the last pub/sub health PING.",
            ping,
        );
    }
    metric(
        "resync_rounds_total",
        "counter",
        "Resynchronisations of live documents from storage after pub/sub outages.",
        m.resync_rounds.get() as f64,
    );
    metric(
        "resync_fields_total",
        "counter",
        "Fields changed by those resynchronisations.",
        m.resync_fields.get() as f64,
    );
    metric(
        "awareness_expired_total",
        "counter",
        "Awareness entries expired.",
        m.awareness_expired.get() as f64,
    );
    for (name, counters, help) in [
        (
            "messages_in_total",
            &m.messages_in,
            "Messages received by type.",
        ),
        (
            "messages_out_total",
            &m.messages_out,
            "Messages sent by type.",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP synckit_{name} {help}\n# TYPE synckit_{name} counter"
        );
        for t in MessageType::ALL {
            let _ = writeln!(
                out,
                "synckit_{name}{{type=\"{}\"}} {}",
                t.name(),
                counters[t.index()].get()
            );
        }
    }
    let _ = writeln!(out, "# HELP synckit_errors_total Error replies by message.\n# TYPE synckit_errors_total counter");
    for (error, n) in m.errors() {
        let _ = writeln!(
            out,
            "synckit_errors_total{{error=\"{}\"}} {n}",
            error.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    let h = &m.broadcast_latency;
    let _ = writeln!(out, "# HELP synckit_broadcast_latency_ms Time from first queued field to fan-out.\n# TYPE synckit_broadcast_latency_ms histogram");
    let mut cumulative = 0;
    for (i, n) in h.buckets().into_iter().enumerate() {
        cumulative += n;
        let le = LATENCY_BUCKETS_MS
            .get(i)
            .map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "synckit_broadcast_latency_ms_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "synckit_broadcast_latency_ms_sum {}\nsynckit_broadcast_latency_ms_count {}",
        h.sum_ms(),
        h.count()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `POST /_test/clear` (only with `SYNCKIT_TEST_MODE=true`): nothing is cleared in a
/// running server's memory; it answers so upstream harnesses can call it.
pub async fn test_clear() -> Response {
    Json(json!({"success": true})).into_response()
}

pub fn stats_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/rooms", get(rooms))
        .route("/maintenance", get(maintenance))
}

/// The scheduler's jobs with their next runs, and the recent run history.
pub async fn maintenance(State(state): State<Arc<AppState>>) -> Response {
    let runs = match state.sync.hub.storage().adapter().recent_runs(50).await {
        Ok(runs) => json!(runs
            .into_iter()
            .map(|r| {
                let duration = r.duration_ms();
                merge(json!(r), json!({ "durationMs": duration }))
            })
            .collect::<Vec<_>>()),
        Err(e) => json!({ "error": e.to_string() }),
    };
    Json(json!({ "jobs": state.scheduler.status(), "runs": runs })).into_response()
}

/// The admin listener (loopback by default): stats, metrics, rooms and probes.
pub fn admin_router(state: Arc<AppState>) -> Router {
    stats_routes()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(super::admin::routes())
        .with_state(state)
}

/// Security headers on every response (C#'s set) and CORS.
pub fn with_common_layers(
    router: Router<Arc<AppState>>,
    config: &ServerConfig,
) -> Router<Arc<AppState>> {
    let csp = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; connect-src 'self' wss: ws:; font-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; upgrade-insecure-requests";
    let cors = if config.cors_origins.iter().any(|o| o == "*") {
        CorsLayer::new().allow_origin(AllowOrigin::any())
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        CorsLayer::new()
            .allow_origin(origins)
            .allow_credentials(true)
    }
    .allow_methods([
        axum::http::Method::GET,
        axum::http::Method::POST,
        axum::http::Method::DELETE,
    ])
    .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
    let set = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    router
        .layer(set("content-security-policy", csp))
        .layer(set("x-content-type-options", "nosniff"))
        .layer(set("x-frame-options", "DENY"))
        .layer(set("x-xss-protection", "1; mode=block"))
        .layer(set("referrer-policy", "strict-origin-when-cross-origin"))
        .layer(cors)
}

/// Expire awareness entries and broadcast their leaves (PROTOCOL.md §7.16).
pub async fn awareness_sweeper(state: Arc<AppState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.awareness_sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = crate::maintenance::awareness::prune_and_announce(&state.sync).await {
            tracing::warn!(error = %e, "awareness sweep failed");
        }
    }
}
