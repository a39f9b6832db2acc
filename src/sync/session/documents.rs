//! Document reads: admission (auth, id, permission), loading, subscribe, sync
//! requests and unsubscribe (docs/protocol.md §6).

use crate::hash::FastSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::refusals::document_context;
use super::{Pending, Session};
use crate::metrics::Refusal;
use crate::protocol::encode::next_message_id;
use crate::protocol::errors as err;
use crate::protocol::{document_id, ServerMessage};
use crate::storage::StorageError;
use crate::sync::admission::Refused;
use crate::sync::hub::DocEntry;
use crate::sync::playground_allows;

/// A `subscribe` or `sync_request` waiting for its document.
#[derive(Debug)]
pub(super) struct PendingRead {
    id: String,
    request_id: Option<String>,
    /// The error its load failing is answered with.
    failure: &'static str,
}

impl Session {
    /// Steps shared by every document handler: authenticated, valid id, permission.
    /// Replies with the TS error and returns `None` on failure.
    pub(super) fn admit(
        &mut self,
        document_id: Option<&str>,
        write: bool,
        now: Instant,
    ) -> Option<String> {
        let Some(identity) = &self.identity else {
            self.refuse_plain(Refusal::NotAuthenticated, err::NOT_AUTHENTICATED, now);
            return None;
        };
        let id = match document_id::validate(document_id) {
            Ok(id) => id.to_owned(),
            Err(e) => {
                self.intake
                    .note_refusal(Refusal::InvalidDocumentId, now, &e);
                self.error(e.to_string());
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
            self.reply(ServerMessage::error_for_document(
                err::PERMISSION_DENIED,
                &id,
            ));
            return None;
        }
        Some(id)
    }

    /// The document a handler waited for, or its load's failure answered with
    /// `failure` (`None`).
    pub(super) fn opened(
        &mut self,
        opened: Result<Arc<DocEntry>, StorageError>,
        id: &str,
        failure: &str,
    ) -> Option<Arc<DocEntry>> {
        match opened {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!(document_id = %id, error = %e, "could not load document");
                self.reply(ServerMessage::error_for_document(failure, id));
                None
            }
        }
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

    pub(super) fn refuse_subscription(&mut self, id: &str, now: Instant) {
        let max = self.svc.settings.limits.max_subscriptions_per_connection;
        let refused = Refused::new(
            Refusal::SubscriptionLimit,
            err::too_many_subscriptions(max),
            err::CODE_SUBSCRIPTION_LIMIT,
        );
        self.refuse(refused, &document_context(id), now);
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

    fn send_sync_response(&mut self, entry: &DocEntry, request_id: Option<String>) {
        let snap = self.svc.hub.snapshot(entry);
        let msg = ServerMessage::SyncResponse {
            request_id: request_id
                .clone()
                .unwrap_or_else(|| next_message_id(self.svc.now_ms())),
            document_id: entry.id.to_string(),
            state: snap.state,
            clock: snap.clock,
            text_state: snap.text,
        };
        self.reply_with_id(msg, request_id);
    }

    pub(super) fn on_subscribe(
        &mut self,
        document_id: Option<String>,
        request_id: Option<String>,
        now: Instant,
    ) {
        if self.identity.is_some() && self.svc.settings.playground_access_filter {
            if let Ok(id) = document_id::validate(document_id.as_deref()) {
                if !playground_allows(id) {
                    self.refuse_plain(Refusal::PermissionDenied, err::ACCESS_DENIED, now);
                    return;
                }
            }
        }
        self.on_read(document_id, request_id, err::SUBSCRIBE_FAILED, now);
    }

    /// `subscribe` and `sync_request`: admitted within the subscription cap (a read
    /// past it is refused before the document is loaded), loaded, joined, and
    /// answered with the document's state.
    pub(super) fn on_read(
        &mut self,
        document_id: Option<String>,
        request_id: Option<String>,
        failure: &'static str,
        now: Instant,
    ) {
        let Some(id) = self.admit(document_id.as_deref(), false, now) else {
            return;
        };
        if self.subscription_cap_reached(&self.documents, &id) {
            self.refuse_subscription(&id, now);
            return;
        }
        let read = PendingRead {
            id: id.clone(),
            request_id,
            failure,
        };
        self.with_document(id, Pending::Read(read), now);
    }

    pub(super) fn read_opened(
        &mut self,
        read: PendingRead,
        opened: Result<Arc<DocEntry>, StorageError>,
    ) {
        let Some(entry) = self.opened(opened, &read.id, read.failure) else {
            return;
        };
        self.join(&entry);
        self.send_sync_response(&entry, read.request_id);
    }

    pub(super) fn on_sync_step1(&mut self, document_id: Option<String>, now: Instant) {
        let Some(id) = self.admit(document_id.as_deref(), false, now) else {
            return;
        };
        self.reply(ServerMessage::SyncStep2 { document_id: id });
    }

    pub(super) fn on_unsubscribe(&mut self, document_id: Option<String>) {
        let Ok(id) = document_id::validate(document_id.as_deref()) else {
            return;
        };
        self.svc.hub.unsubscribe(id, self.peer.conn_id);
        self.documents.remove(id);
    }
}
