//! The admin-API source: polls one `synckit serve` instance (`/stats`,
//! `/admin/documents`, `/admin/sessions`, `/admin/awareness`, `/maintenance`,
//! `/admin/events`), fetches a document's detail, and carries out operator actions
//! with the admin token. Answers are read with the server's own types
//! (`crate::admin_api`); a page that is missing, failing or unreadable degrades that
//! part (named in the report's problems), not the whole instance.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::http::{encode_segment, request};
use crate::admin_api::{
    ActionOutcome, ApiError, AwarenessClientInfo, AwarenessPage, DocumentDetail, DocumentsPage,
    EventsPage, MaintenanceStatus, SessionsPage, Stats,
};
use crate::console::action::OperatorAction;
use crate::console::model::{
    AwarenessClient, InstanceReport, JobInfo, RunInfo, SessionInfo, SourceState,
};

/// One request's budget: an instance slower than this shows as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Actions can take longer (a cleanup deletes in batches).
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Page sizes asked for per refresh: what a screen can use, bounded.
const SESSIONS_PAGE: u32 = 500;
const DOCUMENTS_PAGE: u32 = 500;
const AWARENESS_PAGE: u32 = 100;
const EVENTS_PAGE: u32 = 200;

/// A GET answered with something other than the expected page.
fn page_error(path: &str, status: u16, body: &Value) -> String {
    match serde_json::from_value::<ApiError>(body.clone()) {
        Ok(e) => format!("{path} answered {status}: {}", e.error),
        Err(_) => format!("{path} answered {status}"),
    }
}

/// GET `path` and read it as `T`.
/// A GET with the console's admin credential (reads need it too unless the server
/// runs with `SYNCKIT_ADMIN_READS_OPEN=true`).
async fn get<T: DeserializeOwned>(
    address: &str,
    path: &str,
    token: Option<&str>,
) -> Result<T, String> {
    match request(address, "GET", path, token, REQUEST_TIMEOUT).await {
        Ok((200, body)) => serde_json::from_value(body)
            .map_err(|e| format!("{path} is not readable by this console: {e}")),
        Ok((401 | 403, _)) => Err(format!(
            "{path}: admin credential refused (set SYNCKIT_ADMIN_TOKEN, or JWT_SECRET to mint one)"
        )),
        Ok((status, body)) => Err(page_error(path, status, &body)),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn sessions(page: SessionsPage, via: &str) -> Vec<SessionInfo> {
    page.sessions
        .into_iter()
        .map(|x| SessionInfo {
            id: x.id,
            user: x.user,
            client: x.client,
            instance: Some(page.instance_id.clone()),
            remote: Some(x.remote_ip),
            connected_at_ms: x.connected_at_ms,
            last_seen_ms: x.last_seen_ms,
            subscriptions: x.subscriptions,
            live: true,
            via: Some(via.to_owned()),
        })
        .collect()
}

/// Awareness clients of one document.
pub(crate) fn awareness_clients(
    document_id: &str,
    clients: Vec<AwarenessClientInfo>,
) -> Vec<AwarenessClient> {
    clients
        .into_iter()
        .map(|c| AwarenessClient {
            document_id: document_id.to_owned(),
            client_id: c.client_id,
            state: c.state,
            clock: c.clock,
            last_seen_ms: c.last_seen_ms,
            expires_in_ms: Some(c.expires_in_ms),
        })
        .collect()
}

pub(crate) fn awareness(page: AwarenessPage) -> Vec<AwarenessClient> {
    page.documents
        .into_iter()
        .flat_map(|d| awareness_clients(&d.document_id, d.clients))
        .collect()
}

/// `/maintenance` as the console's jobs and runs.
pub(crate) fn maintenance(m: &MaintenanceStatus, instance: &str) -> (Vec<JobInfo>, Vec<RunInfo>) {
    let jobs = m
        .jobs
        .iter()
        .map(|j| JobInfo {
            name: j.name.clone(),
            schedule: j.schedule.clone(),
            enabled: j.enabled,
            next_run_ms: j.next_run.map(|t| t.timestamp_millis()),
            instance: instance.to_owned(),
        })
        .collect();
    let runs = m
        .runs
        .iter()
        .map(|r| &r.run)
        .map(|r| RunInfo {
            id: r.id,
            job: r.job.clone(),
            instance_id: r.instance_id.clone(),
            started_at_ms: r.started_at.timestamp_millis(),
            finished_at_ms: r.finished_at.map(|t| t.timestamp_millis()),
            outcome: r.outcome.clone(),
            counts: r.counts.clone(),
            error: r.error.clone(),
        })
        .collect();
    (jobs, runs)
}

/// Poll one instance. `/stats` decides whether it is up; the other endpoints fill
/// what they can (an older server without `/admin/*` still shows its stats).
/// `events_after` is the last event sequence number already seen from it; `token`
/// the admin credential.
pub async fn poll(
    address: &str,
    now_ms: i64,
    events_after: u64,
    token: Option<&str>,
) -> InstanceReport {
    let started = Instant::now();
    let stats: Stats = match get(address, "/stats", token).await {
        Ok(stats) => stats,
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
    let instance = stats.instance_id.clone().unwrap_or_default();
    let documents_path = format!("/admin/documents?limit={DOCUMENTS_PAGE}");
    let sessions_path = format!("/admin/sessions?limit={SESSIONS_PAGE}");
    let awareness_path = format!("/admin/awareness?limit={AWARENESS_PAGE}");
    let events_path = format!("/admin/events?limit={EVENTS_PAGE}&after={events_after}");
    let (documents, sessions_page, awareness_page, maintenance_page, events) = tokio::join!(
        get::<DocumentsPage>(address, &documents_path, token),
        get::<SessionsPage>(address, &sessions_path, token),
        get::<AwarenessPage>(address, &awareness_path, token),
        get::<MaintenanceStatus>(address, "/maintenance", token),
        get::<EventsPage>(address, &events_path, token),
    );
    let mut report = InstanceReport {
        address: address.to_owned(),
        state: SourceState::Up { latency_ms },
        sampled_at_ms: now_ms,
        ..InstanceReport::default()
    };
    let mut problem = |e: String| report.problems.push(e);
    let documents = documents.map_err(&mut problem).ok();
    let sessions_page = sessions_page.map_err(&mut problem).ok();
    let awareness_page = awareness_page.map_err(&mut problem).ok();
    let maintenance_page = maintenance_page.map_err(&mut problem).ok();
    let events = events.map_err(&mut problem).ok();
    report.documents = documents.map(|p| p.documents).unwrap_or_default();
    report.sessions = sessions_page
        .map(|p| sessions(p, address))
        .unwrap_or_default();
    report.awareness = awareness_page.map(awareness).unwrap_or_default();
    if let Some(m) = &maintenance_page {
        (report.jobs, report.runs) = maintenance(m, &instance);
        report.cleanup = m.cleanup;
        if let Some(e) = &m.runs_error {
            report.problems.push(format!("run history: {e}"));
        }
    }
    report.events = events.map(|p| p.events).unwrap_or_default();
    report.stats = Some(stats);
    report
}

/// A document's detail from one instance.
pub(crate) async fn detail(
    address: &str,
    id: &str,
    token: Option<&str>,
) -> Result<DocumentDetail, String> {
    get(
        address,
        &format!("/admin/documents/{}", encode_segment(id)),
        token,
    )
    .await
}

/// Carry out an operator action; the text tells the operator how it went.
pub async fn perform(action: &OperatorAction, token: Option<&str>) -> Result<String, String> {
    let Some(token) = token else {
        return Err("no admin token: set SYNCKIT_ADMIN_TOKEN (or JWT_SECRET to mint one)".into());
    };
    let (via, method, path) = match action {
        OperatorAction::Cleanup { via, .. } => (via, "POST", "/admin/actions/cleanup".to_owned()),
        OperatorAction::PruneAwareness { via, .. } => {
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
        Ok((200, body)) => Ok(summarize(action, body)),
        Ok((status, body)) => {
            let why = serde_json::from_value::<ApiError>(body)
                .map(|e| e.error)
                .unwrap_or_else(|_| "see the server log".into());
            Err(format!(
                "{} failed ({status}): {why}",
                action.title().trim_end_matches('?')
            ))
        }
        Err(e) => Err(format!("{via}: {e}")),
    };
    match &result {
        Ok(text) => tracing::info!(outcome = %text, "operator action done"),
        Err(text) => tracing::warn!(error = %text, "operator action failed"),
    }
    result
}

fn summarize(action: &OperatorAction, body: Value) -> String {
    match action {
        OperatorAction::Cleanup { .. } | OperatorAction::PruneAwareness { .. } => {
            match serde_json::from_value::<ActionOutcome>(body) {
                Ok(o) => format!(
                    "{} done: {}",
                    o.job,
                    o.counts.map(|c| c.to_string()).unwrap_or_default()
                ),
                Err(_) => "done".into(),
            }
        }
        OperatorAction::Disconnect { session, .. } => format!("disconnected {session}"),
        OperatorAction::DeleteDocument { id, .. } => format!("deleted {id}"),
    }
}
