//! Text states: restored from storage, and merged — a client's, a peer's relay or
//! storage's read-back — one at a time per document (its text lane), outside the
//! document lock and on the blocking pool when large, so merges keep their order
//! and readers are served meanwhile.

use std::sync::Arc;

use tokio::time::Instant;

use super::{DocEntry, Hub};
use crate::protocol::ServerMessage;
use crate::storage::{DocumentWrite, PersistTicket, StorageError};
use crate::sync::text::TextState;
use crate::text::{StateJson, TextDoc, TextError};

/// A peer's text state merged within this long of a local one may have raced it
/// to storage (README "Running several instances"): the document is read back.
const CONCURRENT_TEXT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Whose text state a merge brings in.
#[derive(Debug, Clone, Copy)]
enum TextSource {
    /// A client's, at this wall time (ms): stored when it moved our state.
    Client(i64),
    /// A peer instance's relay (the peer stored it).
    Peer,
    /// Storage's, read back by a resynchronisation.
    Storage,
}

/// What became of a client's text state.
#[derive(Debug)]
pub(crate) enum TextOutcome {
    /// Merged: the document's state now, and its persistence.
    Merged {
        json: crate::text::StateJson,
        ticket: PersistTicket,
    },
    /// Refused: nothing applied.
    Refused(crate::text::TextError),
    /// The write queue is full: nothing applied.
    Backlog(PersistTicket),
}

/// Text merges of a state over this many bytes, or into a document of more
/// blocks, run on the blocking pool (they may take more than a millisecond).
const BLOCKING_TEXT_BYTES: usize = 64 * 1024;
const BLOCKING_TEXT_BLOCKS: usize = 2_000;

impl Hub {
    /// A stored text state, parsed on the blocking pool when large.
    pub(super) async fn restore_text(&self, id: &str, json: String, clock: f64) -> TextState {
        let limits = self.settings.text_limits;
        let json = crate::text::StateJson::new(json);
        if json.len() <= BLOCKING_TEXT_BYTES {
            return TextState::restored(json, clock, &limits);
        }
        let shared = json.clone();
        match tokio::task::spawn_blocking(move || TextState::restored(shared, clock, &limits)).await
        {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(document_id = %id, error = %e, "stored text state not parsed: served as stored");
                TextState::opaque(json, clock)
            }
        }
    }

    /// Merge a client's text state into the document and submit the merged state
    /// to storage. Parsing and merging run outside the document lock — on the
    /// blocking pool when large — one merge at a time per document (the text
    /// lane), so merges keep their order and readers are served meanwhile.
    pub(crate) async fn apply_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
        now_ms: i64,
    ) -> TextOutcome {
        if self.storage.is_full() {
            let e = StorageError::BacklogFull(self.storage.backlog());
            return TextOutcome::Backlog(PersistTicket::done(Err(e)));
        }
        match self
            .merge_text(entry, incoming, clock, TextSource::Client(now_ms))
            .await
        {
            Ok((json, ticket, _)) => TextOutcome::Merged {
                json,
                ticket: ticket.unwrap_or_else(|| PersistTicket::done(Ok(()))),
            },
            Err(e) => TextOutcome::Refused(e),
        }
    }

    /// Merge a text state another instance relayed (no persistence: the origin
    /// instance persisted it) and return the merged state.
    pub(crate) async fn merge_remote_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
    ) -> Result<crate::text::StateJson, crate::text::TextError> {
        self.merge_text(entry, incoming, clock, TextSource::Peer)
            .await
            .map(|(json, _, _)| json)
    }

    /// Merge the text state read back from storage (resynchronisation), in the
    /// text lane like any merge: when it changed ours, local subscribers get the
    /// result; when ours holds more than storage (a peer stored its merge over ours,
    /// or ours was never stored), ours is stored — storage must hold every side.
    /// Returns 1 when our text changed.
    pub(crate) async fn merge_stored_text(
        &self,
        entry: &Arc<DocEntry>,
        stored: Option<(String, f64)>,
    ) -> usize {
        match stored {
            Some((json, clock)) => {
                match self
                    .merge_text(entry, json, clock, TextSource::Storage)
                    .await
                {
                    Ok((_, _, changed)) => usize::from(changed),
                    Err(e) => {
                        tracing::warn!(document_id = %entry.id, error = %e, "stored text state not merged");
                        0
                    }
                }
            }
            None => {
                let _lane = entry.text_lane.lock().await;
                let ours = entry
                    .lock()
                    .doc
                    .text
                    .as_ref()
                    .filter(|t| !t.json().is_empty())
                    .map(|t| (t.json_shared(), t.clock()));
                if let Some((json, clock)) = ours {
                    self.store_text_behind(entry, json, clock);
                }
                0
            }
        }
    }

    /// Storage lacks part of the text this instance holds: store ours.
    fn store_text_behind(&self, entry: &DocEntry, state: crate::text::StateJson, clock: f64) {
        tracing::info!(document_id = %entry.id, "stored text lacked edits this instance holds (instances stored over each other): storing the merged text");
        let _ = self.storage.submit(text_write(&entry.id, state, clock));
    }

    /// The text lane: take the parsed document out, merge without the document
    /// lock, put it back and (for a client's state that moved it) submit it to
    /// storage — still in the lane, so storage sees merges in their order.
    /// Returns the state now, the persistence of a client's state, and whether the
    /// merge changed ours.
    async fn merge_text(
        &self,
        entry: &Arc<DocEntry>,
        incoming: String,
        clock: f64,
        source: TextSource,
    ) -> Result<(StateJson, Option<PersistTicket>, bool), TextError> {
        let persist_at = match source {
            TextSource::Client(now_ms) => Some(now_ms),
            TextSource::Peer | TextSource::Storage => None,
        };
        // Only storage's state is checked for what ours holds beyond it (a full
        // parse; the others take the byte-comparing path).
        let reporting = matches!(source, TextSource::Storage);
        let _lane = entry.text_lane.lock().await;
        let doc = {
            let mut st = entry.lock();
            st.doc.text.get_or_insert_with(TextState::empty).take_doc()
        };
        let (doc, result, kept_more) = self.run_merge(entry, doc, incoming, reporting).await;
        let changed = matches!(result, Ok(Some(_)));
        let mut st = entry.lock();
        let text = st.doc.text.get_or_insert_with(TextState::empty);
        let before = text.clock();
        let outcome = result.map(|json| (json, clock));
        let accepted = outcome.as_ref().ok().cloned();
        text.put_back(doc, accepted);
        let (json, text_clock) = (text.json_shared(), text.clock());
        if json.is_empty() {
            st.doc.text = None;
        }
        outcome?;
        match source {
            TextSource::Client(_) => st.last_local_text = Some(Instant::now()),
            TextSource::Peer => {
                if st
                    .last_local_text
                    .is_some_and(|at| at.elapsed() < CONCURRENT_TEXT_WINDOW)
                {
                    // A peer's text right after ours: the two instances may have
                    // stored their merges over each other. Read storage back once
                    // things settle.
                    self.queue_resync(entry, &mut st);
                }
            }
            TextSource::Storage => {
                // Still in the text lane, which orders text writes; the copy of a
                // state that may be tens of megabytes is made outside the lock.
                drop(st);
                self.after_stored_merge(entry, &json, text_clock, changed, kept_more);
                return Ok((json, None, changed));
            }
        }
        let ticket = persist_at.and_then(|now_ms| {
            if !changed && text_clock == before {
                return None;
            }
            st.last_modified_ms = now_ms;
            let write = text_write(&entry.id, json.clone(), text_clock);
            Some(self.storage.submit(write))
        });
        Ok((json, ticket, changed))
    }

    /// One merge, outside the document lock: on the blocking pool when the state or
    /// the document is large (it may take more than a millisecond), inline
    /// otherwise. Returns the document to put back, the merge's result and whether
    /// ours holds more than `incoming` (only when `reporting`).
    async fn run_merge(
        &self,
        entry: &DocEntry,
        doc: Option<TextDoc>,
        incoming: String,
        reporting: bool,
    ) -> (Option<TextDoc>, Result<Option<StateJson>, TextError>, bool) {
        let limits = self.settings.text_limits;
        let large = incoming.len() > BLOCKING_TEXT_BYTES
            || doc
                .as_ref()
                .is_some_and(|d| d.block_count() > BLOCKING_TEXT_BLOCKS);
        if !large {
            return crate::sync::text::merge_reporting(doc, &incoming, &limits, reporting);
        }
        let fallback = entry.lock().doc.text.as_ref().map(TextState::json_shared);
        let work = move || crate::sync::text::merge_reporting(doc, &incoming, &limits, reporting);
        match tokio::task::spawn_blocking(work).await {
            Ok(merged) => merged,
            // The engine does not panic; if it ever did, rebuild the document
            // from its last state rather than lose it.
            Err(e) => {
                tracing::error!(document_id = %entry.id, error = %e, "text merge failed");
                let rebuilt = fallback
                    .filter(|j| !j.is_empty())
                    .map(|j| TextState::restored(j, 0.0, &limits).take_doc());
                let e = TextError::Malformed("internal error".into());
                (rebuilt.flatten(), Err(e), false)
            }
        }
    }

    /// After merging storage's text state (still in the text lane, which orders
    /// text writes; outside the document lock, since the copy of a state that may
    /// be tens of megabytes is made here): store ours when it held more than
    /// storage, and give local subscribers the result when it changed ours.
    fn after_stored_merge(
        &self,
        entry: &DocEntry,
        json: &StateJson,
        text_clock: f64,
        changed: bool,
        kept_more: bool,
    ) {
        if kept_more {
            self.store_text_behind(entry, json.clone(), text_clock);
        }
        if changed {
            // The SDK shape of a text relay: a whole-state `text-state` op.
            let msg = ServerMessage::DeltaBatch {
                document_id: entry.id.to_string(),
                deltas: vec![serde_json::json!({
                    "type": "text-state",
                    "documentId": &*entry.id,
                    "state": &**json,
                    "timestamp": text_clock,
                    "clientId": "storage",
                })],
                is_text_operation: true,
            };
            self.send_to_subscribers(entry, &msg, false, None);
        }
    }
}

/// A write of a document's whole text state and nothing else: a client's merge
/// that moved it, or ours when storage lacked part of it.
fn text_write(id: &Arc<str>, state: StateJson, clock: f64) -> DocumentWrite {
    DocumentWrite {
        document_id: id.clone(),
        changes: Vec::new(),
        clock: Vec::new(),
        text: Some((state, clock)),
    }
}
