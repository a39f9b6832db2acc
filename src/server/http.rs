//! Plain HTTP endpoints (docs/operations.md §1): info, health probes, stats, rooms,
//! maintenance runs, test-mode clearing, and the admin listener's router. The response
//! layers every route shares are in `layers.rs`; `/metrics` is written in `stats.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{AppState, Lifecycle};
use crate::admin_api::{MaintenanceRun, MaintenanceStatus};
use crate::pubsub::PubSubState;

pub(crate) async fn info() -> Response {
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

pub(crate) fn unavailable(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": reason})),
    )
        .into_response()
}

fn iso_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

use super::stats::pubsub_label;

/// TS body, always 200 `healthy` (the upstream test harness needs that); degradation
/// is reported in the extra keys and in `/health/ready`.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let hub = &state.sync.hub;
    let documents: Vec<Value> = if state.config.health_list_documents {
        hub.summaries()
            .into_iter()
            .map(|d| json!({"id": d.id, "subscribers": d.subscribers, "lastModified": d.last_modified_ms}))
            .collect()
    } else {
        Vec::new()
    };
    let storage = storage_label(hub.storage());
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

pub(crate) async fn live() -> Response {
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
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    if state.lifecycle() != Lifecycle::Ready {
        return probe("unhealthy", started, Value::Null);
    }
    let storage_ok = storage_label(state.sync.hub.storage()) != "degraded";
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

/// `memory-only` (reachable, but lost on restart), `connected`, or `degraded`
/// (unreachable, or writes waiting for it), as the background prober and the writer
/// last saw it: a probe never waits on the database. Decided by the store's
/// capabilities, not its name.
fn storage_label(storage: &crate::storage::Persistence) -> &'static str {
    match (storage.is_durable(), storage.is_degraded()) {
        (_, true) => "degraded",
        (false, false) => "memory-only",
        (true, false) => "connected",
    }
}

pub(crate) async fn rooms(State(state): State<Arc<AppState>>) -> Response {
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

/// `POST /_test/clear` (only with `SYNCKIT_TEST_MODE=true`; docs/operations.md §1):
/// empty every store, so harnesses can reuse document ids between tests. Loaded
/// documents are emptied (or unloaded), writes still queued for storage are let
/// through first, then storage loses every document and session and the awareness
/// store every entry. 503 when a backend could not be cleared.
pub(crate) async fn test_clear(State(state): State<Arc<AppState>>) -> Response {
    let sync = &state.sync;
    let loaded = sync.hub.clear();
    let storage = sync.hub.storage();
    if !storage.drain(TEST_CLEAR_BUDGET).await {
        tracing::warn!(
            backlog = storage.backlog(),
            "test clear: queued writes not yet stored; clearing anyway"
        );
    }
    let stored = storage.adapter().clear_all().await;
    // Every entry is expired at the end of time: pruning then removes them all,
    // whatever the store.
    let awareness = sync
        .awareness
        .prune_expired(crate::awareness::END_OF_TIME_MS)
        .await;
    match (stored, awareness) {
        (Ok(stored), Ok(awareness)) => {
            tracing::info!(
                loaded,
                stored,
                awareness = awareness.len(),
                "test clear: documents, sessions and awareness emptied"
            );
            Json(json!({"success": true})).into_response()
        }
        (stored, awareness) => {
            tracing::error!(
                storage = ?stored.err(),
                awareness = ?awareness.err(),
                "test clear failed"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"success": false, "error": "a backend could not be cleared"})),
            )
                .into_response()
        }
    }
}

/// How long `POST /_test/clear` waits for queued writes before clearing storage.
const TEST_CLEAR_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn stats_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/stats", get(super::stats::stats))
        .route("/metrics", get(super::stats::metrics))
        .route("/rooms", get(rooms))
        .route("/maintenance", get(maintenance))
}

/// The run log is read within this budget: a database that does not answer leaves
/// the runs out (with the reason) instead of holding up the jobs' status.
const RUNS_BUDGET: std::time::Duration = std::time::Duration::from_millis(800);

/// The scheduler's jobs with their next runs, the recent run history, and the
/// cleanup retention this instance applies.
pub(crate) async fn maintenance(State(state): State<Arc<AppState>>) -> Response {
    let read = state.sync.hub.storage().adapter().recent_runs(50);
    let (runs, runs_error) = match tokio::time::timeout(RUNS_BUDGET, read).await {
        Ok(Ok(runs)) => (runs.into_iter().map(run_entry).collect(), None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(_) => (
            Vec::new(),
            Some("storage did not answer in time".to_owned()),
        ),
    };
    Json(MaintenanceStatus {
        jobs: state.scheduler.status(),
        runs,
        runs_error,
        cleanup: Some(super::admin::retention(&super::admin::cleanup_options(
            &state.config,
        ))),
    })
    .into_response()
}

fn run_entry(run: crate::storage::RunRecord) -> MaintenanceRun {
    MaintenanceRun {
        duration_ms: run.duration_ms(),
        run,
    }
}

/// The admin listener (loopback by default): stats, metrics, rooms and probes.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    stats_routes()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(super::admin::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::admin::guard,
        ))
        .with_state(state)
}
