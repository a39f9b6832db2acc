//! The console's admin credential: the bearer token it sends with every admin-API
//! request (reads need it too unless the server runs with
//! `SYNCKIT_ADMIN_READS_OPEN=true`). Either the operator's `SYNCKIT_ADMIN_TOKEN`, or
//! a short-lived admin token minted per request from the servers' `JWT_SECRET`.

use std::sync::Arc;

use crate::auth::{Authenticator, Identity, Permissions, TokenKind};

#[derive(Clone, Default)]
pub struct Credential {
    token: Option<String>,
    minter: Option<Arc<Authenticator>>,
}

impl Credential {
    pub fn new(token: Option<String>, minter: Option<Arc<Authenticator>>) -> Credential {
        Credential { token, minter }
    }

    /// A fixed bearer token.
    #[cfg(any(test, feature = "test-util"))]
    pub fn token(token: impl Into<String>) -> Credential {
        Credential::new(Some(token.into()), None)
    }

    /// Whether there is a token, or a secret to mint one.
    pub(crate) fn is_some(&self) -> bool {
        self.token.is_some() || self.minter.is_some()
    }

    /// The bearer token for one request, if the console has a way to make one.
    pub(crate) fn bearer(&self) -> Option<String> {
        if let Some(token) = &self.token {
            return Some(token.clone());
        }
        let minter = self.minter.as_ref()?;
        let identity = Identity {
            user_id: operator(),
            email: None,
            permissions: Permissions::admin(),
        };
        let now_secs = chrono::Utc::now().timestamp();
        minter
            .issue(&identity, TokenKind::Access, now_secs)
            .map_err(|e| tracing::warn!(error = %e, "console: could not mint an admin token"))
            .ok()
    }
}

/// The subject of a minted token: the console and the operator running it
/// (`console:alice@ops-1`), so the server's audit log says who acted.
fn operator() -> String {
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let user = env(&["USER", "LOGNAME"]).unwrap_or_else(|| "unknown".into());
    let host = env(&["HOSTNAME"])
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("console:{user}@{host}")
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (&self.token, &self.minter) {
            (Some(_), _) => "token <redacted>",
            (None, Some(_)) => "minted from JWT_SECRET",
            (None, None) => "none",
        };
        f.write_str(kind)
    }
}

/// Equal when they would send the same kind of credential (the feed compares
/// configurations; secrets are not compared byte for byte through a minter).
impl PartialEq for Credential {
    fn eq(&self, other: &Credential) -> bool {
        self.token == other.token && self.minter.is_some() == other.minter.is_some()
    }
}

impl Eq for Credential {}
