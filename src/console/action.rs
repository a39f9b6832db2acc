//! Messages to the reducer: terminal input, clock ticks, and what the feed read; and
//! the effects the reducer asks the runtime to carry out (it never does I/O itself).

use crossterm::event::KeyEvent;

use super::model::{CleanupRetention, DatabaseReport, DocumentDetail, InstanceReport, RedisReport};

/// Everything that can change the [`App`](super::app::App).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Key(KeyEvent),
    /// The clock moved (epoch ms); time is injected so views and tests agree.
    Tick(i64),
    /// The terminal was resized (the next draw picks up the size).
    Resize,
    Instances(Vec<InstanceReport>),
    Database(Box<DatabaseReport>),
    Redis(Box<RedisReport>),
    Detail(Box<DocumentDetail>),
    /// An operator action finished: what to tell the operator.
    OperatorActionDone(Result<String, String>),
}

/// An operator action, named precisely so the confirmation dialog can say what
/// will happen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum OperatorAction {
    Cleanup {
        via: String,
        /// The instance, as the operator knows it (host, else short id).
        target: String,
        /// What it will delete; `None` when the server did not say.
        retention: Option<CleanupRetention>,
    },
    PruneAwareness {
        via: String,
        target: String,
    },
    Disconnect {
        session: String,
        user: String,
        via: String,
    },
    DeleteDocument {
        id: String,
        via: String,
    },
}

impl OperatorAction {
    /// The dialog's text: what happens, where, with which settings, and that it is
    /// recorded.
    pub fn describe(&self) -> String {
        match self {
            OperatorAction::Cleanup {
                via,
                target,
                retention,
            } => {
                let what = retention.map_or_else(
                    || {
                        "with the retention configured there (this server does not report it)"
                            .to_owned()
                    },
                    |r| retention_text(&r),
                );
                format!(
                    "Run a cleanup now on {target} ({via}): {what}. Recorded in the run history."
                )
            }
            OperatorAction::PruneAwareness { via, target } => format!(
                "Prune awareness now on {target} ({via}): remove expired presence entries and \
                 announce their leaves. Recorded in the run history."
            ),
            OperatorAction::Disconnect { session, user, via } => format!(
                "Disconnect session {session} (user {user}) on {via}: its socket is \
                 closed with 1008; the client may reconnect. Logged by the server."
            ),
            OperatorAction::DeleteDocument { id, via } => format!(
                "Delete document {id} through {via}: its state, clocks, deltas and \
                 snapshots are removed from storage for good. Logged by the server."
            ),
        }
    }

    pub(crate) fn title(&self) -> &'static str {
        match self {
            OperatorAction::Cleanup { .. } => "Run cleanup now?",
            OperatorAction::PruneAwareness { .. } => "Prune awareness now?",
            OperatorAction::Disconnect { .. } => "Disconnect session?",
            OperatorAction::DeleteDocument { .. } => "Delete document?",
        }
    }
}

/// What the reducer asks of the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Perform(OperatorAction),
}

/// `24h`, `30d`: whole units, as operators write retention.
fn age(secs: u64) -> String {
    match secs {
        // 24h reads better than 1d; 7d better than 168h.
        s if s >= 2 * 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What a cleanup with `r` deletes, in words.
fn retention_text(r: &CleanupRetention) -> String {
    let mut parts = Vec::new();
    if let Some(s) = r.sessions_older_than_secs {
        parts.push(format!("sessions idle over {}", age(s)));
    }
    if let Some(s) = r.deltas_older_than_secs {
        parts.push(format!("deltas older than {}", age(s)));
    }
    match (r.snapshots_older_than_secs, r.max_snapshots_per_document) {
        (Some(s), Some(n)) => parts.push(format!(
            "snapshots older than {} and all but the newest {n} per document",
            age(s)
        )),
        (Some(s), None) => parts.push(format!("snapshots older than {}", age(s))),
        (None, Some(n)) => parts.push(format!("all but the newest {n} snapshots per document")),
        (None, None) => {}
    }
    if parts.is_empty() {
        "nothing (every retention is off)".into()
    } else {
        format!("delete {}", parts.join(", "))
    }
}
