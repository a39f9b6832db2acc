//! Awareness: subscribe, updates within their bounds, and their broadcast
//! (docs/protocol.md §6).

use serde_json::Value;
use tokio::time::Instant;

use super::refusals::document_context;
use super::{Session, MAX_WRITER_ID_LEN};
use crate::awareness::{AwarenessUpdate, SetOutcome};
use crate::metrics::Refusal;
use crate::protocol::errors as err;
use crate::protocol::message::{AwarenessStateEntry, AwarenessUpdateMessage};
use crate::protocol::ServerMessage;
use crate::sync::admission::Refused;

impl Session {
    pub(super) async fn on_awareness_subscribe(
        &mut self,
        document_id: Option<String>,
        now: Instant,
    ) {
        let Some(id) = self.admit(document_id.as_deref(), false, now).await else {
            return;
        };
        if self.subscription_cap_reached(&self.awareness_documents, &id) {
            self.refuse_subscription(&id, now).await;
            return;
        }
        let Some(entry) = self.open(&id, err::AWARENESS_SUBSCRIBE_FAILED).await else {
            return;
        };
        self.svc.hub.subscribe_awareness(&entry, &self.peer);
        self.awareness_documents.insert(entry.id.clone());
        match self.svc.awareness.get_all(&id, self.svc.now_ms()).await {
            Ok(entries) => {
                let states = entries
                    .into_iter()
                    .map(|e| AwarenessStateEntry {
                        client_id: e.client_id,
                        state: e.state,
                        clock: e.clock,
                    })
                    .collect();
                self.reply(&ServerMessage::AwarenessState {
                    document_id: id,
                    states,
                })
                .await;
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_SUBSCRIBE_FAILED).await;
            }
        }
    }

    pub(super) async fn on_awareness_update(
        &mut self,
        update: AwarenessUpdateMessage,
        now: Instant,
    ) {
        let AwarenessUpdateMessage {
            document_id,
            client_id,
            state,
            clock,
        } = update;
        let Some(id) = self.admit(document_id.as_deref(), false, now).await else {
            return;
        };
        let Some((client_id, state, clock)) = awareness_fields(client_id, state, clock) else {
            self.refuse_plain(Refusal::InvalidMessage, err::INVALID_AWARENESS_STATE, now)
                .await;
            return;
        };
        if let Some(state) = &state {
            if let Err(refused) = self.check_awareness(&id, &client_id, state).await {
                self.refuse(refused, &document_context(&id), now).await;
                return;
            }
        }
        let outcome = self
            .svc
            .awareness
            .set(AwarenessUpdate {
                document_id: id.clone(),
                client_id: client_id.clone(),
                connection_id: self.connection_key(),
                user_id: self
                    .identity
                    .as_ref()
                    .map(|i| i.user_id.clone())
                    .unwrap_or_default(),
                state: state.clone(),
                clock,
                now_ms: self.svc.now_ms(),
            })
            .await;
        match outcome {
            Ok(SetOutcome::Stale) => {}
            Ok(SetOutcome::NotOwner) => {
                let context = document_context(&id);
                let refused = Refused {
                    reason: Refusal::AwarenessNotOwner,
                    error: err::AWARENESS_NOT_OWNER.into(),
                    code: err::CODE_NOT_OWNER,
                };
                self.refuse(refused, &context, now).await;
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
                crate::sync::relay::broadcast_awareness(
                    &self.svc.hub,
                    &id,
                    &msg,
                    Some(self.peer.conn_id),
                    true,
                );
            }
            Err(e) => {
                // A shared store's outage is logged once by the store (awareness::bounded);
                // one line per message would flood the log.
                tracing::debug!(document_id = %id, error = %e, "awareness store failed");
                self.error(err::AWARENESS_UPDATE_FAILED).await;
            }
        }
    }

    /// The awareness bounds of a (non-leave) update: the state's size, and for a
    /// client id this connection does not hold yet, the per-connection and
    /// per-document number of client ids. The per-document count is read from the
    /// store, so with a shared store it holds for the fleet (concurrent first
    /// updates may pass it by a few).
    pub(super) async fn check_awareness(
        &self,
        id: &str,
        client_id: &str,
        state: &Value,
    ) -> Result<(), Refused> {
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
            return Ok(());
        }
        if self.awareness_clients.len() >= limits.max_awareness_clients_per_connection {
            return Err(Refused::new(
                Refusal::AwarenessClientLimit,
                err::awareness_connection_full(limits.max_awareness_clients_per_connection),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        // A store failure is answered by the update itself, which fails the same way.
        let entries = self
            .svc
            .awareness
            .get_all(id, self.svc.now_ms())
            .await
            .unwrap_or_default();
        let max = limits.max_awareness_clients_per_document;
        if entries.len() >= max && !entries.iter().any(|e| e.client_id == client_id) {
            return Err(Refused::new(
                Refusal::AwarenessClientLimit,
                err::awareness_document_full(max),
                err::CODE_AWARENESS_LIMIT,
            ));
        }
        Ok(())
    }
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
