//! What handling one input asks of the connection, as data: the replies to send, the
//! broadcasts to make, the effects to start, and at most one piece of I/O whose
//! answer the session waits for (ARCHITECTURE.md, "The session is sans-I/O").
//!
//! The session decides; the connection layer (`crate::server::carry_out`) does. The
//! one thing the session does to shared state itself is the hub's in-memory work —
//! applying a write, (un)subscribing, a snapshot — which is bounded, never waits,
//! and queues its own persistence and delivery behind it.

use std::sync::Arc;

use super::intake::OwnedFrame;
use super::CloseRequest;
use crate::awareness::{AwarenessEntry, AwarenessError, AwarenessUpdate, SetOutcome};
use crate::protocol::{DecodeError, RawMessage, ServerMessage};
use crate::storage::{SessionRecord, StorageError};
use crate::sync::hub::{DocEntry, TextOutcome};

/// A reply to this connection, in its encoding.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) msg: ServerMessage,
    /// The message id to send it under (a `ping`'s or a request's own id); a fresh
    /// one when `None`.
    pub(crate) id: Option<String>,
}

/// A message for other connections of this instance (now, not in a batching
/// window), published to the other instances.
#[derive(Debug)]
pub(crate) enum Broadcast {
    /// Text or CRDT ops, to the document's other subscribers.
    Ops {
        entry: Arc<DocEntry>,
        msg: ServerMessage,
    },
    /// An awareness update, to the document's awareness and document subscribers
    /// except this connection.
    Awareness {
        document_id: String,
        msg: ServerMessage,
    },
}

/// Work started and not waited for.
#[derive(Debug, PartialEq)]
pub(crate) enum Effect {
    /// Record this session's row (written behind).
    SaveSession(SessionRecord),
    /// Bump the row's `last_seen` (batched across connections).
    TouchSession(String),
    /// Drop the row of a closed connection.
    DeleteSession(String),
    /// Remove the awareness entries this closed connection owned and broadcast
    /// their leaves.
    RemoveAwareness { connection: String },
}

/// I/O the session waits on; its answer ([`Done`]) goes back to
/// [`super::Session::resume`].
#[derive(Debug)]
pub(crate) enum Io {
    /// Decode a large frame away from the runtime's workers.
    Decode(OwnedFrame),
    /// Load a document that is not live (from storage).
    Open(String),
    /// A document's live awareness entries at `now_ms`.
    AwarenessRead { document_id: String, now_ms: i64 },
    /// Store an awareness update.
    AwarenessSet(AwarenessUpdate),
    /// Merge a text state into its document (on the blocking pool when large).
    MergeText {
        target: Arc<DocEntry>,
        state: String,
        clock: f64,
        now_ms: i64,
    },
}

/// The answer to an [`Io`].
#[derive(Debug)]
pub(crate) enum Done {
    Decoded(Result<RawMessage, DecodeError>),
    Opened(Result<Arc<DocEntry>, StorageError>),
    AwarenessRead(Result<Vec<AwarenessEntry>, AwarenessError>),
    AwarenessSet(Result<SetOutcome, AwarenessError>),
    TextMerged(TextOutcome),
}

/// Everything one step of the session asks for, in the order it is to be done:
/// replies and broadcasts as they were decided, then the effects, then the I/O.
#[derive(Debug, Default)]
pub struct Outcome {
    pub(crate) replies: Vec<Reply>,
    pub(crate) broadcasts: Vec<Broadcast>,
    pub(crate) effects: Vec<Effect>,
    /// When set, the session is waiting: the next call is `resume` with its answer.
    pub(crate) io: Option<Box<Io>>,
    /// End the connection (after the replies are sent).
    pub(crate) close: Option<CloseRequest>,
}

impl Outcome {
    /// The messages of the replies, in order (for tests and logs).
    #[cfg(test)]
    pub(crate) fn messages(&self) -> Vec<&ServerMessage> {
        self.replies.iter().map(|r| &r.msg).collect()
    }
}
