//! Awareness: subscribe, updates within their bounds, and their broadcast
//! (docs/protocol.md §6).

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::refusals::document_context;
use super::{Broadcast, Done, Io, Pending, Session, MAX_WRITER_ID_LEN};
use crate::awareness::{AwarenessEntry, AwarenessError, AwarenessUpdate, SetOutcome};
use crate::metrics::Refusal;
use crate::protocol::errors as err;
use crate::protocol::message::{AwarenessStateEntry, AwarenessUpdateMessage};
use crate::protocol::ServerMessage;
use crate::storage::StorageError;
use crate::sync::admission::Refused;
use crate::sync::hub::DocEntry;

/// An `awareness_update` past its own checks, waiting for the document's entries
/// (the per-document bound) or for the store's verdict on it.
#[derive(Debug)]
pub(super) struct PendingUpdate {
    id: String,
    client_id: String,
    /// `None`: a leave.
    state: Option<Value>,
    clock: u64,
}

impl Session {
    pub(super) fn on_awareness_subscribe(&mut self, document_id: Option<String>, now: Instant) {
        let Some(id) = self.admit(document_id.as_deref(), false, now) else {
            return;
        };
        if self.subscription_cap_reached(&self.awareness_documents, &id) {
            self.refuse_subscription(&id, now);
            return;
        }
        self.with_document(id.clone(), Pending::AwarenessSubscribe(id), now);
    }

    /// The document is live: subscribe to its awareness, then read its entries.
    pub(super) fn awareness_document_opened(
        &mut self,
        id: String,
        opened: Result<Arc<DocEntry>, StorageError>,
    ) {
        let Some(entry) = self.opened(opened, &id, err::AWARENESS_SUBSCRIBE_FAILED) else {
            return;
        };
        self.svc.hub.subscribe_awareness(&entry, &self.peer);
        self.awareness_documents.insert(entry.id.clone());
        let read = Io::AwarenessRead {
            document_id: id.clone(),
            now_ms: self.svc.now_ms(),
        };
        self.wait(read, Pending::AwarenessState(id));
    }

    /// Answer an `awareness_subscribe` with the document's entries.
    pub(super) fn awareness_state_read(
        &mut self,
        id: String,
        read: Result<Vec<AwarenessEntry>, AwarenessError>,
    ) {
        match read {
            Ok(entries) => {
                let states = entries
                    .into_iter()
                    .map(|e| AwarenessStateEntry {
                        client_id: e.client_id,
                        state: e.state,
                        clock: e.clock,
                    })
                    .collect();
                self.reply(ServerMessage::AwarenessState {
                    document_id: id,
                    states,
                });
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_SUBSCRIBE_FAILED);
            }
        }
    }

    /// An `awareness_update`: admitted, its fields checked, its state within the
    /// connection's bounds; then the document's bound (for a client id new to this
    /// connection), then the store.
    pub(super) fn on_awareness_update(&mut self, update: AwarenessUpdateMessage, now: Instant) {
        let AwarenessUpdateMessage {
            document_id,
            client_id,
            state,
            clock,
        } = update;
        let Some(id) = self.admit(document_id.as_deref(), false, now) else {
            return;
        };
        let Some((client_id, state, clock)) = awareness_fields(client_id, state, clock) else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_AWARENESS_STATE, now);
            return;
        };
        let update = PendingUpdate {
            id,
            client_id,
            state,
            clock,
        };
        let Some(state) = &update.state else {
            return self.store_awareness(update);
        };
        match self.check_awareness(&update.id, &update.client_id, state) {
            Err(refused) => {
                let context = document_context(&update.id);
                self.refuse(refused, &context, now);
            }
            Ok(Held::Yes) => self.store_awareness(update),
            Ok(Held::No) => {
                let read = Io::AwarenessRead {
                    document_id: update.id.clone(),
                    now_ms: self.svc.now_ms(),
                };
                self.wait(read, Pending::Awareness(update));
            }
        }
    }

    /// An update's next step, given the answer to the I/O it asked for.
    pub(super) fn awareness_resumed(&mut self, update: PendingUpdate, done: Done, now: Instant) {
        match done {
            Done::AwarenessRead(read) => {
                // A store failure is answered by the update itself, which fails the same way.
                let entries = read.unwrap_or_default();
                let max = self.svc.settings.limits.max_awareness_clients_per_document;
                let full = entries.len() >= max
                    && !entries.iter().any(|e| e.client_id == update.client_id);
                if full {
                    let refused = Refused::new(
                        Refusal::AwarenessClientLimit,
                        err::awareness_document_full(max),
                        err::CODE_AWARENESS_LIMIT,
                    );
                    let context = document_context(&update.id);
                    self.refuse(refused, &context, now);
                    return;
                }
                self.store_awareness(update);
            }
            Done::AwarenessSet(outcome) => self.awareness_stored(update, outcome, now),
            other => {
                self.internal_error("an awareness_update resumed with an answer it did not ask for", &other);
            }
        }
    }

    fn store_awareness(&mut self, update: PendingUpdate) {
        let set = AwarenessUpdate {
            document_id: update.id.clone(),
            client_id: update.client_id.clone(),
            connection_id: self.connection_key(),
            user_id: self
                .identity
                .as_ref()
                .map(|i| i.user_id.clone())
                .unwrap_or_default(),
            state: update.state.clone(),
            clock: update.clock,
            now_ms: self.svc.now_ms(),
        };
        self.wait(Io::AwarenessSet(set), Pending::Awareness(update));
    }

    /// The store's verdict: refused, dropped as stale, or accepted (or a leave) and
    /// broadcast.
    fn awareness_stored(
        &mut self,
        update: PendingUpdate,
        outcome: Result<SetOutcome, AwarenessError>,
        now: Instant,
    ) {
        let PendingUpdate {
            id,
            client_id,
            state,
            clock,
        } = update;
        match outcome {
            Ok(SetOutcome::Stale) => {}
            Ok(SetOutcome::NotOwner) => {
                let context = document_context(&id);
                let refused = Refused {
                    reason: Refusal::AwarenessNotOwner,
                    error: err::AWARENESS_NOT_OWNER.into(),
                    code: err::CODE_NOT_OWNER,
                };
                self.refuse(refused, &context, now);
            }
            Ok(outcome @ (SetOutcome::Accepted | SetOutcome::Left)) => {
                let key = (id.clone(), client_id.clone());
                if outcome == SetOutcome::Accepted {
                    self.awareness_clients.insert(key);
                } else {
                    self.awareness_clients.remove(&key);
                }
                let msg = ServerMessage::AwarenessUpdate {
                    document_id: id.clone(),
                    client_id,
                    state: state.unwrap_or(Value::Null),
                    clock,
                };
                self.out().broadcasts.push(Broadcast::Awareness {
                    document_id: id,
                    msg,
                });
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_UPDATE_FAILED);
            }
        }
    }

    /// The connection's awareness bounds of a (non-leave) update: the state's size,
    /// and for a client id this connection does not hold yet, its number of client
    /// ids. Whether it holds it: if not, the per-document bound is checked next,
    /// against the store, so with a shared store it holds for the fleet (concurrent
    /// first updates may pass it by a few).
    fn check_awareness(&self, id: &str, client_id: &str, state: &Value) -> Result<Held, Refused> {
        let limits = &self.svc.settings.limits;
        let size = serde_json::to_string(state).map_or(usize::MAX, |s| s.len());
        if size > limits.max_awareness_state_bytes {
            return Err(Refused::new(
                Refusal::AwarenessStateTooLarge,
                err::awareness_state_too_large(size, limits.max_awareness_state_bytes),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        let key = (id.to_owned(), client_id.to_owned());
        if self.awareness_clients.contains(&key) {
            return Ok(Held::Yes);
        }
        if self.awareness_clients.len() >= limits.max_awareness_clients_per_connection {
            return Err(Refused::new(
                Refusal::AwarenessClientLimit,
                err::awareness_connection_full(limits.max_awareness_clients_per_connection),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        Ok(Held::No)
    }
}

/// Whether this connection already holds an update's client id.
enum Held {
    Yes,
    No,
}

/// The validated parts of an `awareness_update`: its client id (bounded), its state
/// (an object, or `None` for a leave) and its clock (a leave may omit it); `None`
/// when any is invalid.
fn awareness_fields(
    client_id: Option<String>,
    state: Value,
    clock: Option<u64>,
) -> Option<(String, Option<Value>, u64)> {
    let state = match state {
        Value::Null => None,
        s @ Value::Object(_) => Some(s),
        _ => return None,
    };
    let client_id = client_id.filter(|c| c.len() <= MAX_WRITER_ID_LEN)?;
    // Above 2^53 − 1 no JS client can produce it, and the leave sent on
    // close or expiry is `clock + 1`.
    let clock = match clock {
        Some(c) if c > crate::sync::clock::MAX_SAFE_INTEGER => return None,
        Some(c) => c,
        None if state.is_none() => 0,
        None => return None,
    };
    Some((client_id, state, clock))
}
