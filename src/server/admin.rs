//! The console's admin API, on the admin listener only (loopback by default): live
//! sessions, live documents with their detail and awareness (all paginated with
//! `?limit=&offset=`), and the operator actions — run cleanup now, prune awareness
//! now, disconnect a session, delete a document. Reads are open like the rest of the
//! admin listener; actions need an admin bearer token (a JWT whose permissions say
//! `isAdmin`, or an API key) and are logged with who asked; maintenance actions are
//! recorded in the run history like scheduled runs.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::auth::{Identity, TokenKind};
use crate::awareness::AwarenessEntry;
use crate::maintenance::scheduler::run_kind;
use crate::maintenance::{run_recorded, JobKind};
use crate::storage::CleanupOptions;
use crate::sync::wall_clock_ms;

/// Page size when the request names none: a screenful with room to scroll.
const DEFAULT_LIMIT: usize = 100;
/// Largest page: bounds the work and the response of one request.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

impl Page {
    fn bounds(&self) -> (usize, usize) {
        (
            self.offset.unwrap_or(0),
            self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        )
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/sessions", get(sessions))
        .route("/admin/sessions/{id}", delete(disconnect))
        .route("/admin/documents", get(documents))
        .route(
            "/admin/documents/{id}",
            get(document).delete(delete_document),
        )
        .route("/admin/documents/{id}/awareness", get(document_awareness))
        .route("/admin/awareness", get(awareness))
        .route("/admin/actions/cleanup", post(cleanup_now))
        .route("/admin/actions/prune-awareness", post(prune_now))
}

/// Why an action request is refused.
struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The caller's identity when it holds an admin credential; otherwise the 401/403
/// to answer with.
fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Identity, Refused> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = bearer else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "an admin bearer token is required",
        ));
    };
    let auth = &state.sync.auth;
    let identity = auth
        .verify(token, TokenKind::Access)
        .map(|v| v.identity)
        .or_else(|_| auth.verify_api_key(token));
    match identity {
        Ok(identity) if identity.permissions.is_admin => Ok(identity),
        Ok(identity) => {
            tracing::warn!(user = %identity.user_id, "admin action refused: not an admin");
            Err(Refused(StatusCode::FORBIDDEN, "admin permission required"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin action refused: invalid credential");
            Err(Refused(StatusCode::UNAUTHORIZED, "invalid credential"))
        }
    }
}

async fn sessions(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    Json(json!({
        "instanceId": state.instance_id(),
        "total": state.live.len(),
        "offset": offset,
        "limit": limit,
        "sessions": state.live.page(offset, limit),
    }))
    .into_response()
}

async fn documents(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    let all = state.sync.hub.summaries();
    let documents: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|d| {
            json!({
                "id": d.id,
                "subscribers": d.subscribers,
                "awarenessSubscribers": d.awareness_subscribers,
                "fields": d.fields,
                "approximateBytes": d.approximate_bytes,
                "lastModifiedMs": d.last_modified_ms,
            })
        })
        .collect();
    Json(json!({
        "instanceId": state.instance_id(),
        "total": all.len(),
        "offset": offset,
        "limit": limit,
        "documents": documents,
    }))
    .into_response()
}

fn awareness_json(state: &AppState, entries: Vec<AwarenessEntry>, now_ms: i64) -> Vec<Value> {
    let timeout_ms =
        i64::try_from(state.sync.settings.awareness_timeout.as_millis()).unwrap_or(i64::MAX / 2);
    entries
        .into_iter()
        .map(|e| {
            json!({
                "clientId": e.client_id,
                "connectionId": e.connection_id,
                "state": e.state,
                "clock": e.clock,
                "lastSeenMs": e.last_seen_ms,
                "expiresInMs": (e.last_seen_ms + timeout_ms - now_ms).max(0),
            })
        })
        .collect()
}

/// Live entries of one document, or the store's error as JSON.
async fn awareness_of(state: &AppState, id: &str, now_ms: i64) -> Value {
    match state.sync.awareness.get_all(id, now_ms).await {
        Ok(entries) => json!(awareness_json(state, entries, now_ms)),
        Err(e) => {
            tracing::warn!(document_id = %id, error = %e, "admin: awareness store failed");
            json!({ "error": "awareness store unavailable" })
        }
    }
}

/// Fields, clock, subscribers and awareness of one document: from memory when it
/// is loaded here, else as stored.
async fn document(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let hub = &state.sync.hub;
    let now_ms = wall_clock_ms();
    let (loaded, fields, clock) = match hub.get(&id) {
        Some(entry) => {
            let snapshot = hub.snapshot(&entry);
            (
                true,
                Value::Object(snapshot.state),
                Value::Object(snapshot.clock),
            )
        }
        None => {
            let storage = hub.storage().adapter();
            let row = match storage.get_document(&id).await {
                Ok(Some(row)) => row,
                Ok(None) => return error(StatusCode::NOT_FOUND, "document not found"),
                Err(e) => {
                    tracing::warn!(document_id = %id, error = %e, "admin: storage read failed");
                    return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable");
                }
            };
            let fields = row.state.get("fields").cloned().unwrap_or(row.state);
            let clock: Map<String, Value> = storage
                .get_vector_clock(&id)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            (false, fields, Value::Object(clock))
        }
    };
    let keys = |ids: Vec<u64>| -> Vec<String> {
        ids.into_iter()
            .map(|c| state.live.key_of(c).unwrap_or_else(|| format!("conn-{c}")))
            .collect()
    };
    let (subscribers, awareness_subscribers) = hub
        .subscriber_ids(&id)
        .map(|(d, a)| (keys(d), keys(a)))
        .unwrap_or_default();
    Json(json!({
        "id": id,
        "instanceId": state.instance_id(),
        "loaded": loaded,
        "fields": fields,
        "clock": clock,
        "subscribers": subscribers,
        "awarenessSubscribers": awareness_subscribers,
        "awareness": awareness_of(&state, &id, now_ms).await,
    }))
    .into_response()
}

async fn document_awareness(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let clients = awareness_of(&state, &id, wall_clock_ms()).await;
    Json(json!({ "documentId": id, "clients": clients })).into_response()
}

/// Awareness per live document of this instance (documents in id order).
async fn awareness(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    let now_ms = wall_clock_ms();
    let live: Vec<String> = state
        .sync
        .hub
        .summaries()
        .into_iter()
        .filter(|d| d.subscribers + d.awareness_subscribers > 0)
        .map(|d| d.id)
        .collect();
    let mut items = Vec::new();
    for id in live.iter().skip(offset).take(limit) {
        items.push(json!({
            "documentId": id,
            "clients": awareness_of(&state, id, now_ms).await,
        }));
    }
    Json(json!({
        "instanceId": state.instance_id(),
        "store": state.sync.awareness.kind(),
        "total": live.len(),
        "offset": offset,
        "limit": limit,
        "documents": items,
    }))
    .into_response()
}

async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match require_admin(&state, &headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    if state.live.disconnect(&id) {
        tracing::info!(action = "disconnect", session = %id, by = %who.user_id, "admin action");
        Json(json!({ "disconnected": id })).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "no such live session on this instance",
        )
    }
}

async fn delete_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match require_admin(&state, &headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let hub = &state.sync.hub;
    // Unloading first means no cached copy is written back after the delete.
    if !hub.forget(&id) {
        return error(
            StatusCode::CONFLICT,
            "document is in use (subscribers or pending writes): disconnect them first",
        );
    }
    match hub.storage().adapter().delete_document(&id).await {
        Ok(existed) => {
            tracing::info!(action = "delete-document", document_id = %id, existed, by = %who.user_id, "admin action");
            Json(json!({ "deleted": id, "existed": existed })).into_response()
        }
        Err(e) => {
            tracing::error!(action = "delete-document", document_id = %id, error = %e, by = %who.user_id, "admin action failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// Run a maintenance job now, recorded in the run history under its usual name
/// (the occurrence is "now", so it never collides with a scheduled one).
async fn run_now(
    state: &AppState,
    headers: &HeaderMap,
    job: &'static str,
    kind: JobKind,
) -> Response {
    let who = match require_admin(state, headers) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    tracing::info!(action = job, by = %who.user_id, "admin action: run now");
    let now = Utc
        .timestamp_millis_opt(wall_clock_ms())
        .single()
        .unwrap_or_else(Utc::now);
    let storage = state.sync.hub.storage().adapter().clone();
    let work = run_kind(&kind, &state.sync);
    match run_recorded(storage.as_ref(), job, now, state.instance_id(), work).await {
        Some(Ok(counts)) => {
            Json(json!({ "job": job, "outcome": "ok", "counts": counts })).into_response()
        }
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "job": job, "outcome": "failed", "error": e })),
        )
            .into_response(),
        None => error(
            StatusCode::CONFLICT,
            "the run could not be claimed (see the server log)",
        ),
    }
}

async fn cleanup_now(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    // The configured retention when the scheduler has a cleanup job, else defaults.
    let options = state
        .config
        .maintenance
        .iter()
        .find_map(|j| match &j.kind {
            JobKind::Cleanup(o) => Some(*o),
            _ => None,
        })
        .unwrap_or_else(CleanupOptions::default);
    run_now(&state, &headers, "cleanup", JobKind::Cleanup(options)).await
}

async fn prune_now(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    run_now(&state, &headers, "awareness-prune", JobKind::AwarenessPrune).await
}
