//! The console's model: which view is shown, selection, sort, filters, the command
//! line, overlays, and the latest data of every source. Pure data; changed only by
//! [`update`](super::update::update).

use std::collections::VecDeque;

use serde::Serialize;

use super::action::OperatorAction;
use super::model::{
    DatabaseReport, DocumentDetail, Event, InstanceReport, RedisReport, TrafficSample,
};

/// The eight views, in key order (`1`…`8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum View {
    Overview,
    Documents,
    Sessions,
    Awareness,
    Traffic,
    Maintenance,
    Events,
    Charts,
}

impl View {
    pub const ALL: [View; 8] = [
        View::Overview,
        View::Documents,
        View::Sessions,
        View::Awareness,
        View::Traffic,
        View::Maintenance,
        View::Events,
        View::Charts,
    ];

    pub fn index(self) -> usize {
        match self {
            View::Overview => 0,
            View::Documents => 1,
            View::Sessions => 2,
            View::Awareness => 3,
            View::Traffic => 4,
            View::Maintenance => 5,
            View::Events => 6,
            View::Charts => 7,
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Documents => "Documents",
            View::Sessions => "Sessions",
            View::Awareness => "Awareness",
            View::Traffic => "Traffic",
            View::Maintenance => "Maintenance",
            View::Events => "Events",
            View::Charts => "Charts",
        }
    }

    /// The tab title on narrow terminals (all eight fit on 80 columns).
    pub(crate) fn short_title(self) -> &'static str {
        match self {
            View::Documents => "Docs",
            View::Maintenance => "Jobs",
            other => other.title(),
        }
    }

    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    pub(crate) fn previous(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// A sortable column: its header and the direction it starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortColumn {
    pub(crate) name: &'static str,
    pub(crate) descending: bool,
}

const fn col(name: &'static str, descending: bool) -> SortColumn {
    SortColumn { name, descending }
}

/// Document list columns `s` steps through.
const DOCUMENT_SORTS: [SortColumn; 5] = [
    col("Last change", true),
    col("Document", false),
    col("Size", true),
    col("Subs", true),
    col("Fields", true),
];

/// Session list columns `s` steps through.
const SESSION_SORTS: [SortColumn; 6] = [
    col("Seen", true),
    col("User", false),
    col("Since", false),
    col("Client", false),
    col("Instance", false),
    col("Remote", false),
];

/// The sortable columns of a view (empty: `s` does nothing there).
pub(crate) fn sort_columns(view: View) -> &'static [SortColumn] {
    match view {
        View::Documents => &DOCUMENT_SORTS,
        View::Sessions => &SESSION_SORTS,
        _ => &[],
    }
}

/// Which column a view is sorted by, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sort {
    /// Index into `sort_columns`.
    pub column: usize,
    pub descending: bool,
}

impl Sort {
    fn first(view: View) -> Sort {
        Sort {
            column: 0,
            descending: sort_columns(view).first().is_some_and(|c| c.descending),
        }
    }

    /// The column's header with its direction (`Size▼`).
    pub fn label(self, view: View) -> Option<String> {
        let c = sort_columns(view).get(self.column)?;
        Some(format!(
            "{}{}",
            c.name,
            if self.descending { "▼" } else { "▲" }
        ))
    }
}

/// What is drawn over the current view.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    Confirm(OperatorAction),
    /// A sampled Traffic message's payload.
    Payload(Box<TrafficSample>),
}

/// One point of an instance's history, for the charts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub at_ms: i64,
    pub rate_in: f64,
    pub rate_out: f64,
    pub connections: f64,
    pub backlog: f64,
}

/// One instance with the rates derived from its successive polls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceView {
    pub report: InstanceReport,
    /// The instance id last seen at this address (kept while it is down).
    pub known_id: Option<String>,
    /// Messages per second over [`RATE_WINDOW_MS`]; unknown until two polls.
    pub rate_in: Option<f64>,
    pub rate_out: Option<f64>,
    /// `(sampled at, messages in, messages out)` within the rate window.
    pub counters: VecDeque<(i64, u64, u64)>,
    /// Oldest first, at most `HISTORY_LEN` points over `HISTORY_MS`.
    pub history: VecDeque<Point>,
}

/// An event of some instance of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetEvent {
    pub instance_id: String,
    /// Host, else short id.
    pub instance: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Rates are averaged over this window: counters move in batches, so the rate
/// between two polls alone jumps between 0 and double.
pub const RATE_WINDOW_MS: i64 = 10_000;
/// History kept for the charts.
pub(crate) const HISTORY_MS: i64 = 10 * 60 * 1000;
pub(crate) const HISTORY_LEN: usize = 600;
/// Traffic samples kept for the Traffic view.
pub const TRAFFIC_LEN: usize = 500;
/// Events kept across the fleet.
pub const EVENTS_LEN: usize = 1000;
/// Refresh rates `+`/`-` step through, in milliseconds.
pub(crate) const REFRESH_STEPS_MS: [u64; 7] = [250, 500, 1000, 2000, 5000, 10_000, 30_000];

/// The model.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Injected clock (epoch ms): views compute ages from it.
    pub now_ms: i64,
    pub view: View,
    /// Selected row per view.
    pub selected: [usize; 8],
    /// Filter text per view (`/`).
    pub filters: [String; 8],
    /// Sort per view (`s` next column, `S` reverse).
    pub sorts: [Sort; 8],
    /// Typing into the current view's filter.
    pub editing_filter: bool,
    /// The `:` command line while it is open.
    pub command: Option<String>,
    /// Data updates are held (the screen is frozen) while paused.
    pub paused: bool,
    pub refresh_ms: u64,
    pub overlay: Overlay,
    pub overlay_scroll: u16,
    pub allow_actions: bool,
    /// Whether an admin credential is at hand (a token, or the secret to mint one).
    pub has_credential: bool,
    /// The document drilled into (Documents view, Enter).
    pub detail: Option<String>,
    pub detail_data: Option<DocumentDetail>,
    pub detail_scroll: u16,
    /// Last notice for the status line, and whether it is an error.
    pub notice: Option<(String, bool)>,
    pub instances: Vec<InstanceView>,
    pub database: DatabaseReport,
    pub redis: RedisReport,
    /// Newest last.
    pub traffic: VecDeque<TrafficSample>,
    /// Newest first, across the fleet.
    pub events: VecDeque<FleetEvent>,
    /// Events that arrived while paused (the feed does not send them twice), added
    /// on resume.
    pub held_events: Vec<FleetEvent>,
    pub running: bool,
}

impl App {
    pub fn new(now_ms: i64, refresh_ms: u64, allow_actions: bool) -> App {
        App {
            now_ms,
            view: View::Overview,
            selected: [0; 8],
            filters: Default::default(),
            sorts: View::ALL.map(Sort::first),
            editing_filter: false,
            command: None,
            paused: false,
            refresh_ms,
            overlay: Overlay::None,
            overlay_scroll: 0,
            allow_actions,
            has_credential: true,
            detail: None,
            detail_data: None,
            detail_scroll: 0,
            notice: None,
            instances: Vec::new(),
            database: DatabaseReport::default(),
            redis: RedisReport::default(),
            traffic: VecDeque::new(),
            events: VecDeque::new(),
            held_events: Vec::new(),
            running: true,
        }
    }

    pub fn filter(&self) -> &str {
        &self.filters[self.view.index()]
    }

    pub fn sort(&self, view: View) -> Sort {
        self.sorts[view.index()]
    }

    /// Why actions cannot run, when they cannot (shown before any dialog).
    pub(crate) fn actions_unavailable(&self) -> Option<&'static str> {
        if !self.allow_actions {
            Some("read-only (start with --allow-actions)")
        } else if !self.has_credential {
            Some("actions unavailable: no admin credential (--admin-token / SYNCKIT_ADMIN_TOKEN, or JWT_SECRET to mint one)")
        } else {
            None
        }
    }

    /// What the feed should fetch besides the regular polls.
    pub fn feed_request(&self) -> FeedRequest {
        FeedRequest {
            refresh_ms: self.refresh_ms,
            documents_filter: self.filters[View::Documents.index()].clone(),
            detail: self.detail.clone(),
        }
    }

    /// The first instance that answers: where fleet-wide actions (cleanup, pruning)
    /// are sent.
    pub(crate) fn first_up_instance(&self) -> Option<&InstanceView> {
        self.instances.iter().find(|i| i.report.state.is_up())
    }
}

/// The feed's instructions from the app.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedRequest {
    pub refresh_ms: u64,
    /// Pushed into the documents query, so the filter searches the whole table.
    pub documents_filter: String,
    pub detail: Option<String>,
}
