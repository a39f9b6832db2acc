//! The console's model: which view is shown, selection, filters, overlays, and the
//! latest data of every source. Pure data; changed only by
//! [`update`](super::update::update).

use std::collections::VecDeque;

use serde::Serialize;

use super::action::OperatorAction;
use super::model::{DatabaseReport, DocumentDetail, InstanceReport, RedisReport, TrafficSample};

/// The six tabs, in key order (`1`…`6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum View {
    Overview,
    Documents,
    Sessions,
    Awareness,
    Traffic,
    Maintenance,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Overview,
        View::Documents,
        View::Sessions,
        View::Awareness,
        View::Traffic,
        View::Maintenance,
    ];

    pub fn index(self) -> usize {
        match self {
            View::Overview => 0,
            View::Documents => 1,
            View::Sessions => 2,
            View::Awareness => 3,
            View::Traffic => 4,
            View::Maintenance => 5,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Documents => "Documents",
            View::Sessions => "Sessions",
            View::Awareness => "Awareness",
            View::Traffic => "Traffic",
            View::Maintenance => "Maintenance",
        }
    }

    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    pub fn previous(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// Document list order (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DocumentSort {
    LastChange,
    Id,
    Size,
    Subscribers,
}

impl DocumentSort {
    pub fn next(self) -> DocumentSort {
        match self {
            DocumentSort::LastChange => DocumentSort::Id,
            DocumentSort::Id => DocumentSort::Size,
            DocumentSort::Size => DocumentSort::Subscribers,
            DocumentSort::Subscribers => DocumentSort::LastChange,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DocumentSort::LastChange => "last change",
            DocumentSort::Id => "id",
            DocumentSort::Size => "size",
            DocumentSort::Subscribers => "subscribers",
        }
    }
}

/// Session list order (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SessionSort {
    LastSeen,
    User,
    ConnectedSince,
}

impl SessionSort {
    pub fn next(self) -> SessionSort {
        match self {
            SessionSort::LastSeen => SessionSort::User,
            SessionSort::User => SessionSort::ConnectedSince,
            SessionSort::ConnectedSince => SessionSort::LastSeen,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SessionSort::LastSeen => "last seen",
            SessionSort::User => "user",
            SessionSort::ConnectedSince => "connected",
        }
    }
}

/// What is drawn over the current view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Confirm(OperatorAction),
}

/// One instance with the rates derived from its successive polls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceView {
    pub report: InstanceReport,
    pub rate_in: f64,
    pub rate_out: f64,
    /// Messages per second, oldest first (bounded, for the sparklines).
    pub history_in: VecDeque<u64>,
    pub history_out: VecDeque<u64>,
}

/// Samples kept for sparklines: two minutes at a 1 s refresh.
pub const HISTORY_LEN: usize = 120;
/// Traffic samples kept for the Traffic view.
pub const TRAFFIC_LEN: usize = 500;
/// Refresh rates `+`/`-` step through, in milliseconds.
pub const REFRESH_STEPS_MS: [u64; 7] = [250, 500, 1000, 2000, 5000, 10_000, 30_000];

/// The model.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Injected clock (epoch ms): views compute ages from it.
    pub now_ms: i64,
    pub view: View,
    /// Selected row per view.
    pub selected: [usize; 6],
    /// Filter text per view (`/`).
    pub filters: [String; 6],
    /// Typing into the current view's filter.
    pub editing_filter: bool,
    /// Data updates are held (the screen is frozen) while paused.
    pub paused: bool,
    pub refresh_ms: u64,
    pub overlay: Overlay,
    pub allow_actions: bool,
    /// The document drilled into (Documents view, Enter).
    pub detail: Option<String>,
    pub detail_data: Option<DocumentDetail>,
    pub detail_scroll: u16,
    pub document_sort: DocumentSort,
    pub session_sort: SessionSort,
    /// Last notice for the status line, and whether it is an error.
    pub notice: Option<(String, bool)>,
    pub instances: Vec<InstanceView>,
    pub database: DatabaseReport,
    pub redis: RedisReport,
    /// Newest last.
    pub traffic: VecDeque<TrafficSample>,
    pub running: bool,
}

impl App {
    pub fn new(now_ms: i64, refresh_ms: u64, allow_actions: bool) -> App {
        App {
            now_ms,
            view: View::Overview,
            selected: [0; 6],
            filters: Default::default(),
            editing_filter: false,
            paused: false,
            refresh_ms,
            overlay: Overlay::None,
            allow_actions,
            detail: None,
            detail_data: None,
            detail_scroll: 0,
            document_sort: DocumentSort::LastChange,
            session_sort: SessionSort::LastSeen,
            notice: None,
            instances: Vec::new(),
            database: DatabaseReport::default(),
            redis: RedisReport::default(),
            traffic: VecDeque::new(),
            running: true,
        }
    }

    pub fn filter(&self) -> &str {
        &self.filters[self.view.index()]
    }

    /// What the feed should fetch besides the regular polls.
    pub fn feed_request(&self) -> FeedRequest {
        FeedRequest {
            refresh_ms: self.refresh_ms,
            documents_filter: self.filters[View::Documents.index()].clone(),
            detail: self.detail.clone(),
        }
    }

    /// Admin address of the first instance that answers: where fleet-wide actions
    /// (cleanup, pruning) are sent.
    pub fn first_up_instance(&self) -> Option<&str> {
        self.instances
            .iter()
            .find(|i| i.report.state.is_up())
            .map(|i| i.report.address.as_str())
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
