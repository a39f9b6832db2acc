//! The console's admin API, on the admin listener only (loopback by default): live
//! sessions, live documents with their detail and awareness (all paginated with
//! `?limit=&offset=`), and the operator actions — run cleanup now, prune awareness
//! now, disconnect a session, delete a document. Reads and actions need an admin
//! bearer token (a JWT whose permissions say `isAdmin`, or an API key; reads are open
//! with `SYNCKIT_ADMIN_READS_OPEN=true`), checked for every route of the admin
//! listener by [`guard`] together with the `Host` header; actions are logged with who
//! asked (the credential's subject) and from where; maintenance actions are recorded in the run history like scheduled runs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use crate::admin_api::{
    ActionOutcome, ApiError, AwarenessClientInfo, AwarenessPage, CleanupRetention, Deleted,
    Disconnected, DocumentAwareness, DocumentDetail, DocumentsPage, EventsPage, LiveDocumentInfo,
    SessionsPage,
};
use crate::auth::{Identity, TokenKind};
use crate::awareness::AwarenessEntry;
use crate::maintenance::scheduler::run_kind;
use crate::maintenance::{run_recorded_until, JobKind};
use crate::storage::CleanupOptions;

/// Page size when the request names none: a screenful with room to scroll.
const DEFAULT_LIMIT: usize = 100;
/// Largest page: bounds the work and the response of one request.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `?after=<seq>&limit=<n>` of `/admin/events`.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

impl Page {
    fn bounds(&self) -> (usize, usize) {
        (
            self.offset.unwrap_or(0),
            self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        )
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
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
        .route("/admin/events", get(events))
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
    let body = ApiError {
        error: message.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// Routes of the admin listener served to anyone: probes carry no credential and
/// their `Host` is whatever the prober uses; `/metrics` holds counters only (no
/// document contents, user ids or addresses) and Prometheus scrapes it by address.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/metrics"
    )
}

/// Whether a `Host` header names this admin listener: loopback (`localhost`,
/// 127.0.0.0/8, `::1`), the address it is bound to, or a configured name. A page a
/// browser loaded from elsewhere (DNS rebinding) carries its own host name.
fn host_allowed(state: &AppState, host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    }
    .to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        let bound = state.config.admin_listen.map(|a| a.ip());
        if ip.is_loopback() || bound.is_some_and(|b| !b.is_unspecified() && b == ip) {
            return true;
        }
    }
    state.config.admin_allowed_hosts.contains(&name)
}

/// Every request to the admin listener: `Host` checked (421 otherwise) and, for
/// reads, the admin credential unless reads are open (actions check it themselves).
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !host_allowed(&state, host) {
        state
            .sync
            .metrics
            .refused(crate::metrics::Refusal::AdminHost);
        tracing::warn!(host = host.unwrap_or(""), path = %request.uri().path(), remote = %remote_of(request.extensions()), "[SECURITY] admin request refused: Host is not this admin listener");
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "Host not allowed on the admin listener: use 127.0.0.1 or add the name to SYNCKIT_ADMIN_ALLOWED_HOSTS",
        );
    }
    // HEAD runs the GET handler (axum answers it with the body stripped): a read.
    let read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if read && !state.config.admin_reads_open {
        if let Err(refused) = require_admin(&state, request.headers(), request.extensions()) {
            return refused.into_response();
        }
    }
    next.run(request).await
}

/// Who made an admin request, for the audit log: the credential's subject (a JWT's
/// user, or an API key's label), which kind of credential it was, and the remote
/// address.
struct Actor {
    pub(crate) identity: Identity,
    pub(crate) credential: String,
    pub(crate) remote: String,
}

/// The request's remote address (the admin listener is served with connect info).
fn remote_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The caller when it holds an admin credential; otherwise the 401/403 to answer
/// with (counted as an `admin_unauthorized` refusal, logged with the remote address).
fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<Actor, Refused> {
    let remote = remote_of(extensions);
    let checked = check_admin(state, headers, &remote);
    if checked.is_err() {
        state
            .sync
            .metrics
            .refused(crate::metrics::Refusal::AdminUnauthorized);
    }
    checked.map(|(identity, credential)| Actor {
        identity,
        credential,
        remote,
    })
}

/// An admin action's caller, extracted before the handler runs.
impl axum::extract::FromRequestParts<Arc<AppState>> for Actor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Actor, Response> {
        require_admin(state, &parts.headers, &parts.extensions).map_err(IntoResponse::into_response)
    }
}

fn check_admin(
    state: &AppState,
    headers: &HeaderMap,
    remote: &str,
) -> Result<(Identity, String), Refused> {
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
    let identity = match auth.verify(token, TokenKind::Access) {
        Ok(verified) => Ok((verified.identity, "jwt".to_owned())),
        Err(_) => auth
            .verify_api_key(token)
            .map(|identity| (identity, crate::auth::jwt::api_key_label(token))),
    };
    match identity {
        Ok((identity, credential)) if identity.permissions.is_admin => Ok((identity, credential)),
        Ok((identity, credential)) => {
            tracing::warn!(subject = %identity.user_id, credential = %credential, remote = %remote, "admin action refused: not an admin");
            Err(Refused(StatusCode::FORBIDDEN, "admin permission required"))
        }
        Err(e) => {
            tracing::warn!(error = %e, remote = %remote, "admin action refused: invalid credential");
            Err(Refused(StatusCode::UNAUTHORIZED, "invalid credential"))
        }
    }
}

async fn sessions(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    Json(SessionsPage {
        instance_id: state.instance_id().to_owned(),
        total: state.live.len(),
        offset,
        limit,
        sessions: state.live.page(offset, limit),
    })
    .into_response()
}

async fn documents(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    let all = state.sync.hub.summaries();
    let documents = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|d| LiveDocumentInfo {
            id: d.id.clone(),
            subscribers: d.subscribers as u64,
            awareness_subscribers: d.awareness_subscribers as u64,
            fields: d.fields as u64,
            approximate_bytes: d.approximate_bytes as u64,
            last_modified_ms: d.last_modified_ms,
        })
        .collect();
    Json(DocumentsPage {
        instance_id: state.instance_id().to_owned(),
        total: all.len(),
        offset,
        limit,
        documents,
    })
    .into_response()
}

fn awareness_info(
    state: &AppState,
    entries: Vec<AwarenessEntry>,
    now_ms: i64,
) -> Vec<AwarenessClientInfo> {
    let timeout_ms =
        i64::try_from(state.sync.settings.awareness_timeout.as_millis()).unwrap_or(i64::MAX / 2);
    entries
        .into_iter()
        .map(|e| AwarenessClientInfo {
            client_id: e.client_id,
            connection_id: e.connection_id,
            state: e.state,
            clock: e.clock,
            last_seen_ms: e.last_seen_ms,
            expires_in_ms: (e.last_seen_ms + timeout_ms - now_ms).max(0),
        })
        .collect()
}

/// Live entries of one document, or why the store could not say.
async fn awareness_of(state: &AppState, id: &str, now_ms: i64) -> DocumentAwareness {
    let (clients, error) = match state.sync.awareness.get_all(id, now_ms).await {
        Ok(entries) => (awareness_info(state, entries, now_ms), None),
        Err(e) => {
            tracing::warn!(document_id = %id, error = %e, "admin: awareness store failed");
            (Vec::new(), Some("awareness store unavailable".to_owned()))
        }
    };
    DocumentAwareness {
        document_id: id.to_owned(),
        clients,
        error,
    }
}

/// Fields, clock, subscribers and awareness of one document: from memory when it
/// is loaded here, else as stored.
async fn document(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let hub = &state.sync.hub;
    let now_ms = state.sync.now_ms();
    let (loaded, fields, clock) = match hub.get(&id) {
        Some(entry) => {
            let snapshot = hub.snapshot(&entry);
            let clock = snapshot
                .clock
                .into_iter()
                .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
                .collect();
            (true, Value::Object(snapshot.state), clock)
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
            let clock = storage
                .get_vector_clock(&id)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
            (false, fields, clock)
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
    let awareness = awareness_of(&state, &id, now_ms).await;
    Json(DocumentDetail {
        instance_id: state.instance_id().to_owned(),
        loaded,
        fields,
        clock,
        subscribers,
        awareness_subscribers,
        awareness: awareness.clients,
        awareness_error: awareness.error,
        id,
    })
    .into_response()
}

async fn document_awareness(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    Json(awareness_of(&state, &id, state.sync.now_ms()).await).into_response()
}

/// Awareness per live document of this instance (documents in id order).
async fn awareness(State(state): State<Arc<AppState>>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = page.bounds();
    let now_ms = state.sync.now_ms();
    let live: Vec<String> = state
        .sync
        .hub
        .summaries()
        .into_iter()
        .filter(|d| d.subscribers + d.awareness_subscribers > 0)
        .map(|d| d.id)
        .collect();
    let mut documents = Vec::new();
    for id in live.iter().skip(offset).take(limit) {
        documents.push(awareness_of(&state, id, now_ms).await);
    }
    Json(AwarenessPage {
        instance_id: state.instance_id().to_owned(),
        store: state.sync.awareness.kind().to_owned(),
        total: live.len(),
        offset,
        limit,
        documents,
    })
    .into_response()
}

/// This instance's notable events, newest first (`crate::events`).
async fn events(State(state): State<Arc<AppState>>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let log = &state.sync.events;
    log.flush(state.sync.now_ms());
    let (events, dropped) = log.page(q.after.unwrap_or(0), limit);
    Json(EventsPage {
        instance_id: state.instance_id().to_owned(),
        events,
        dropped,
    })
    .into_response()
}

async fn disconnect(
    State(state): State<Arc<AppState>>,
    who: Actor,
    Path(id): Path<String>,
) -> Response {
    if state.live.disconnect(&id) {
        tracing::info!(action = "disconnect", session = %id, subject = %who.identity.user_id, credential = %who.credential, remote = %who.remote, "admin action");
        Json(Disconnected { disconnected: id }).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "no such live session on this instance",
        )
    }
}

async fn delete_document(
    State(state): State<Arc<AppState>>,
    who: Actor,
    Path(id): Path<String>,
) -> Response {
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
            tracing::info!(action = "delete-document", document_id = %id, existed, subject = %who.identity.user_id, credential = %who.credential, remote = %who.remote, "admin action");
            Json(Deleted {
                deleted: id,
                existed,
            })
            .into_response()
        }
        Err(e) => {
            tracing::error!(action = "delete-document", document_id = %id, error = %e, subject = %who.identity.user_id, credential = %who.credential, remote = %who.remote, "admin action failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// Run a maintenance job now, recorded in the run history under its usual name
/// (the occurrence is "now", so it never collides with a scheduled one).
async fn run_now(state: &AppState, who: Actor, job: &'static str, kind: JobKind) -> Response {
    tracing::info!(action = job, subject = %who.identity.user_id, credential = %who.credential, remote = %who.remote, "admin action: run now");
    let now = state.sync.clock.now_utc();
    // Run as one of the server's tasks, so shutdown interrupts it, records it as
    // `interrupted` and joins it before the pools close (docs/operations.md §6).
    let sync = state.sync.clone();
    let instance_id = state.instance_id().to_owned();
    let stop = state.background.clone();
    let run = state.tasks.spawn(async move {
        let storage = sync.hub.storage().adapter().clone();
        let work = run_kind(&kind, &sync);
        run_recorded_until(storage.as_ref(), job, now, &instance_id, work, &stop).await
    });
    match run.await.ok().flatten() {
        Some(Ok(counts)) => Json(ActionOutcome {
            job: job.to_owned(),
            outcome: "ok".into(),
            counts: Some(counts),
            error: None,
        })
        .into_response(),
        Some(Err(e)) => {
            crate::maintenance::scheduler::record_failure(&state.sync, job, &e);
            let body = ActionOutcome {
                job: job.to_owned(),
                outcome: "failed".into(),
                counts: None,
                error: Some(e),
            };
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        None => error(
            StatusCode::CONFLICT,
            "the run could not be claimed (see the server log)",
        ),
    }
}

/// The cleanup a "run now" applies: the scheduler's cleanup job's retention when
/// one is configured, else the defaults.
pub(crate) fn cleanup_options(config: &super::ServerConfig) -> CleanupOptions {
    config
        .maintenance
        .iter()
        .find_map(|j| match &j.kind {
            JobKind::Cleanup(o) => Some(*o),
            _ => None,
        })
        .unwrap_or_default()
}

/// What a cleanup with `options` deletes, for the console's dialog.
pub(crate) fn retention(options: &CleanupOptions) -> CleanupRetention {
    CleanupRetention {
        sessions_older_than_secs: options.sessions_older_than.map(|d| d.as_secs()),
        deltas_older_than_secs: options.deltas_older_than.map(|d| d.as_secs()),
        snapshots_older_than_secs: options.snapshots_older_than.map(|d| d.as_secs()),
        max_snapshots_per_document: options.max_snapshots_per_document,
    }
}

async fn cleanup_now(State(state): State<Arc<AppState>>, who: Actor) -> Response {
    let options = cleanup_options(&state.config);
    run_now(&state, who, "cleanup", JobKind::Cleanup(options)).await
}

async fn prune_now(State(state): State<Arc<AppState>>, who: Actor) -> Response {
    run_now(&state, who, "awareness-prune", JobKind::AwarenessPrune).await
}
