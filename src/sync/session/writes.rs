//! Writes: `delta` and `delta_batch` (fields, text states, relayed ops) and their
//! acks, queued until durable in arrival order (docs/protocol.md §7.11).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::refusals::document_context;
use super::{Broadcast, Done, Io, Pending, Session, MAX_FIELD_NAME_LEN, MAX_WRITER_ID_LEN};
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::message::{is_tombstone, tombstone, DeltaBatchMessage, DeltaMessage};
use crate::protocol::ServerMessage;
use crate::storage::{PersistTicket, StorageError};
use crate::sync::admission::{self, Refused};
use crate::sync::hub::{Changes, DocEntry, FieldWrite, TextOutcome};

/// A `delta` waiting for its document.
#[derive(Debug)]
pub(super) struct PendingDelta {
    id: String,
    entries: Map<String, Value>,
    vector_clock: Option<Map<String, Value>>,
    client_id: Option<String>,
    message_id: Option<String>,
}

/// A `delta_batch` past its checks, through its steps: its document and every text
/// state's target loaded (in order), its fields applied, its text states merged one
/// at a time, its ops relayed, its ack queued.
#[derive(Debug)]
pub(super) struct PendingBatch {
    id: String,
    message_id: Option<String>,
    ops: BatchOps,
    /// The text states' target documents, in the order of `ops.text_states`.
    target_ids: Vec<String>,
    /// The batch's document, once live.
    entry: Option<Arc<DocEntry>>,
    /// The targets loaded so far.
    targets: Vec<Arc<DocEntry>>,
    /// Text states still to merge, with their targets.
    merges: VecDeque<(Map<String, Value>, Arc<DocEntry>)>,
    /// The text state being merged (its `state` taken out), with its target.
    merging: Option<(Map<String, Value>, Arc<DocEntry>)>,
    tickets: Vec<PersistTicket>,
    /// A text state was refused: the batch is not acked.
    text_refused: bool,
    now_ms: i64,
}

impl Session {
    pub(super) fn writer_for(&self, client_id: Option<&str>) -> String {
        match client_id {
            Some(c) if !c.is_empty() && c.len() <= MAX_WRITER_ID_LEN => c.to_owned(),
            _ => self.writer_id.clone(),
        }
    }

    /// Queue the ack of a write for when it is durable, behind the acks of every
    /// earlier write. A write the full queue refused (nothing applied) is answered
    /// at once, like every refusal (docs/protocol.md §7.11).
    pub(super) fn ack_when_durable(
        &mut self,
        tickets: Vec<PersistTicket>,
        message_id: String,
        document_id: String,
        failure: &'static str,
    ) {
        // Refused outright only when every ticket was decided at submission: a
        // batch partly queued is answered when the rest is decided, in its place.
        let decided: Option<Vec<Result<(), StorageError>>> =
            tickets.iter().map(PersistTicket::ready).collect();
        if let Some(Err(e @ StorageError::BacklogFull(_))) =
            decided.and_then(|outcomes| outcomes.into_iter().find(Result::is_err))
        {
            self.reply(ack_reply(Err(e), message_id, &document_id, failure));
            return;
        }
        self.acks.push(tickets, move |outcome| {
            ack_reply(outcome, message_id, &document_id, failure)
        });
    }

    pub(super) fn on_delta(&mut self, delta: DeltaMessage, now: Instant) {
        let DeltaMessage {
            document_id,
            entries,
            vector_clock,
            client_id,
            message_id,
        } = delta;
        let Some(entries) = entries else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA, now);
            return;
        };
        let Some(id) = self.admit(document_id.as_deref(), true, now) else {
            return;
        };
        if entries.keys().any(|f| !valid_field_name(f)) {
            self.refuse_invalid_field(&id, now);
            return;
        }
        let delta = PendingDelta {
            id: id.clone(),
            entries,
            vector_clock,
            client_id,
            message_id,
        };
        self.with_document(id, Pending::Delta(delta), now);
    }

    /// A `delta` whose document is live: joined, applied, its ack queued.
    pub(super) fn delta_opened(
        &mut self,
        delta: PendingDelta,
        opened: Result<Arc<DocEntry>, StorageError>,
        now: Instant,
    ) {
        let PendingDelta {
            id,
            entries,
            vector_clock,
            client_id,
            message_id,
        } = delta;
        let Some(entry) = self.opened(opened, &id, err::DELTA_FAILED) else {
            return;
        };
        self.join(&entry);
        let writer = self.writer_for(client_id.as_deref());
        let fields = entries
            .into_iter()
            .map(|(field, value)| FieldWrite {
                field,
                value,
                writer: writer.clone(),
            })
            .collect();
        let clocks: Vec<&Map<String, Value>> = vector_clock.iter().collect();
        let now_ms = self.svc.now_ms();
        let Some(ticket) = self.apply_fields(&entry, fields, clocks, now_ms, &id, now) else {
            return;
        };
        let message_id = message_id.unwrap_or_else(|| next_message_id(now_ms));
        self.ack_when_durable(vec![ticket], message_id, id, err::DELTA_FAILED);
    }

    /// A `delta_batch`: every op is sorted and checked and every text state's
    /// target admitted before anything is loaded; then the documents are loaded
    /// and only then is anything applied (fields, then text states), relayed, and
    /// acked when durable. A refused batch leaves nothing applied.
    pub(super) fn on_delta_batch(&mut self, batch: DeltaBatchMessage, now: Instant) {
        let DeltaBatchMessage {
            document_id,
            deltas,
            message_id,
        } = batch;
        let Some(ops) = deltas else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH, now);
            return;
        };
        let Some(id) = self.admit(document_id.as_deref(), true, now) else {
            return;
        };
        let Some(ops) = self.sort_batch_ops(ops, &id, now) else {
            return;
        };
        if self.refuse_excess_text_states(ops.text_states.len(), &id, now) {
            return;
        }
        let Some(target_ids) = self.admit_text_targets(&ops.text_states, &id, now) else {
            return;
        };
        let batch = PendingBatch {
            id,
            message_id,
            ops,
            target_ids,
            entry: None,
            targets: Vec::new(),
            merges: VecDeque::new(),
            merging: None,
            tickets: Vec::new(),
            text_refused: false,
            now_ms: self.svc.now_ms(),
        };
        self.load_batch(Box::new(batch), now);
    }

    /// A batch's next step, given the answer to the I/O it asked for.
    pub(super) fn batch_resumed(&mut self, mut batch: Box<PendingBatch>, done: Done, now: Instant) {
        match done {
            Done::Opened(opened) => {
                let id = batch.next_to_load().unwrap_or_default().to_owned();
                let Some(entry) = self.opened(opened, &id, err::DELTA_BATCH_FAILED) else {
                    return;
                };
                self.loaded(&mut batch, entry);
                self.load_batch(batch, now);
            }
            Done::TextMerged(merged) => self.text_merged(batch, merged, now),
            other => {
                self.internal_error("a delta_batch resumed with an answer it did not ask for", &other);
            }
        }
    }

    /// Load the batch's documents (its own, then each text state's target) without
    /// waiting for those already live, then apply it.
    fn load_batch(&mut self, mut batch: Box<PendingBatch>, now: Instant) {
        while let Some(id) = batch.next_to_load() {
            match self.svc.hub.open_live(id) {
                Some(entry) => self.loaded(&mut batch, entry),
                None => {
                    let id = id.to_owned();
                    self.wait(Io::Open(id), Pending::Batch(batch));
                    return;
                }
            }
        }
        self.apply_batch(batch, now);
    }

    /// A batch's document loaded: its own is joined (writes auto-subscribe).
    fn loaded(&mut self, batch: &mut PendingBatch, entry: Arc<DocEntry>) {
        if batch.entry.is_none() {
            self.join(&entry);
            batch.entry = Some(entry);
        } else {
            batch.targets.push(entry);
        }
    }

    /// Every document live: apply the fields, then merge the text states.
    fn apply_batch(&mut self, mut batch: Box<PendingBatch>, now: Instant) {
        let Some(entry) = batch.entry.clone() else {
            return;
        };
        let fields = std::mem::take(&mut batch.ops.fields);
        let clocks = std::mem::take(&mut batch.ops.clocks);
        let Some(ticket) =
            self.apply_fields(&entry, fields, clocks.iter().collect(), batch.now_ms, &batch.id, now)
        else {
            return;
        };
        batch.tickets.push(ticket);
        let text_states = std::mem::take(&mut batch.ops.text_states);
        let targets = std::mem::take(&mut batch.targets);
        batch.merges = text_states.into_iter().zip(targets).collect();
        self.next_merge(batch);
    }

    /// Ask for the next text state's merge; when none is left, relay the batch's
    /// other ops and queue its ack.
    fn next_merge(&mut self, mut batch: Box<PendingBatch>) {
        if let Some((mut op, target)) = batch.merges.pop_front() {
            // Taken out of the op (no copy): it may be tens of megabytes.
            let state = match op.remove("state") {
                Some(Value::String(state)) => state,
                _ => String::new(),
            };
            let clock = op
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(batch.now_ms as f64);
            let io = Io::MergeText {
                target: target.clone(),
                state,
                clock,
                now_ms: batch.now_ms,
            };
            batch.merging = Some((op, target));
            self.wait(io, Pending::Batch(batch));
            return;
        }
        let Some(entry) = batch.entry.clone() else {
            return;
        };
        let positional_text = std::mem::take(&mut batch.ops.positional_text);
        if !positional_text.is_empty() {
            self.relay_ops(&entry, positional_text, true);
        }
        let crdt = std::mem::take(&mut batch.ops.crdt);
        if self.svc.settings.relay_crdt_ops && !crdt.is_empty() {
            self.relay_ops(&entry, crdt, false);
        }
        if batch.text_refused {
            return;
        }
        let PendingBatch {
            id,
            message_id,
            tickets,
            now_ms,
            ..
        } = *batch;
        let message_id = message_id.unwrap_or_else(|| next_message_id(now_ms));
        self.ack_when_durable(tickets, message_id, id, err::DELTA_BATCH_FAILED);
    }

    /// One text state merged (or refused: answered here, nothing applied or
    /// relayed), then relayed carrying the merged state; then the next.
    fn text_merged(&mut self, mut batch: Box<PendingBatch>, merged: TextOutcome, now: Instant) {
        let Some((mut op, target)) = batch.merging.take() else {
            return;
        };
        match merged {
            TextOutcome::Merged { json, ticket } => {
                batch.tickets.push(ticket);
                op.insert("state".into(), Value::String(json.to_string()));
                if !op.get("clientId").is_some_and(Value::is_string) {
                    op.insert(
                        "clientId".into(),
                        Value::String(format!("conn-{}", self.peer.conn_id)),
                    );
                }
                self.relay_ops(&target, vec![Value::Object(op)], true);
            }
            TextOutcome::Backlog(ticket) => batch.tickets.push(ticket),
            TextOutcome::Refused(e) => {
                let context = document_context(&target.id);
                self.refuse(admission::Refused::text(&e), &context, now);
                batch.text_refused = true;
            }
        }
        self.next_merge(batch);
    }

    /// Apply one message's field writes (`delta` and `delta_batch` alike). A refused
    /// clock is answered here, nothing applied, and gives `None`.
    fn apply_fields(
        &mut self,
        entry: &Arc<DocEntry>,
        fields: Vec<FieldWrite>,
        clocks: Vec<&Map<String, Value>>,
        now_ms: i64,
        id: &str,
        now: Instant,
    ) -> Option<PersistTicket> {
        let applied = self.svc.hub.apply(
            entry,
            Changes {
                fields,
                clocks,
                origin: Some(self.peer.conn_id),
            },
            now_ms,
        );
        if let Some(refusal) = applied.refused {
            self.refuse_clock(refusal, id, now);
            return None;
        }
        if applied.crowded {
            // Whether or not this connection subscribes to the document (a
            // write-only client does not).
            self.peer.ask_to_pace();
        }
        Some(applied.ticket)
    }

    /// Sort a batch's ops by what becomes of them, taking them apart (nothing is
    /// copied). Every op is checked before anything is applied: one bad op (not an
    /// object, an invalid field name) refuses the whole batch — answered here, and
    /// `None`.
    fn sort_batch_ops(&mut self, ops: Vec<Value>, id: &str, now: Instant) -> Option<BatchOps> {
        let mut sorted = BatchOps::default();
        for op in ops {
            let Value::Object(mut op) = op else {
                self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH, now);
                return None;
            };
            let op_type = op.get("type").and_then(Value::as_str);
            let is_delete = op_type == Some("delete");
            let is_text_state = op_type == Some("text-state")
                && op.get("state").is_some_and(Value::is_string);
            if is_text_state {
                sorted.text_states.push(op);
            } else if op_type == Some("text") {
                sorted.positional_text.push(Value::Object(op));
            } else if let Some(Value::String(field)) = op.get("field") {
                if !valid_field_name(field) {
                    self.refuse_invalid_field(id, now);
                    return None;
                }
                sorted.fields.push(self.field_write(&mut op, is_delete));
                if let Some(Value::Object(clock)) = op.remove("clock") {
                    sorted.clocks.push(clock);
                }
            } else {
                sorted.crdt.push(Value::Object(op));
            }
        }
        Some(sorted)
    }

    /// A batch's field op (its `field` a valid name) as a write, its value taken out:
    /// a `delete` op, or a tombstone value, deletes.
    #[inline]
    fn field_write(&self, op: &mut Map<String, Value>, is_delete: bool) -> FieldWrite {
        let raw = op.remove("value").unwrap_or(Value::Null);
        let value = if is_delete || is_tombstone(&raw) {
            tombstone()
        } else {
            raw
        };
        let writer = self.writer_for(op.get("clientId").and_then(Value::as_str));
        let field = match op.remove("field") {
            Some(Value::String(field)) => field,
            _ => String::new(),
        };
        FieldWrite {
            field,
            value,
            writer,
        }
    }

    /// More text states than a batch may carry refuse it whole (answered here):
    /// each is a merge that may take milliseconds. Returns whether it was refused.
    fn refuse_excess_text_states(&mut self, count: usize, id: &str, now: Instant) -> bool {
        let max_text_ops = self.svc.settings.limits.max_text_ops_per_batch;
        if count <= max_text_ops {
            return false;
        }
        let refused = Refused::new(
            Refusal::InvalidMessage,
            err::too_many_text_ops(count, max_text_ops),
            err::CODE_INVALID_MESSAGE,
        );
        self.refuse(refused, &document_context(id), now);
        true
    }

    /// Text states go to their target document (the op's own documentId, which
    /// needs write permission too): all admitted before any is loaded or applied,
    /// so a refused target leaves the whole batch unapplied (`None`).
    fn admit_text_targets(
        &mut self,
        text_states: &[Map<String, Value>],
        id: &str,
        now: Instant,
    ) -> Option<Vec<String>> {
        let mut targets = Vec::with_capacity(text_states.len());
        for op in text_states {
            let target = match op.get("documentId").and_then(Value::as_str) {
                Some(t) if t != id => self.admit(Some(t), true, now)?,
                _ => id.to_string(),
            };
            targets.push(target);
        }
        Some(targets)
    }

    /// Send ops to the document's other subscribers at once and publish them to the
    /// other instances (text ops always; CRDT ops only reach here when relaying them
    /// is enabled).
    pub(super) fn relay_ops(&mut self, entry: &Arc<DocEntry>, ops: Vec<Value>, is_text: bool) {
        let msg = ServerMessage::DeltaBatch {
            document_id: entry.id.to_string(),
            deltas: ops,
            is_text_operation: is_text,
        };
        self.out().broadcasts.push(Broadcast::Ops {
            entry: entry.clone(),
            msg,
        });
    }
}

impl PendingBatch {
    /// The next document to load: the batch's own, then each target in turn.
    fn next_to_load(&self) -> Option<&str> {
        if self.entry.is_none() {
            return Some(&self.id);
        }
        self.target_ids.get(self.targets.len()).map(String::as_str)
    }
}

/// A `delta_batch`'s ops sorted by what becomes of them, taken out of the batch.
#[derive(Debug, Default)]
struct BatchOps {
    fields: Vec<FieldWrite>,
    clocks: Vec<Map<String, Value>>,
    /// `text-state` ops: merged into their target document, then relayed.
    text_states: Vec<Map<String, Value>>,
    /// Positional `text` ops: relayed as they came.
    positional_text: Vec<Value>,
    /// Other CRDT ops: relayed only when relaying them is enabled.
    crdt: Vec<Value>,
}

/// The reply for a write: `ack` when durable, else the TS error for its kind.
fn ack_reply(
    outcome: Result<(), StorageError>,
    message_id: String,
    document_id: &str,
    failure: &str,
) -> ServerMessage {
    match outcome {
        Ok(()) => ServerMessage::Ack { message_id },
        Err(StorageError::BacklogFull(n)) => {
            tracing::warn!(document_id = %document_id, backlog = n, "write refused: persistence backlog full");
            ServerMessage::error(
                err::WRITE_BACKLOG_FULL,
                Some(
                    serde_json::json!({"code": err::CODE_BACKLOG_FULL, "documentId": document_id}),
                ),
            )
        }
        Err(e) => {
            tracing::error!(document_id = %document_id, error = %e, "write not persisted");
            ServerMessage::error_for_document(failure, document_id)
        }
    }
}

fn valid_field_name(field: &str) -> bool {
    !field.is_empty() && field.len() <= MAX_FIELD_NAME_LEN && !field.contains('\0')
}
