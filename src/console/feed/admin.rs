//! The admin-API source: polls one `synckit serve` instance (`/stats`,
//! `/admin/documents`, `/admin/sessions`, `/admin/awareness`, `/maintenance`),
//! fetches a document's detail, and carries out operator actions with the admin
//! token. Every answer is turned into the console's model here; a missing or
//! failing endpoint degrades that part, not the whole instance.

use std::time::{Duration, Instant};

use chrono::DateTime;
use serde_json::Value;

use super::http::{encode_segment, request};
use crate::console::action::OperatorAction;
use crate::console::model::{
    AwarenessClient, InstanceReport, InstanceStats, JobInfo, LiveDocument, RunInfo, SessionInfo,
    SourceState,
};

/// One request's budget: an instance slower than this shows as down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Actions can take longer (a cleanup deletes in batches).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Page sizes asked for per refresh: what a screen can use, bounded.
const SESSIONS_PAGE: u32 = 500;
const DOCUMENTS_PAGE: u32 = 500;
const AWARENESS_PAGE: u32 = 100;

fn u(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn sum_object(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// `/stats` → the numbers the Overview shows.
pub fn parse_stats(v: &Value) -> InstanceStats {
    let messages = v.get("messages");
    InstanceStats {
        instance_id: s(v, "instanceId"),
        version: s(v, "version"),
        uptime_seconds: v
            .get("uptimeSeconds")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        connections: u(v, &["connections", "open"]),
        users: u(v, &["connections", "users"]),
        documents: u(v, &["documents", "cached"]),
        subscriptions: u(v, &["documents", "subscriptions"]),
        messages_in: sum_object(messages.and_then(|m| m.get("in"))),
        messages_out: sum_object(messages.and_then(|m| m.get("out"))),
        errors: sum_object(v.get("errors")) + u(v, &["messages", "invalidFrames"]),
        backlog: u(v, &["persistence", "backlog"]),
        degraded: v
            .pointer("/persistence/degraded")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        storage: v
            .pointer("/persistence/backend")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        pubsub: v
            .pointer("/pubsub/state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

fn ms(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn rfc3339_ms(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub fn parse_documents(v: &Value) -> Vec<LiveDocument> {
    list(v, "documents")
        .iter()
        .map(|d| LiveDocument {
            id: s(d, "id"),
            subscribers: u(d, &["subscribers"]),
            fields: u(d, &["fields"]),
            approximate_bytes: u(d, &["approximateBytes"]),
            last_modified_ms: ms(d, "lastModifiedMs"),
        })
        .collect()
}

pub fn parse_sessions(v: &Value, instance: &str, via: &str) -> Vec<SessionInfo> {
    list(v, "sessions")
        .iter()
        .map(|x| SessionInfo {
            id: s(x, "id"),
            user: x.get("user").and_then(Value::as_str).map(str::to_owned),
            client: x.get("client").and_then(Value::as_str).map(str::to_owned),
            instance: Some(instance.to_owned()),
            remote: x.get("remoteIp").and_then(Value::as_str).map(str::to_owned),
            connected_at_ms: ms(x, "connectedAtMs"),
            last_seen_ms: ms(x, "lastSeenMs"),
            subscriptions: list(x, "subscriptions")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            live: true,
            via: Some(via.to_owned()),
        })
        .collect()
}

/// Awareness clients of one document entry (`{documentId, clients}`).
pub fn parse_awareness_clients(document_id: &str, clients: &Value) -> Vec<AwarenessClient> {
    clients
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|c| AwarenessClient {
            document_id: document_id.to_owned(),
            client_id: s(c, "clientId"),
            state: c.get("state").cloned().unwrap_or(Value::Null),
            clock: u(c, &["clock"]),
            last_seen_ms: ms(c, "lastSeenMs"),
            expires_in_ms: c.get("expiresInMs").and_then(Value::as_i64),
        })
        .collect()
}

pub fn parse_awareness(v: &Value) -> Vec<AwarenessClient> {
    list(v, "documents")
        .iter()
        .flat_map(|d| {
            let id = s(d, "documentId");
            parse_awareness_clients(&id, d.get("clients").unwrap_or(&Value::Null))
        })
        .collect()
}

pub fn parse_run(r: &Value) -> RunInfo {
    RunInfo {
        id: r.get("id").and_then(Value::as_i64).unwrap_or(0),
        job: s(r, "job"),
        instance_id: s(r, "instanceId"),
        started_at_ms: rfc3339_ms(r.get("startedAt")).unwrap_or(0),
        finished_at_ms: rfc3339_ms(r.get("finishedAt")),
        outcome: s(r, "outcome"),
        counts: r.get("counts").cloned().unwrap_or(Value::Null),
        error: r.get("error").and_then(Value::as_str).map(str::to_owned),
    }
}

pub fn parse_maintenance(v: &Value, instance: &str) -> (Vec<JobInfo>, Vec<RunInfo>) {
    let jobs = list(v, "jobs")
        .iter()
        .map(|j| JobInfo {
            name: s(j, "name"),
            schedule: s(j, "schedule"),
            enabled: j.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            next_run_ms: rfc3339_ms(j.get("nextRun")),
            instance: instance.to_owned(),
        })
        .collect();
    let runs = list(v, "runs").iter().map(parse_run).collect();
    (jobs, runs)
}

async fn get(address: &str, path: &str) -> Result<Value, String> {
    match request(address, "GET", path, None, REQUEST_TIMEOUT).await {
        Ok((200, body)) => Ok(body),
        Ok((status, _)) => Err(format!("{path} answered {status}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Poll one instance. `/stats` decides whether it is up; the other endpoints fill
/// what they can (an older server without `/admin/*` still shows its stats).
pub async fn poll(address: &str, now_ms: i64) -> InstanceReport {
    let started = Instant::now();
    let stats = match get(address, "/stats").await {
        Ok(v) => parse_stats(&v),
        Err(error) => {
            return InstanceReport {
                address: address.to_owned(),
                state: SourceState::Down { error },
                sampled_at_ms: now_ms,
                ..InstanceReport::default()
            }
        }
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let instance = stats.instance_id.clone();
    let documents_path = format!("/admin/documents?limit={DOCUMENTS_PAGE}");
    let sessions_path = format!("/admin/sessions?limit={SESSIONS_PAGE}");
    let awareness_path = format!("/admin/awareness?limit={AWARENESS_PAGE}");
    let (documents, sessions, awareness, maintenance) = tokio::join!(
        get(address, &documents_path),
        get(address, &sessions_path),
        get(address, &awareness_path),
        get(address, "/maintenance"),
    );
    let (jobs, runs) = maintenance
        .map(|m| parse_maintenance(&m, &instance))
        .unwrap_or_default();
    InstanceReport {
        address: address.to_owned(),
        state: SourceState::Up { latency_ms },
        sampled_at_ms: now_ms,
        documents: documents.map(|v| parse_documents(&v)).unwrap_or_default(),
        sessions: sessions
            .map(|v| parse_sessions(&v, &instance, address))
            .unwrap_or_default(),
        awareness: awareness.map(|v| parse_awareness(&v)).unwrap_or_default(),
        jobs,
        runs,
        stats: Some(stats),
    }
}

/// A document's detail from one instance: `(loaded here, body)`.
pub async fn detail(address: &str, id: &str) -> Result<Value, String> {
    get(address, &format!("/admin/documents/{}", encode_segment(id))).await
}

/// Carry out an operator action; the text tells the operator how it went.
pub async fn perform(action: &OperatorAction, token: Option<&str>) -> Result<String, String> {
    let Some(token) = token else {
        return Err("no admin token: set SYNCKIT_ADMIN_TOKEN (or JWT_SECRET to mint one)".into());
    };
    let (via, method, path) = match action {
        OperatorAction::Cleanup { via } => (via, "POST", "/admin/actions/cleanup".to_owned()),
        OperatorAction::PruneAwareness { via } => {
            (via, "POST", "/admin/actions/prune-awareness".to_owned())
        }
        OperatorAction::Disconnect { session, via, .. } => (
            via,
            "DELETE",
            format!("/admin/sessions/{}", encode_segment(session)),
        ),
        OperatorAction::DeleteDocument { id, via } => (
            via,
            "DELETE",
            format!("/admin/documents/{}", encode_segment(id)),
        ),
    };
    tracing::info!(?action, "performing operator action");
    let result = match request(via, method, &path, Some(token), ACTION_TIMEOUT).await {
        Ok((200, body)) => Ok(summarize(action, &body)),
        Ok((status, body)) => Err(format!(
            "{} failed ({status}): {}",
            action.title().trim_end_matches('?'),
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("see the server log")
        )),
        Err(e) => Err(format!("{via}: {e}")),
    };
    match &result {
        Ok(text) => tracing::info!(outcome = %text, "operator action done"),
        Err(text) => tracing::warn!(error = %text, "operator action failed"),
    }
    result
}

fn summarize(action: &OperatorAction, body: &Value) -> String {
    match action {
        OperatorAction::Cleanup { .. } | OperatorAction::PruneAwareness { .. } => format!(
            "{} done: {}",
            s(body, "job"),
            body.get("counts").map(Value::to_string).unwrap_or_default()
        ),
        OperatorAction::Disconnect { session, .. } => format!("disconnected {session}"),
        OperatorAction::DeleteDocument { id, .. } => format!("deleted {id}"),
    }
}
