//! Writes: `delta` and `delta_batch` (fields, text states, relayed ops) and their
//! acks, queued until durable in arrival order (docs/protocol.md §7.11).

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::refusals::document_context;
use super::{Session, MAX_FIELD_NAME_LEN, MAX_WRITER_ID_LEN};
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::message::{is_tombstone, tombstone, DeltaBatchMessage, DeltaMessage};
use crate::protocol::ServerMessage;
use crate::storage::{PersistTicket, StorageError};
use crate::sync::admission::{self, Refused};
use crate::sync::hub::{Changes, DocEntry, FieldWrite, TextOutcome};

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
    pub(super) async fn ack_when_durable(
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
            self.reply(&ack_reply(Err(e), message_id, &document_id, failure))
                .await;
            return;
        }
        self.acks.push(tickets, move |outcome| {
            ack_reply(outcome, message_id, &document_id, failure)
        });
    }

    pub(super) async fn on_delta(&mut self, delta: DeltaMessage, now: Instant) {
        let DeltaMessage {
            document_id,
            entries,
            vector_clock,
            client_id,
            message_id,
        } = delta;
        let Some(entries) = entries else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA, now)
                .await;
            return;
        };
        let Some(id) = self.admit(document_id.as_deref(), true, now).await else {
            return;
        };
        if entries.keys().any(|f| !valid_field_name(f)) {
            self.refuse_invalid_field(&id, now).await;
            return;
        }
        let Some(entry) = self.open(&id, err::DELTA_FAILED).await else {
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
        let Some(ticket) = self
            .apply_fields(&entry, fields, clocks, now_ms, &id, now)
            .await
        else {
            return;
        };
        let message_id = message_id.unwrap_or_else(|| next_message_id(self.svc.now_ms()));
        self.ack_when_durable(vec![ticket], message_id, id, err::DELTA_FAILED)
            .await;
    }

    /// A `delta_batch`, in the steps below: every op is sorted and checked, every
    /// text state's target admitted and loaded, and only then is anything applied
    /// (fields, then text states), relayed, and acked when durable.
    pub(super) async fn on_delta_batch(&mut self, batch: DeltaBatchMessage, now: Instant) {
        let DeltaBatchMessage {
            document_id,
            deltas,
            message_id,
        } = batch;
        let Some(ops) = deltas else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH, now)
                .await;
            return;
        };
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), true, err::DELTA_BATCH_FAILED, now)
            .await
        else {
            return;
        };
        let id = entry.id.to_string();
        let now_ms = self.svc.now_ms();
        let Some(sorted) = self.sort_batch_ops(&ops, &id, now).await else {
            return;
        };
        if self
            .refuse_excess_text_states(sorted.text_states.len(), &id, now)
            .await
        {
            return;
        }
        let Some(text_targets) = self.open_text_targets(&sorted.text_states, &id, now).await else {
            return;
        };
        let BatchOps {
            fields,
            clocks,
            text_states,
            positional_text,
            crdt,
        } = sorted;
        let Some(ticket) = self
            .apply_fields(&entry, fields, clocks, now_ms, &id, now)
            .await
        else {
            return;
        };
        let mut tickets = Vec::with_capacity(1 + text_states.len());
        tickets.push(ticket);
        let text_refused = self
            .merge_text_states(text_states, text_targets, now_ms, &mut tickets, now)
            .await;
        if !positional_text.is_empty() {
            self.relay_ops(&entry, positional_text, true);
        }
        if self.svc.settings.relay_crdt_ops && !crdt.is_empty() {
            self.relay_ops(&entry, crdt, false);
        }
        if text_refused {
            return;
        }
        let message_id = message_id.unwrap_or_else(|| next_message_id(now_ms));
        self.ack_when_durable(tickets, message_id, id, err::DELTA_BATCH_FAILED)
            .await;
    }

    /// Apply one message's field writes (`delta` and `delta_batch` alike). A refused
    /// clock is answered here, nothing applied, and gives `None`.
    async fn apply_fields(
        &self,
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
            self.refuse_clock(refusal, id, now).await;
            return None;
        }
        Some(applied.ticket)
    }

    /// Sort a batch's ops by what becomes of them. Every op is checked before
    /// anything is applied: one bad op (not an object, an invalid field name)
    /// refuses the whole batch — answered here, and `None`.
    async fn sort_batch_ops<'a>(
        &self,
        ops: &'a [Value],
        id: &str,
        now: Instant,
    ) -> Option<BatchOps<'a>> {
        let mut sorted = BatchOps::default();
        for op in ops {
            let Value::Object(op) = op else {
                self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH, now)
                    .await;
                return None;
            };
            let op_type = op.get("type").and_then(Value::as_str);
            match (op_type, op.get("field")) {
                (Some("text-state"), _) if op.get("state").is_some_and(Value::is_string) => {
                    sorted.text_states.push(op.clone())
                }
                (Some("text"), _) => sorted.positional_text.push(Value::Object(op.clone())),
                (_, Some(Value::String(field))) => {
                    if !valid_field_name(field) {
                        self.refuse_invalid_field(id, now).await;
                        return None;
                    }
                    sorted.fields.push(self.field_write(op, op_type, field));
                    if let Some(Value::Object(clock)) = op.get("clock") {
                        sorted.clocks.push(clock);
                    }
                }
                _ => sorted.crdt.push(Value::Object(op.clone())),
            }
        }
        Some(sorted)
    }

    /// A batch's field op as a write: a `delete` op, or a tombstone value, deletes.
    #[inline]
    fn field_write(
        &self,
        op: &Map<String, Value>,
        op_type: Option<&str>,
        field: &str,
    ) -> FieldWrite {
        let raw = op.get("value").cloned().unwrap_or(Value::Null);
        let value = if op_type == Some("delete") || is_tombstone(&raw) {
            tombstone()
        } else {
            raw
        };
        let writer = self.writer_for(op.get("clientId").and_then(Value::as_str));
        FieldWrite {
            field: field.to_owned(),
            value,
            writer,
        }
    }

    /// More text states than a batch may carry refuse it whole (answered here):
    /// each is a merge that may take milliseconds. Returns whether it was refused.
    async fn refuse_excess_text_states(&self, count: usize, id: &str, now: Instant) -> bool {
        let max_text_ops = self.svc.settings.limits.max_text_ops_per_batch;
        if count <= max_text_ops {
            return false;
        }
        let refused = Refused::new(
            Refusal::InvalidMessage,
            err::too_many_text_ops(count, max_text_ops),
            err::CODE_INVALID_MESSAGE,
        );
        self.refuse(refused, &document_context(id), now).await;
        true
    }

    /// Text states go to their target document (the op's own documentId, which
    /// needs write permission too): all admitted and loaded before any applies, so
    /// a refused target leaves the whole batch unapplied (`None`).
    async fn open_text_targets(
        &self,
        text_states: &[Map<String, Value>],
        id: &str,
        now: Instant,
    ) -> Option<Vec<Arc<DocEntry>>> {
        let mut targets = Vec::with_capacity(text_states.len());
        for op in text_states {
            let target = match op.get("documentId").and_then(Value::as_str) {
                Some(t) if t != id => self.admit(Some(t), true, now).await?,
                _ => id.to_string(),
            };
            targets.push(self.open(&target, err::DELTA_BATCH_FAILED).await?);
        }
        Some(targets)
    }

    /// Text states, each merged into its target and relayed to the others; their
    /// persistence joins `tickets`. Returns whether one was refused: the batch is
    /// then not acked.
    async fn merge_text_states(
        &self,
        text_states: Vec<Map<String, Value>>,
        targets: Vec<Arc<DocEntry>>,
        now_ms: i64,
        tickets: &mut Vec<PersistTicket>,
        now: Instant,
    ) -> bool {
        let mut refused = false;
        for (op, target) in text_states.into_iter().zip(targets) {
            refused |= !self
                .merge_text_state(op, &target, now_ms, tickets, now)
                .await;
        }
        refused
    }

    /// One text state: merged, then relayed carrying the merged state. Returns
    /// false when it was refused (answered here; nothing applied or relayed).
    async fn merge_text_state(
        &self,
        mut op: Map<String, Value>,
        target: &Arc<DocEntry>,
        now_ms: i64,
        tickets: &mut Vec<PersistTicket>,
        now: Instant,
    ) -> bool {
        // Taken out of the op (no copy): it may be tens of megabytes.
        let state = match op.remove("state") {
            Some(Value::String(state)) => state,
            _ => String::new(),
        };
        let clock = op
            .get("timestamp")
            .and_then(Value::as_f64)
            .unwrap_or(now_ms as f64);
        match self.svc.hub.apply_text(target, state, clock, now_ms).await {
            TextOutcome::Merged { json, ticket } => {
                tickets.push(ticket);
                op.insert("state".into(), Value::String(json.to_string()));
            }
            TextOutcome::Backlog(ticket) => {
                tickets.push(ticket);
                return true;
            }
            TextOutcome::Refused(e) => {
                let context = document_context(&target.id);
                self.refuse(admission::Refused::text(&e), &context, now)
                    .await;
                return false;
            }
        }
        if !op.get("clientId").is_some_and(Value::is_string) {
            op.insert(
                "clientId".into(),
                Value::String(format!("conn-{}", self.peer.conn_id)),
            );
        }
        self.relay_ops(target, vec![Value::Object(op)], true);
        true
    }

    /// Send ops to the document's other subscribers at once and publish them to the
    /// other instances (text ops always; CRDT ops only reach here when relaying them
    /// is enabled).
    pub(super) fn relay_ops(&self, entry: &DocEntry, ops: Vec<Value>, is_text: bool) {
        let msg = ServerMessage::DeltaBatch {
            document_id: entry.id.to_string(),
            deltas: ops,
            is_text_operation: is_text,
        };
        self.svc
            .hub
            .send_to_subscribers(entry, &msg, false, Some(self.peer.conn_id));
        crate::sync::relay::publish_op_relay(&self.svc.hub, &entry.id, &msg);
    }
}

/// A `delta_batch`'s ops sorted by what becomes of them. The clocks are borrowed
/// from the batch; the ops that are relayed are copied (they outlive it).
#[derive(Default)]
struct BatchOps<'a> {
    fields: Vec<FieldWrite>,
    clocks: Vec<&'a Map<String, Value>>,
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
