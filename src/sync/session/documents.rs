//! Document reads: admission (auth, id, permission), loading, subscribe, sync
//! requests and unsubscribe (docs/protocol.md §6).

use crate::hash::FastSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::refusals::document_context;
use super::Session;
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::{document_id, ServerMessage};
use crate::sync::admission::Refused;
use crate::sync::hub::DocEntry;
use crate::sync::playground_allows;

impl Session {
    /// Steps shared by every document handler: authenticated, valid id, permission.
    /// Replies with the TS error and returns `None` on failure.
    pub(super) async fn admit(
        &self,
        document_id: Option<&str>,
        write: bool,
        now: Instant,
    ) -> Option<String> {
        let Some(identity) = &self.identity else {
            self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED, now)
                .await;
            return None;
        };
        let id = match document_id::validate(document_id) {
            Ok(id) => id.to_owned(),
            Err(e) => {
                self.intake
                    .note_refusal(Refusal::InvalidDocumentId, now, &e);
                self.error(e.to_string()).await;
                return None;
            }
        };
        let allowed = if write {
            identity.permissions.can_write(&id)
        } else {
            identity.permissions.can_read(&id)
        };
        if !allowed {
            let detail = format!("unauthorized access to document {id}");
            self.intake
                .note_refusal(Refusal::PermissionDenied, now, &detail);
            self.reply(&ServerMessage::error_for_document(
                err::PERMISSION_DENIED,
                &id,
            ))
            .await;
            return None;
        }
        Some(id)
    }

    pub(super) async fn open(&self, id: &str, failure: &str) -> Option<Arc<DocEntry>> {
        match self.svc.hub.open(id).await {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!(document_id = %id, error = %e, "could not load document");
                self.reply(&ServerMessage::error_for_document(failure, id))
                    .await;
                None
            }
        }
    }

    /// Admit, load and subscribe: the common start of subscribe, sync_request and
    /// both write handlers (writes auto-subscribe the sender, as in TS). A read past
    /// the connection's subscription cap is refused before the document is loaded;
    /// a write is still applied, without subscribing.
    pub(super) async fn admit_and_join(
        &mut self,
        document_id: Option<&str>,
        write: bool,
        failure: &str,
        now: Instant,
    ) -> Option<Arc<DocEntry>> {
        let id = self.admit(document_id, write, now).await?;
        if !write && self.subscription_cap_reached(&self.documents, &id) {
            self.refuse_subscription(&id, now).await;
            return None;
        }
        let entry = self.open(&id, failure).await?;
        self.join(&entry);
        Some(entry)
    }

    /// Whether subscribing `id` (not yet in `subscribed`) would pass the
    /// per-connection subscription cap.
    pub(super) fn subscription_cap_reached(
        &self,
        subscribed: &FastSet<Arc<str>>,
        id: &str,
    ) -> bool {
        let max = self.svc.settings.limits.max_subscriptions_per_connection;
        !subscribed.contains(id) && subscribed.len() >= max
    }

    pub(super) async fn refuse_subscription(&self, id: &str, now: Instant) {
        let max = self.svc.settings.limits.max_subscriptions_per_connection;
        let refused = Refused::new(
            Refusal::SubscriptionLimit,
            err::too_many_subscriptions(max),
            err::CODE_SUBSCRIPTION_LIMIT,
        );
        self.refuse(refused, &document_context(id), now).await;
    }

    /// Subscribe to a document's broadcasts. Writes auto-subscribe the writer (TS
    /// behaviour), but only when it may also read the document: write permission
    /// does not imply read (docs/protocol.md §6), and broadcasts carry the document.
    pub(super) fn join(&mut self, entry: &Arc<DocEntry>) {
        let may_read = self
            .identity
            .as_ref()
            .is_some_and(|i| i.permissions.can_read(&entry.id));
        if !may_read || self.subscription_cap_reached(&self.documents, &entry.id) {
            return;
        }
        self.svc.hub.subscribe(entry, &self.peer);
        self.documents.insert(entry.id.clone());
    }

    pub(super) async fn send_sync_response(&self, entry: &DocEntry, request_id: Option<String>) {
        let snap = self.svc.hub.snapshot(entry);
        let now = self.svc.now_ms();
        let msg = ServerMessage::SyncResponse {
            request_id: request_id.clone().unwrap_or_else(|| next_message_id(now)),
            document_id: entry.id.to_string(),
            state: snap.state,
            clock: snap.clock,
            text_state: snap.text,
        };
        self.reply_with_id(&msg, request_id.as_deref()).await;
    }

    pub(super) async fn on_subscribe(
        &mut self,
        document_id: Option<String>,
        request_id: Option<String>,
        now: Instant,
    ) {
        if self.identity.is_some() {
            if let Ok(id) = document_id::validate(document_id.as_deref()) {
                if self.svc.settings.playground_access_filter && !playground_allows(id) {
                    self.refuse_plain(Refusal::PermissionDenied, err::ACCESS_DENIED, now)
                        .await;
                    return;
                }
            }
        }
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), false, err::SUBSCRIBE_FAILED, now)
            .await
        else {
            return;
        };
        self.send_sync_response(&entry, request_id).await;
    }

    pub(super) async fn on_sync_request(
        &mut self,
        document_id: Option<String>,
        vector_clock: Option<Map<String, Value>>,
        request_id: Option<String>,
        now: Instant,
    ) {
        let Some(entry) = self
            .admit_and_join(document_id.as_deref(), false, err::SYNC_REQUEST_FAILED, now)
            .await
        else {
            return;
        };
        // The client's clock is not merged: a read never changes the document (any
        // reader could otherwise inflate the clock every broadcast carries).
        let _ = vector_clock;
        self.send_sync_response(&entry, request_id).await;
    }

    pub(super) async fn on_sync_step1(&mut self, document_id: Option<String>, now: Instant) {
        let Some(id) = self.admit(document_id.as_deref(), false, now).await else {
            return;
        };
        self.reply(&ServerMessage::SyncStep2 { document_id: id })
            .await;
    }

    pub(super) async fn on_unsubscribe(&mut self, document_id: Option<String>) {
        let Ok(id) = document_id::validate(document_id.as_deref()) else {
            return;
        };
        self.svc.hub.unsubscribe(id, self.peer.conn_id);
        self.documents.remove(id);
    }
}
