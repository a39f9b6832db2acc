//! Messages to the reducer: terminal input, clock ticks, and what the feed read; and
//! the effects the reducer asks the runtime to carry out (it never does I/O itself).

use crossterm::event::KeyEvent;

use super::model::{DatabaseReport, DocumentDetail, InstanceReport, RedisReport};

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
    ActionDone(Result<String, String>),
}

/// An operator action, named precisely so the confirmation dialog can say what
/// will happen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum OperatorAction {
    Cleanup {
        via: String,
    },
    PruneAwareness {
        via: String,
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
    /// The dialog's text: what happens, where, and that it is recorded.
    pub fn describe(&self) -> String {
        match self {
            OperatorAction::Cleanup { via } => format!(
                "Run a cleanup now on {via}: delete expired sessions, old deltas and old \
                 snapshots with the configured retention. Recorded in the run history."
            ),
            OperatorAction::PruneAwareness { via } => format!(
                "Prune awareness now on {via}: remove expired presence entries and \
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

    pub fn title(&self) -> &'static str {
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
