//! Refusing client input: counting and throttled logging of each refusal, the error
//! replies of every refusal kind, and the rate limit's reply (docs/protocol.md §7).

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{CloseRequest, Session};
use crate::metrics::Refusal;
use crate::protocol::errors as err;
use crate::protocol::ServerMessage;
use crate::sync::admission::{self, Refused};

impl Session {
    /// Count a refusal and log it, at most once per reason per log interval.
    pub(super) fn note_refusal(
        &self,
        reason: Refusal,
        now: Instant,
        detail: &dyn std::fmt::Display,
    ) {
        self.svc.metrics.refused(reason);
        let due = self
            .refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(reason, now);
        if let Some(suppressed) = due {
            tracing::warn!(
                conn_id = self.peer.conn_id,
                ip = %self.ip,
                reason = reason.label(),
                suppressed,
                detail = %detail,
                "[SECURITY] client input refused"
            );
        }
    }

    /// A message over its size limit: refused before anything reads it further.
    pub(super) async fn too_large(
        &mut self,
        payload_len: usize,
        limit: usize,
        now: Instant,
    ) -> Result<(), CloseRequest> {
        if !self.rate.allow(now) {
            self.rate_limited(now).await;
            return Ok(());
        }
        let refused = Refused {
            reason: Refusal::TooLarge,
            error: err::message_too_large(payload_len, limit),
            code: err::CODE_INVALID_MESSAGE,
        };
        // The TS reply carries no document id.
        self.refuse(refused, &Map::new(), now).await;
        Ok(())
    }

    /// Refuse a message: count, log (throttled) and answer with the named error,
    /// `details: {code, documentId?}`.
    pub(super) async fn refuse(
        &self,
        refused: Refused,
        context: &Map<String, Value>,
        now: Instant,
    ) {
        self.note_refusal(refused.reason, now, &refused.error);
        let mut details = Map::new();
        details.insert("code".into(), Value::String(refused.code.into()));
        if let Some(id @ Value::String(_)) = context.get("documentId") {
            details.insert("documentId".into(), id.clone());
        }
        self.reply(&ServerMessage::error(
            refused.error,
            Some(Value::Object(details)),
        ))
        .await;
    }

    /// Refuse with the bare TS error (no `details`), for errors TS sends that way.
    pub(super) async fn refuse_without_code(&self, refused: Refused, now: Instant) {
        self.note_refusal(refused.reason, now, &refused.error);
        self.error(refused.error).await;
    }

    /// [`Self::refuse_without_code`] of a fixed TS error.
    pub(super) async fn refuse_plain(&self, reason: Refusal, error: &'static str) {
        self.note_refusal(reason, Instant::now(), &error);
        self.error(error).await;
    }

    /// A write naming an invalid field: the TS error `{documentId}`, nothing applied.
    pub(super) async fn refuse_invalid_field(&self, id: &str) {
        self.note_refusal(
            Refusal::InvalidMessage,
            Instant::now(),
            &err::INVALID_FIELD_NAME,
        );
        self.reply(&ServerMessage::error_for_document(
            err::INVALID_FIELD_NAME,
            id,
        ))
        .await;
    }

    /// Over the rate limit: the message is dropped; the error reply goes out at most
    /// once per [`admission::RATE_LIMIT_REPLY_INTERVAL`] so a flood is not answered
    /// message for message.
    pub(super) async fn rate_limited(&mut self, now: Instant) {
        self.svc.metrics.rate_limited.inc();
        self.note_refusal(Refusal::RateLimited, now, &"rate limit exceeded");
        let due = self.last_rate_reply.is_none_or(|t| {
            now.saturating_duration_since(t) >= admission::RATE_LIMIT_REPLY_INTERVAL
        });
        if due {
            self.last_rate_reply = Some(now);
            self.reply(&ServerMessage::error_with_code(
                err::RATE_LIMITED,
                err::CODE_RATE_LIMIT,
            ))
            .await;
        }
    }

    /// The hub refused a write's clock: nothing was applied, nothing is acked.
    pub(super) async fn refuse_clock(&self, refusal: admission::ClockRefusal, document_id: &str) {
        let context = document_context(document_id);
        self.refuse(refusal.refused(), &context, Instant::now())
            .await;
    }
}

/// `{documentId}`, the context of a document's refusal.
pub(super) fn document_context(id: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("documentId".into(), Value::String(id.to_owned()));
    context
}
