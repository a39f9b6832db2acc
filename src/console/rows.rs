//! The rows each view shows, derived from the sources: documents merged from
//! PostgreSQL and the instances' live documents, live and persisted sessions, awareness
//! from the instances (else the database), traffic and runs, each filtered and
//! sorted. Pure functions of the [`App`], shared by the views, the reducer (what
//! the selected row is) and `--once`.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::app::{App, DocumentSort, SessionSort, View};
use super::model::{AwarenessClient, JobInfo, RunInfo, SessionInfo, TrafficSample};

/// A short name for an instance id: enough to tell a fleet apart on 80 columns.
pub fn short_instance(id: &str) -> String {
    id.chars().take(8).collect()
}

fn matches(filter: &str, haystacks: &[&str]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let needle = filter.to_lowercase();
    haystacks.iter().any(|h| h.to_lowercase().contains(&needle))
}

/// A row of the Documents view.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRow {
    pub id: String,
    pub subscribers: u64,
    pub fields: u64,
    pub size_bytes: u64,
    pub last_change_ms: i64,
    /// Short ids of the instances that have it loaded.
    pub instances: Vec<String>,
    /// Admin address of one instance that has it loaded.
    #[serde(skip)]
    pub via: Option<String>,
}

pub fn documents(app: &App) -> Vec<DocumentRow> {
    let mut by_id: BTreeMap<String, DocumentRow> = BTreeMap::new();
    for doc in &app.database.documents {
        by_id.insert(
            doc.id.clone(),
            DocumentRow {
                id: doc.id.clone(),
                subscribers: 0,
                fields: doc.fields,
                size_bytes: doc.size_bytes,
                last_change_ms: doc.updated_at_ms,
                instances: Vec::new(),
                via: None,
            },
        );
    }
    for instance in &app.instances {
        let name = instance
            .report
            .stats
            .as_ref()
            .map(|s| short_instance(&s.instance_id))
            .unwrap_or_else(|| instance.report.address.clone());
        for live in &instance.report.documents {
            let row = by_id.entry(live.id.clone()).or_insert_with(|| DocumentRow {
                id: live.id.clone(),
                subscribers: 0,
                fields: live.fields,
                size_bytes: live.approximate_bytes,
                last_change_ms: live.last_modified_ms,
                instances: Vec::new(),
                via: None,
            });
            row.subscribers += live.subscribers;
            // Memory is newer than the database while writes are in flight.
            row.fields = row.fields.max(live.fields);
            row.last_change_ms = row.last_change_ms.max(live.last_modified_ms);
            row.instances.push(name.clone());
            row.via
                .get_or_insert_with(|| instance.report.address.clone());
        }
    }
    let filter = &app.filters[View::Documents.index()];
    let mut rows: Vec<DocumentRow> = by_id
        .into_values()
        .filter(|r| matches(filter, &[&r.id]))
        .collect();
    match app.document_sort {
        DocumentSort::LastChange => rows.sort_by(|a, b| {
            b.last_change_ms
                .cmp(&a.last_change_ms)
                .then(a.id.cmp(&b.id))
        }),
        DocumentSort::Id => rows.sort_by(|a, b| a.id.cmp(&b.id)),
        DocumentSort::Size => {
            rows.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.id.cmp(&b.id)))
        }
        DocumentSort::Subscribers => {
            rows.sort_by(|a, b| b.subscribers.cmp(&a.subscribers).then(a.id.cmp(&b.id)))
        }
    }
    rows
}

/// Live sessions of every instance, then persisted rows no instance reported.
pub fn sessions(app: &App) -> Vec<SessionInfo> {
    let mut rows: Vec<SessionInfo> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for instance in &app.instances {
        for s in &instance.report.sessions {
            if seen.insert(s.id.clone()) {
                rows.push(s.clone());
            }
        }
    }
    for s in &app.database.sessions {
        if seen.insert(s.id.clone()) {
            rows.push(s.clone());
        }
    }
    let filter = &app.filters[View::Sessions.index()];
    rows.retain(|s| {
        matches(
            filter,
            &[
                &s.id,
                s.user.as_deref().unwrap_or(""),
                s.client.as_deref().unwrap_or(""),
                s.remote.as_deref().unwrap_or(""),
                s.instance.as_deref().unwrap_or(""),
            ],
        )
    });
    match app.session_sort {
        SessionSort::LastSeen => {
            rows.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)))
        }
        SessionSort::User => rows.sort_by(|a, b| a.user.cmp(&b.user).then(a.id.cmp(&b.id))),
        SessionSort::ConnectedSince => rows.sort_by(|a, b| {
            a.connected_at_ms
                .cmp(&b.connected_at_ms)
                .then(a.id.cmp(&b.id))
        }),
    }
    rows
}

/// Awareness entries by document and client: the instances' view (live, with
/// expiry), plus database rows no instance reported.
pub fn awareness(app: &App) -> Vec<AwarenessClient> {
    let mut by_key: BTreeMap<(String, String), AwarenessClient> = BTreeMap::new();
    for instance in &app.instances {
        for a in &instance.report.awareness {
            by_key
                .entry((a.document_id.clone(), a.client_id.clone()))
                .or_insert_with(|| a.clone());
        }
    }
    for a in &app.database.awareness {
        by_key
            .entry((a.document_id.clone(), a.client_id.clone()))
            .or_insert_with(|| a.clone());
    }
    let filter = &app.filters[View::Awareness.index()];
    by_key
        .into_values()
        .filter(|a| {
            let state = a.state.to_string();
            matches(filter, &[&a.document_id, &a.client_id, &state])
        })
        .collect()
}

/// Sampled traffic, newest first.
pub fn traffic(app: &App) -> Vec<&TrafficSample> {
    let filter = &app.filters[View::Traffic.index()];
    app.traffic
        .iter()
        .rev()
        .filter(|t| {
            matches(
                filter,
                &[
                    &t.channel,
                    &t.kind,
                    t.document.as_deref().unwrap_or(""),
                    t.origin.as_deref().unwrap_or(""),
                ],
            )
        })
        .collect()
}

/// Every instance's jobs.
pub fn jobs(app: &App) -> Vec<JobInfo> {
    let filter = &app.filters[View::Maintenance.index()];
    app.instances
        .iter()
        .flat_map(|i| i.report.jobs.iter().cloned())
        .filter(|j| matches(filter, &[&j.name, &j.instance]))
        .collect()
}

/// Runs, newest first: the database's history (fleet-wide) merged with what the
/// instances report.
pub fn runs(app: &App) -> Vec<RunInfo> {
    let mut by_id: BTreeMap<i64, RunInfo> = BTreeMap::new();
    for r in app
        .database
        .runs
        .iter()
        .chain(app.instances.iter().flat_map(|i| i.report.runs.iter()))
    {
        by_id.entry(r.id).or_insert_with(|| r.clone());
    }
    let filter = &app.filters[View::Maintenance.index()];
    let mut rows: Vec<RunInfo> = by_id
        .into_values()
        .filter(|r| matches(filter, &[&r.job, &r.instance_id, &r.outcome]))
        .collect();
    rows.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then(b.id.cmp(&a.id)));
    rows
}

/// The last run of a job, if any.
pub fn last_run<'a>(runs: &'a [RunInfo], job: &str) -> Option<&'a RunInfo> {
    runs.iter().find(|r| r.job == job)
}

/// Number of selectable rows in a view.
pub fn len(app: &App, view: View) -> usize {
    match view {
        View::Overview => app.instances.len(),
        View::Documents => documents(app).len(),
        View::Sessions => sessions(app).len(),
        View::Awareness => awareness(app).len(),
        View::Traffic => traffic(app).len(),
        View::Maintenance => runs(app).len(),
    }
}
