//! Writes: `delta` and `delta_batch` (fields, text states, relayed ops) and their
//! acks, queued until durable in arrival order (docs/protocol.md §7.11).

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

    pub(super) async fn on_delta(&mut self, delta: DeltaMessage) {
        let DeltaMessage {
            document_id,
            entries,
            vector_clock,
            client_id,
            message_id,
        } = delta;
        let Some(entries) = entries else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA)
                .await;
            return;
        };
        let Some(id) = self.admit(document_id.as_deref(), true).await else {
            return;
        };
        if entries.keys().any(|f| !valid_field_name(f)) {
            self.refuse_invalid_field(&id).await;
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
        let applied = self.svc.hub.apply(
            &entry,
            Changes {
                fields,
                clocks,
                origin: Some(self.peer.conn_id),
            },
            self.svc.now_ms(),
        );
        if let Some(refusal) = applied.refused {
            self.refuse_clock(refusal, &id).await;
            return;
        }
        let message_id = message_id.unwrap_or_else(|| next_message_id(self.svc.now_ms()));
        self.ack_when_durable(vec![applied.ticket], message_id, id, err::DELTA_FAILED)
            .await;
    }

    pub(super) async fn on_delta_batch(&mut self, batch: DeltaBatchMessage) {
        let DeltaBatchMessage {
            document_id,
            deltas,
            message_id,
        } = batch;
        let Some(ops) = deltas else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH)
                .await;
            return;
        };
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), true, err::DELTA_BATCH_FAILED)
            .await
        else {
            return;
        };
        let id = entry.id.to_string();
        let now = self.svc.now_ms();
        let mut fields = Vec::new();
        let mut clocks = Vec::new();
        let mut text_ops: Vec<Map<String, Value>> = Vec::new();
        let mut positional_text: Vec<Value> = Vec::new();
        let mut crdt_ops: Vec<Value> = Vec::new();
        // Every op is checked before anything is applied: one bad op (not an object,
        // an invalid field name, a text state for a document it may not write, more
        // text states than allowed) refuses the whole batch.
        for op in &ops {
            let Value::Object(op) = op else {
                self.refuse_plain(Refusal::InvalidMessage, err::INVALID_DELTA_BATCH)
                    .await;
                return;
            };
            let op_type = op.get("type").and_then(Value::as_str);
            match (op_type, op.get("field")) {
                (Some("text-state"), _) if op.get("state").is_some_and(Value::is_string) => {
                    text_ops.push(op.clone())
                }
                (Some("text"), _) => positional_text.push(Value::Object(op.clone())),
                (_, Some(Value::String(field))) => {
                    if !valid_field_name(field) {
                        self.refuse_invalid_field(&id).await;
                        return;
                    }
                    let raw = op.get("value").cloned().unwrap_or(Value::Null);
                    let value = if op_type == Some("delete") || is_tombstone(&raw) {
                        tombstone()
                    } else {
                        raw
                    };
                    let writer = self.writer_for(op.get("clientId").and_then(Value::as_str));
                    fields.push(FieldWrite {
                        field: field.clone(),
                        value,
                        writer,
                    });
                    if let Some(Value::Object(clock)) = op.get("clock") {
                        clocks.push(clock);
                    }
                }
                _ => crdt_ops.push(Value::Object(op.clone())),
            }
        }
        let max_text_ops = self.svc.settings.limits.max_text_ops_per_batch;
        if text_ops.len() > max_text_ops {
            let refused = Refused::new(
                Refusal::InvalidMessage,
                err::too_many_text_ops(text_ops.len(), max_text_ops),
                err::CODE_INVALID_MESSAGE,
            );
            self.refuse(refused, &document_context(&id), Instant::now())
                .await;
            return;
        }
        // Text states go to their target document (the op's own documentId, which
        // needs write permission too): all admitted and loaded before any applies.
        let mut text_targets = Vec::with_capacity(text_ops.len());
        for op in &text_ops {
            let target = match op.get("documentId").and_then(Value::as_str) {
                Some(t) if t != &*id => match self.admit(Some(t), true).await {
                    Some(t) => t,
                    None => return,
                },
                _ => id.to_string(),
            };
            let Some(target_entry) = self.open(&target, err::DELTA_BATCH_FAILED).await else {
                return;
            };
            text_targets.push(target_entry);
        }
        let mut tickets = Vec::new();
        let applied = self.svc.hub.apply(
            &entry,
            Changes {
                fields,
                clocks,
                origin: Some(self.peer.conn_id),
            },
            now,
        );
        if let Some(refusal) = applied.refused {
            self.refuse_clock(refusal, &id).await;
            return;
        }
        tickets.push(applied.ticket);
        // Text states, each merged into its target and relayed to the others.
        let mut text_refused = false;
        for (mut op, target_entry) in text_ops.into_iter().zip(text_targets) {
            let target = target_entry.id.to_string();
            // Taken out of the op (no copy): it may be tens of megabytes.
            let state = match op.remove("state") {
                Some(Value::String(state)) => state,
                _ => String::new(),
            };
            let clock = op
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(now as f64);
            match self
                .svc
                .hub
                .apply_text(&target_entry, state, clock, now)
                .await
            {
                TextOutcome::Merged { json, ticket } => {
                    tickets.push(ticket);
                    op.insert("state".into(), Value::String(json.to_string()));
                }
                TextOutcome::Backlog(ticket) => {
                    tickets.push(ticket);
                    continue;
                }
                TextOutcome::Refused(e) => {
                    // Nothing applied or relayed; the message is not acked.
                    text_refused = true;
                    let mut context = Map::new();
                    context.insert("documentId".into(), Value::String(target.to_string()));
                    self.refuse(admission::Refused::text(&e), &context, Instant::now())
                        .await;
                    continue;
                }
            }
            if !op.get("clientId").is_some_and(Value::is_string) {
                op.insert(
                    "clientId".into(),
                    Value::String(format!("conn-{}", self.peer.conn_id)),
                );
            }
            self.relay_ops(&target_entry, vec![Value::Object(op)], true);
        }
        if !positional_text.is_empty() {
            self.relay_ops(&entry, positional_text, true);
        }
        if self.svc.settings.relay_crdt_ops && !crdt_ops.is_empty() {
            self.relay_ops(&entry, crdt_ops, false);
        }
        if text_refused {
            return;
        }
        let message_id = message_id.unwrap_or_else(|| next_message_id(now));
        self.ack_when_durable(tickets, message_id, id.to_string(), err::DELTA_BATCH_FAILED)
            .await;
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
