//! Refusing client input past the intake: the handlers' error replies, noted (counted,
//! logged without flooding) by the intake that refuses frames (docs/protocol.md §7).

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::Session;
use crate::metrics::Refusal;
use crate::protocol::errors as err;
use crate::protocol::ServerMessage;
use crate::sync::admission::{self, Refused};

impl Session {
    /// Refuse a message: count, log (throttled) and answer with the named error,
    /// `details: {code, documentId?}`.
    pub(super) fn refuse(
        &mut self,
        refused: Refused,
        context: &Map<String, Value>,
        now: Instant,
    ) {
        let reply = self.intake.refusal(refused, context, now);
        self.reply(reply);
    }

    /// Refuse with a fixed TS error, bare (no `details`), as TS sends it.
    pub(super) fn refuse_plain(&mut self, reason: Refusal, error: &'static str, now: Instant) {
        let reply = self.intake.plain_refusal(reason, error, now);
        self.reply(reply);
    }

    /// A write naming an invalid field: the TS error `{documentId}`, nothing applied.
    pub(super) fn refuse_invalid_field(&mut self, id: &str, now: Instant) {
        self.intake
            .note_refusal(Refusal::InvalidMessage, now, &err::INVALID_FIELD_NAME);
        self.reply(ServerMessage::error_for_document(
            err::INVALID_FIELD_NAME,
            id,
        ));
    }

    /// The hub refused a write's clock: nothing was applied, nothing is acked.
    pub(super) fn refuse_clock(
        &mut self,
        refusal: admission::ClockRefusal,
        document_id: &str,
        now: Instant,
    ) {
        let context = document_context(document_id);
        self.refuse(refusal.refused(), &context, now);
    }
}

/// `{documentId}`, the context of a document's refusal.
pub(super) fn document_context(id: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("documentId".into(), Value::String(id.to_owned()));
    context
}
