//! Authentication: `auth` messages and `?token=` on the upgrade, sign-in, and the
//! re-check of subscriptions after a re-authentication (docs/protocol.md §5).

use std::sync::Arc;

use tokio::time::Instant;

use super::refusals::document_context;
use super::{CloseRequest, Credentials, Outcome, Session};
use crate::auth::{Identity, TokenKind};
use crate::metrics::Refusal;
use crate::protocol::errors::{self as err, close};
use crate::protocol::ServerMessage;
use crate::sync::admission::Refused;

impl Session {
    /// Verify an `auth` message's credentials: a token wins over an API key; `None`
    /// when the message carried neither.
    pub(super) fn verify_credentials(
        &self,
        token: Option<&str>,
        api_key: Option<&str>,
    ) -> Option<Result<Credentials, crate::auth::AuthError>> {
        match (token, api_key) {
            (Some(token), _) => Some(
                self.svc
                    .auth
                    .verify(token, TokenKind::Access)
                    .map(|v| (v.identity, v.expires_at)),
            ),
            (None, Some(key)) => Some(self.svc.auth.verify_api_key(key).map(|i| (i, None))),
            (None, None) => None,
        }
    }

    pub(super) fn record_auth_failure(&self, reason: &dyn std::fmt::Display) -> CloseRequest {
        self.svc.metrics.auth_failures.inc();
        tracing::warn!(conn_id = self.peer.conn_id, ip = %self.intake.ip(), reason = %reason, "authentication failed");
        CloseRequest {
            code: close::POLICY,
            reason: err::AUTHENTICATION_FAILED,
        }
    }

    pub(super) fn sign_in(&mut self, (identity, expires_at): Credentials) {
        tracing::debug!(conn_id = self.peer.conn_id, user_id = %identity.user_id, "authenticated");
        self.expires_at_secs = expires_at;
        if let Some(previous) = self.identity.replace(identity) {
            if self.session_saved {
                self.svc.metrics.user_left(&previous.user_id);
            }
        }
        self.persist_session();
    }

    /// After a re-authentication: drop every subscription the new permissions no
    /// longer allow, telling the client which (`error "Subscription revoked: …"`
    /// with `details {code, documentId}`), so old rights never outlive the token.
    pub(super) fn recheck_subscriptions(&mut self, now: Instant) {
        let Some(identity) = &self.identity else {
            return;
        };
        let revoked: Vec<Arc<str>> = self
            .documents
            .union(&self.awareness_documents)
            .filter(|id| !identity.permissions.can_read(id))
            .cloned()
            .collect();
        for id in revoked {
            self.svc.hub.unsubscribe(&id, self.peer.conn_id);
            self.svc.hub.unsubscribe_awareness(&id, self.peer.conn_id);
            self.documents.remove(&id);
            self.awareness_documents.remove(&id);
            let context = document_context(&id);
            let refused = Refused {
                reason: Refusal::SubscriptionRevoked,
                error: err::SUBSCRIPTION_REVOKED.into(),
                code: err::CODE_SUBSCRIPTION_REVOKED,
            };
            self.refuse(refused, &context, now);
        }
    }

    /// When the token this session authenticated with expires (epoch seconds);
    /// `None` for API keys, anonymous sessions and tokens without `exp`.
    pub(crate) fn expires_at_secs(&self) -> Option<i64> {
        self.expires_at_secs
    }

    /// `?token=` on the upgrade: the same check as an `auth` message, but silent on
    /// success — the client has sent nothing yet, so its encoding is unknown. A bad
    /// token closes with 1008 `Authentication failed` (the reason is in the close frame,
    /// which every client can read whatever its encoding).
    pub(crate) fn authenticate_query_token(&mut self, token: &str, now: Instant) -> Outcome {
        match self.verify_credentials(Some(token), None) {
            Some(Ok(identity)) => {
                self.sign_in(identity);
                self.recheck_subscriptions(now);
            }
            Some(Err(e)) => {
                let close = self.record_auth_failure(&e);
                self.out().close = Some(close);
            }
            None => {}
        }
        self.take_outcome()
    }

    pub(super) fn on_auth(
        &mut self,
        token: Option<String>,
        api_key: Option<String>,
        request_id: Option<String>,
        now: Instant,
    ) {
        let identity = match self.verify_credentials(token.as_deref(), api_key.as_deref()) {
            Some(Ok(identity)) => identity,
            Some(Err(e)) => {
                let close = self.record_auth_failure(&e);
                self.reply(ServerMessage::AuthError {
                    error: err::AUTHENTICATION_FAILED.into(),
                });
                self.out().close = Some(close);
                return;
            }
            None if self.svc.settings.auth_required => {
                self.intake.note_refusal(
                    Refusal::NotAuthenticated,
                    now,
                    &"auth without credentials",
                );
                self.reply(ServerMessage::error_with_code(
                    err::AUTHENTICATION_REQUIRED,
                    err::CODE_AUTH_REQUIRED,
                ));
                self.out().close = Some(CloseRequest {
                    code: close::POLICY,
                    reason: err::AUTHENTICATION_REQUIRED,
                });
                return;
            }
            None => (Identity::anonymous(), None),
        };
        let msg = ServerMessage::AuthSuccess {
            user_id: identity.0.user_id.clone(),
            permissions: identity.0.permissions.to_body(),
        };
        self.sign_in(identity);
        self.reply_with_id(msg, request_id);
        self.recheck_subscriptions(now);
    }
}
