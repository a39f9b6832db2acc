//! The rows each view shows, derived from the sources: the fleet (every instance
//! heard of, from polls, from each instance's own view of its peers and from Redis
//! presence), documents merged from PostgreSQL and every instance's live documents,
//! live and persisted sessions, awareness from the instances (else the database),
//! traffic, runs and events, each filtered and sorted. Pure functions of the
//! [`App`], shared by the views, the reducer (what the selected row is) and
//! `--once`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::app::{App, FleetEvent, InstanceView, Sort, View};
use super::model::{
    AwarenessClient, JobInfo, PeerStatus, PresenceMetadata, RunInfo, SessionInfo, SourceState,
    Stats, TrafficSample,
};

/// A short name for an instance id: enough to tell a fleet apart on 80 columns.
pub(crate) fn short_instance(id: &str) -> String {
    id.chars().take(8).collect()
}

fn directed(order: Ordering, sort: Sort) -> Ordering {
    if sort.descending {
        order.reverse()
    } else {
        order
    }
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
    pub(crate) fields: u64,
    pub(crate) size_bytes: u64,
    pub(crate) last_change_ms: i64,
    /// The stored row's version, when PostgreSQL listed it.
    pub(crate) version: Option<i64>,
    /// Awareness-only subscribers, summed over the instances.
    pub(crate) awareness_subscribers: u64,
    /// Short ids of the instances that have it loaded.
    pub(crate) instances: Vec<String>,
    /// Admin address of one instance that has it loaded.
    #[serde(skip)]
    pub(crate) via: Option<String>,
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
                version: Some(doc.version),
                awareness_subscribers: 0,
                instances: Vec::new(),
                via: None,
            },
        );
    }
    // The fleet's names: unique even when instances share a host.
    let names = names_by_id(&fleet(app));
    for instance in &app.instances {
        let name = instance
            .known_id
            .as_ref()
            .and_then(|id| names.get(id).cloned())
            .unwrap_or_else(|| instance_name(instance));
        for live in &instance.report.documents {
            let row = by_id.entry(live.id.clone()).or_insert_with(|| DocumentRow {
                id: live.id.clone(),
                subscribers: 0,
                fields: live.fields,
                size_bytes: live.approximate_bytes,
                last_change_ms: live.last_modified_ms,
                version: None,
                awareness_subscribers: 0,
                instances: Vec::new(),
                via: None,
            });
            row.subscribers += live.subscribers;
            row.awareness_subscribers += live.awareness_subscribers;
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
    let sort = app.sort(View::Documents);
    rows.sort_by(|a, b| {
        let by = match sort.column {
            1 => a.id.cmp(&b.id),
            2 => a.size_bytes.cmp(&b.size_bytes),
            3 => a.subscribers.cmp(&b.subscribers),
            4 => a.fields.cmp(&b.fields),
            _ => a.last_change_ms.cmp(&b.last_change_ms),
        };
        directed(by, sort).then_with(|| a.id.cmp(&b.id))
    });
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
    let sort = app.sort(View::Sessions);
    rows.sort_by(|a, b| {
        let by = match sort.column {
            1 => a.user.cmp(&b.user),
            2 => a.connected_at_ms.cmp(&b.connected_at_ms),
            3 => a.client.cmp(&b.client),
            4 => a.instance.cmp(&b.instance),
            5 => a.remote.cmp(&b.remote),
            _ => a.last_seen_ms.cmp(&b.last_seen_ms),
        };
        directed(by, sort).then_with(|| a.id.cmp(&b.id))
    });
    rows
}

/// Awareness entries by document and client: the instances' view (live, with
/// expiry), plus database rows no instance reported.
pub(crate) fn awareness(app: &App) -> Vec<AwarenessClient> {
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
pub(crate) fn jobs(app: &App) -> Vec<JobInfo> {
    let filter = &app.filters[View::Maintenance.index()];
    app.instances
        .iter()
        .flat_map(|i| i.report.jobs.iter().cloned())
        .filter(|j| matches(filter, &[&j.name, &j.instance]))
        .collect()
}

/// Runs, newest first: the database's history (fleet-wide) merged with what the
/// instances report.
pub(crate) fn runs(app: &App) -> Vec<RunInfo> {
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
pub(crate) fn last_run<'a>(runs: &'a [RunInfo], job: &str) -> Option<&'a RunInfo> {
    runs.iter().find(|r| r.job == job)
}

/// Number of selectable rows in a view.
pub fn len(app: &App, view: View) -> usize {
    match view {
        View::Overview => fleet(app).len(),
        View::Documents => documents(app).len(),
        View::Sessions => sessions(app).len(),
        View::Awareness => awareness(app).len(),
        View::Traffic => traffic(app).len(),
        View::Maintenance => runs(app).len(),
        View::Events => events(app).len(),
        View::Charts => 0,
    }
}

/// How the operator knows a polled instance: its host, else (while it answers)
/// its short id, else the address they gave.
pub(crate) fn instance_name(instance: &InstanceView) -> String {
    let stats = instance.report.stats.as_ref();
    stats
        .and_then(|s| s.host.clone())
        .or_else(|| {
            stats
                .and_then(|s| s.instance_id.as_deref())
                .map(short_instance)
        })
        .unwrap_or_else(|| {
            instance
                .report
                .address
                .trim_start_matches("http://")
                .to_owned()
        })
}

/// Where a fleet member's status comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MemberStatus {
    /// Its admin API answered this refresh.
    Up,
    /// Heard on presence, but its admin API is not polled (none announced).
    Online,
    /// Its admin API does not answer.
    Unreachable,
    /// Silent on presence for three heartbeats.
    Gone,
    /// Said goodbye (a clean stop).
    Offline,
    Unknown,
}

impl MemberStatus {
    #[cfg(any(test, feature = "test-util"))]
    pub fn label(self) -> &'static str {
        match self {
            MemberStatus::Up => "up",
            MemberStatus::Online => "online",
            MemberStatus::Unreachable => "DOWN",
            MemberStatus::Gone => "gone",
            MemberStatus::Offline => "offline",
            MemberStatus::Unknown => "?",
        }
    }

    /// Counted as a running member of the fleet.
    fn is_running(self) -> bool {
        matches!(self, MemberStatus::Up | MemberStatus::Online)
    }
}

fn member_status(peer: PeerStatus) -> MemberStatus {
    match peer {
        PeerStatus::Online => MemberStatus::Online,
        PeerStatus::Offline => MemberStatus::Offline,
        PeerStatus::Gone => MemberStatus::Gone,
        PeerStatus::Unknown => MemberStatus::Unknown,
    }
}

/// One instance of the fleet, however it was heard of.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetRow {
    /// Instance id, when known.
    pub(crate) id: Option<String>,
    /// Host, else short id, else address.
    pub name: String,
    pub(crate) host: Option<String>,
    pub(crate) version: Option<String>,
    pub status: MemberStatus,
    /// Admin address (polled or announced).
    pub address: Option<String>,
    /// Why its admin API does not answer.
    pub(crate) error: Option<String>,
    pub(crate) started_at_ms: Option<i64>,
    /// The live numbers of a polled instance that answered.
    #[serde(skip)]
    pub(crate) stats: Option<Stats>,
    pub(crate) rate_in: Option<f64>,
    pub(crate) rate_out: Option<f64>,
    /// Epoch ms it was last heard of (presence), when not polled.
    pub(crate) last_seen_ms: Option<i64>,
}

impl FleetRow {
    /// A polled instance, first-hand: its stats count only while it answers.
    fn polled(i: &InstanceView) -> FleetRow {
        let stats = i.report.stats.clone().filter(|_| i.report.state.is_up());
        let id = stats
            .as_ref()
            .and_then(|s| s.instance_id.clone())
            .or_else(|| i.known_id.clone());
        let error = match &i.report.state {
            SourceState::Down { error } => Some(error.clone()),
            _ => None,
        };
        let status = if stats.is_some() {
            MemberStatus::Up
        } else if error.is_some() {
            MemberStatus::Unreachable
        } else {
            MemberStatus::Unknown
        };
        FleetRow {
            name: instance_name(i),
            host: stats.as_ref().and_then(|s| s.host.clone()),
            version: stats.as_ref().and_then(|s| s.version.clone()),
            started_at_ms: stats.as_ref().and_then(|s| s.started_at_ms),
            id,
            status,
            address: Some(i.report.address.clone()),
            error,
            stats,
            rate_in: i.rate_in,
            rate_out: i.rate_out,
            last_seen_ms: None,
        }
    }

    fn from_presence(
        id: &str,
        status: PeerStatus,
        last_seen: Option<i64>,
        meta: &PresenceMetadata,
    ) -> FleetRow {
        let mut row = FleetRow {
            id: Some(id.to_owned()),
            name: short_instance(id),
            host: None,
            version: None,
            status: member_status(status),
            address: None,
            error: None,
            started_at_ms: None,
            stats: None,
            rate_in: None,
            rate_out: None,
            last_seen_ms: last_seen,
        };
        row.learn(meta);
        row
    }

    /// Fill what presence metadata tells and the row does not know yet.
    fn learn(&mut self, meta: &PresenceMetadata) {
        if self.host.is_none() {
            self.host = meta.host.clone();
        }
        self.version = self.version.take().or_else(|| meta.version.clone());
        self.started_at_ms = self.started_at_ms.or(meta.started_at);
        self.address = self.address.take().or_else(|| meta.admin.clone());
        if let Some(host) = &self.host {
            self.name = host.clone();
        }
    }
}

/// Every instance heard of: polled ones first-hand, the others from what the
/// answering instances and Redis presence say (the freshest word wins). Sorted by
/// name.
pub fn fleet(app: &App) -> Vec<FleetRow> {
    let mut rows: Vec<FleetRow> = app.instances.iter().map(FleetRow::polled).collect();
    for (id, (status, seen, meta)) in heard_of(app) {
        let existing = rows.iter_mut().find(|r| {
            r.id.as_deref() == Some(id.as_str())
                || (r.id.is_none() && meta.admin.is_some() && r.address == meta.admin)
        });
        match existing {
            Some(row) => {
                row.id.get_or_insert(id);
                row.learn(&meta);
                // A stopped instance's API is down because it said goodbye.
                if row.status == MemberStatus::Unreachable && status == PeerStatus::Offline {
                    row.status = MemberStatus::Offline;
                }
            }
            None => rows.push(FleetRow::from_presence(&id, status, seen, &meta)),
        }
    }
    // Several instances on one host: the short id tells them apart.
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    for row in &mut rows {
        let shared = names.iter().filter(|n| **n == row.name).count() > 1;
        if let (true, Some(id)) = (shared, &row.id) {
            row.name = format!("{} {}", short_instance(id), row.name);
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    rows
}

/// What presence says of an instance: its status, when it was last seen, and its
/// metadata.
type Heard = (PeerStatus, Option<i64>, PresenceMetadata);

/// What the others say: each answering instance's peers, then the console's own
/// Redis tap; for each instance the freshest report.
fn heard_of(app: &App) -> BTreeMap<String, Heard> {
    let mut heard: BTreeMap<String, Heard> = BTreeMap::new();
    let peers = app
        .instances
        .iter()
        .filter_map(|i| i.report.stats.as_ref())
        .flat_map(|s| s.instances.iter())
        .filter(|e| !e.is_self)
        .map(|e| {
            (
                e.server_id.clone(),
                e.status,
                e.last_seen,
                e.metadata.clone(),
            )
        });
    let presence = app.redis.fleet.iter().map(|m| {
        (
            m.server_id.clone(),
            m.status,
            Some(m.last_seen_ms),
            m.metadata.clone(),
        )
    });
    for (id, status, seen, meta) in peers.chain(presence) {
        let fresher = heard.get(&id).is_none_or(|(_, s, _)| seen > *s);
        if fresher {
            heard.insert(id, (status, seen, meta));
        }
    }
    heard
}

/// Display names of the fleet by instance id (events name their instance so).
pub(crate) fn names_by_id(fleet: &[FleetRow]) -> std::collections::HashMap<String, String> {
    fleet
        .iter()
        .filter_map(|r| Some((r.id.clone()?, r.name.clone())))
        .collect()
}

/// The context header's numbers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub members: usize,
    pub running: usize,
    pub offline: usize,
    pub(crate) gone: usize,
    pub unreachable: usize,
    pub versions: Vec<String>,
    /// Sums over the instances that answered (unknown when none did).
    pub connections: Option<i64>,
    pub(crate) rate_in: Option<f64>,
    pub(crate) rate_out: Option<f64>,
}

pub fn summary(fleet: &[FleetRow]) -> FleetSummary {
    let count = |s: MemberStatus| fleet.iter().filter(|r| r.status == s).count();
    let versions: BTreeSet<String> = fleet.iter().filter_map(|r| r.version.clone()).collect();
    let up: Vec<&FleetRow> = fleet.iter().filter(|r| r.stats.is_some()).collect();
    let sum_rate = |f: fn(&FleetRow) -> Option<f64>| -> Option<f64> {
        up.iter().map(|r| f(r)).try_fold(0.0, |a, r| Some(a + r?))
    };
    FleetSummary {
        members: fleet.len(),
        running: fleet.iter().filter(|r| r.status.is_running()).count(),
        offline: count(MemberStatus::Offline),
        gone: count(MemberStatus::Gone),
        unreachable: count(MemberStatus::Unreachable),
        versions: versions.into_iter().collect(),
        connections: (!up.is_empty())
            .then(|| {
                up.iter()
                    .map(|r| r.stats.as_ref().and_then(|s| s.connections.open))
                    .try_fold(0i64, |a, n| Some(a + n?))
            })
            .flatten(),
        rate_in: (!up.is_empty()).then(|| sum_rate(|r| r.rate_in)).flatten(),
        rate_out: (!up.is_empty()).then(|| sum_rate(|r| r.rate_out)).flatten(),
    }
}

/// Events of the whole fleet, newest first, filtered.
pub(crate) fn events(app: &App) -> Vec<&FleetEvent> {
    let filter = &app.filters[View::Events.index()];
    app.events
        .iter()
        .filter(|e| {
            matches(
                filter,
                &[
                    &e.instance,
                    &e.instance_id,
                    e.event.kind.name(),
                    &e.event.message,
                ],
            )
        })
        .collect()
}
