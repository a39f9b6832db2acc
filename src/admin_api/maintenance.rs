//! `GET /maintenance` (the scheduler's jobs, recent runs, the cleanup retention in
//! force) and the answer of `POST /admin/actions/*`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A scheduled job with its next planned occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: String,
    pub(crate) schedule: String,
    pub enabled: bool,
    pub next_run: Option<DateTime<Utc>>,
}

/// One run of a job (a `maintenance_runs` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub scheduled_for: DateTime<Utc>,
    pub(crate) instance_id: String,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// `running`, `ok` or `failed`.
    pub outcome: String,
    pub counts: Value,
    pub error: Option<String>,
}

impl RunRecord {
    pub(crate) fn duration_ms(&self) -> Option<i64> {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds())
    }
}

/// A run as `/maintenance` lists it: the row and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MaintenanceRun {
    #[serde(flatten)]
    pub(crate) run: RunRecord,
    pub(crate) duration_ms: Option<i64>,
}

/// What a cleanup run by this instance deletes (`None` = that part is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRetention {
    pub sessions_older_than_secs: Option<u64>,
    pub deltas_older_than_secs: Option<u64>,
    pub snapshots_older_than_secs: Option<u64>,
    pub max_snapshots_per_document: Option<u32>,
}

/// `GET /maintenance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MaintenanceStatus {
    pub(crate) jobs: Vec<JobStatus>,
    /// Newest first; empty when the run log could not be read (`runs_error`).
    pub(crate) runs: Vec<MaintenanceRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runs_error: Option<String>,
    /// The retention `POST /admin/actions/cleanup` applies on this instance.
    #[serde(default)]
    pub(crate) cleanup: Option<CleanupRetention>,
}

/// `POST /admin/actions/cleanup` and `/prune-awareness`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionOutcome {
    pub(crate) job: String,
    /// `ok` or `failed`.
    pub(crate) outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) counts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}
