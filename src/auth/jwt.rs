//! JWT verification and issuance (docs/protocol.md §5.3, docs/operations.md §2), plus API keys.
//!
//! Accepts tokens from every upstream issuer: user id in `userId` or `sub`,
//! `permissions` as an object or a JSON string, `exp`/`nbf` checked when present with
//! no leeway and refused unless they are integers (a string or `null` there must not
//! mean "never expires"), `iss`/`aud` required and checked when configured. Tokens we issue carry
//! `typ` (`access`/`refresh`) so a refresh token is never accepted as an access token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::{Identity, Permissions};

/// The development secret TS uses; refused in production.
pub(crate) const DEVELOPMENT_SECRET: &str = "development-secret-do-not-use-in-production";

/// Shortest secret accepted, as in TS and C#.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// Everything needed to verify and issue tokens.
#[derive(Clone)]
pub struct JwtSettings {
    pub(crate) secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    /// Comma-separated `SYNCKIT_AUTH_APIKEYS`; each grants admin.
    pub api_keys: Vec<String>,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .finish()
    }
}

/// Which kind of token a caller expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn claim(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// Why a credential was refused. Never shown to clients (they get the TS strings).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token has no userId or sub claim")]
    NoSubject,
    #[error("token is a {found} token, expected {expected}")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error("token claim {0} is not an integer number of seconds")]
    BadTimeClaim(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("could not sign token: {0}")]
    Signing(jsonwebtoken::errors::Error),
}

/// A verified token: identity plus its expiry (epoch seconds) when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedToken {
    pub(crate) identity: Identity,
    pub(crate) expires_at: Option<i64>,
}

/// Verifies and issues tokens with one shared secret.
pub struct Authenticator {
    settings: JwtSettings,
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    /// Wall time for `exp`/`nbf`: the server's clock, so tests can step it.
    clock: crate::clock::SharedClock,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator reading the system clock.
    pub fn new(settings: JwtSettings) -> Authenticator {
        Authenticator::with_clock(settings, crate::clock::SystemClock::shared())
    }

    /// An authenticator reading `clock` when it checks `exp` and `nbf`.
    pub(crate) fn with_clock(
        settings: JwtSettings,
        clock: crate::clock::SharedClock,
    ) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        // Checked in `verify` with strict types: the library skips a claim it cannot
        // read as a number, so `"exp":"1"` or `null` would never expire.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        if settings.issuer.is_some() {
            validation.required_spec_claims.insert("iss".into());
        }
        if settings.audience.is_some() {
            validation.required_spec_claims.insert("aud".into());
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
        }
        Authenticator {
            decoding: DecodingKey::from_secret(settings.secret.as_bytes()),
            encoding: EncodingKey::from_secret(settings.secret.as_bytes()),
            validation,
            settings,
            clock,
        }
    }

    /// Verify a token for the given use. Access use accepts tokens without `typ`
    /// (other issuers) but never a refresh token; refresh use requires `typ=refresh`.
    pub(crate) fn verify(&self, token: &str, kind: TokenKind) -> Result<VerifiedToken, AuthError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        let expires_at = time_claim(&claims, "exp")?;
        let now = self.clock.now_ms().div_euclid(1000);
        if expires_at.is_some_and(|exp| exp <= now) {
            return Err(AuthError::Expired);
        }
        if time_claim(&claims, "nbf")?.is_some_and(|nbf| nbf > now) {
            return Err(AuthError::NotYetValid);
        }
        let typ = claims.get("typ").and_then(Value::as_str);
        let kind_ok = match kind {
            TokenKind::Access => typ != Some(TokenKind::Refresh.claim()),
            TokenKind::Refresh => typ == Some(TokenKind::Refresh.claim()),
        };
        if !kind_ok {
            return Err(AuthError::WrongKind {
                found: typ.unwrap_or("untyped").to_owned(),
                expected: kind.claim(),
            });
        }
        let user_id = ["userId", "sub"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::NoSubject)?
            .to_owned();
        Ok(VerifiedToken {
            identity: Identity {
                user_id,
                email: claims
                    .get("email")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                permissions: Permissions::from_claim(claims.get("permissions")),
            },
            expires_at,
        })
    }

    /// Look up an API key (C# behaviour: user `api-key-user`, admin).
    pub(crate) fn verify_api_key(&self, key: &str) -> Result<Identity, AuthError> {
        let known = self
            .settings
            .api_keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()));
        if known {
            Ok(Identity {
                user_id: "api-key-user".into(),
                email: None,
                permissions: Permissions::admin(),
            })
        } else {
            Err(AuthError::UnknownApiKey)
        }
    }

    /// Issue a token of the given kind for an identity, HS256, with `iss`/`aud` when
    /// configured. Both kinds carry permissions and email so a refresh keeps them.
    pub fn issue(
        &self,
        identity: &Identity,
        kind: TokenKind,
        now_secs: i64,
    ) -> Result<String, AuthError> {
        let ttl = match kind {
            TokenKind::Access => self.settings.access_ttl,
            TokenKind::Refresh => self.settings.refresh_ttl,
        };
        let exp = now_secs.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
        let mut claims = json!({
            "userId": identity.user_id,
            "sub": identity.user_id,
            "permissions": identity.permissions.to_body(),
            "typ": kind.claim(),
            "iat": now_secs,
            "exp": exp,
        });
        if let Value::Object(map) = &mut claims {
            if let Some(email) = &identity.email {
                map.insert("email".into(), Value::String(email.clone()));
            }
            if let Some(iss) = &self.settings.issuer {
                map.insert("iss".into(), Value::String(iss.clone()));
            }
            if let Some(aud) = &self.settings.audience {
                map.insert("aud".into(), Value::String(aud.clone()));
            }
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Signing)
    }
}

/// A NumericDate claim (`exp`, `nbf`): absent is fine; present, it must be an
/// integer (negative ones are simply in the past).
fn time_claim(claims: &Value, name: &'static str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_u64().map(|_| i64::MAX))
            .map(Some)
            .ok_or(AuthError::BadTimeClaim(name)),
    }
}

/// How an API key is named in the audit log: `api-key:` and the first 8 hex digits
/// of its SHA-1, which tells keys apart without revealing them (keys are long
/// random strings, so 32 bits of a digest give nothing away).
pub fn api_key_label(key: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(key.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("api-key:{hex}")
}

/// Compare without an early exit so key lookups do not leak a prefix through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &str = "test-secret-that-is-at-least-32-characters";

    fn settings() -> JwtSettings {
        JwtSettings {
            secret: SECRET.into(),
            issuer: None,
            audience: None,
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(7200),
            api_keys: vec!["key-1".into()],
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn sign(alg: Algorithm, claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    #[test]
    fn accepts_ts_token_with_user_id_all_hs_algorithms() {
        let auth = Authenticator::new(settings());
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign(
                alg,
                json!({"userId":"u1","permissions":{"canRead":["d"],"canWrite":[],"isAdmin":false},"exp": now() + 60}),
                SECRET,
            );
            let v = auth.verify(&token, TokenKind::Access).expect("valid");
            assert_eq!(v.identity.user_id, "u1");
            assert!(v.identity.permissions.can_read("d"));
        }
    }

    #[test]
    fn accepts_csharp_token_with_sub_and_string_permissions() {
        let auth = Authenticator::new(settings());
        let token = sign(
            Algorithm::HS256,
            json!({"sub":"u2","permissions":"{\"isAdmin\":true}"}),
            SECRET,
        );
        let v = auth.verify(&token, TokenKind::Access).expect("valid");
        assert_eq!(v.identity.user_id, "u2");
        assert!(v.identity.permissions.is_admin);
        assert_eq!(v.expires_at, None);
    }

    #[test]
    fn rejects_expired_not_yet_valid_wrong_secret_and_no_subject() {
        let auth = Authenticator::new(settings());
        let expired = sign(
            Algorithm::HS256,
            json!({"userId":"u","exp": now() - 1}),
            SECRET,
        );
        assert!(auth.verify(&expired, TokenKind::Access).is_err());
        let early = sign(
            Algorithm::HS256,
            json!({"userId":"u","nbf": now() + 60}),
            SECRET,
        );
        assert!(auth.verify(&early, TokenKind::Access).is_err());
        let wrong = sign(
            Algorithm::HS256,
            json!({"userId":"u"}),
            "another-secret-that-is-32-characters-long",
        );
        assert!(auth.verify(&wrong, TokenKind::Access).is_err());
        let nosub = sign(Algorithm::HS256, json!({"email":"x"}), SECRET);
        assert!(matches!(
            auth.verify(&nosub, TokenKind::Access),
            Err(AuthError::NoSubject)
        ));
    }

    #[test]
    fn expiry_and_not_before_follow_the_injected_clock() {
        let clock = crate::clock::TestClock::starting_at(1_000_000_000_000);
        let auth = Authenticator::with_clock(settings(), clock.clone());
        let now = 1_000_000_000;
        let token = sign(
            Algorithm::HS256,
            json!({"userId":"u","nbf": now + 10, "exp": now + 100}),
            SECRET,
        );
        assert!(matches!(
            auth.verify(&token, TokenKind::Access),
            Err(AuthError::NotYetValid)
        ));
        clock.step(Duration::from_secs(10));
        assert!(
            auth.verify(&token, TokenKind::Access).is_ok(),
            "valid at nbf"
        );
        clock.step(Duration::from_secs(90));
        assert!(matches!(
            auth.verify(&token, TokenKind::Access),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn time_claims_must_be_integers_when_present() {
        let auth = Authenticator::new(settings());
        let token = |claims: Value| sign(Algorithm::HS256, claims, SECRET);
        for bad in [
            json!({"userId":"u","exp":"1"}),
            json!({"userId":"u","exp":null}),
            json!({"userId":"u","exp":true}),
            json!({"userId":"u","exp":-1}),
            json!({"userId":"u","exp":(now() + 60) as f64 + 0.5}),
            json!({"userId":"u","nbf":"9999999999"}),
            json!({"userId":"u","nbf":9_999_999_999i64}),
            json!({"userId":"u","nbf":null}),
            json!({"userId":"u","exp":now()}),
        ] {
            assert!(
                auth.verify(&token(bad.clone()), TokenKind::Access).is_err(),
                "{bad}"
            );
        }
        for good in [
            json!({"userId":"u","exp":now() + 60,"nbf":now()}),
            json!({"userId":"u","exp":u64::MAX}),
            json!({"userId":"u","nbf":0}),
        ] {
            assert!(
                auth.verify(&token(good.clone()), TokenKind::Access).is_ok(),
                "{good}"
            );
        }
        let v = auth
            .verify(
                &token(json!({"userId":"u","exp":now() + 60})),
                TokenKind::Access,
            )
            .expect("valid");
        assert_eq!(v.expires_at, Some(now() + 60));
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let strict = Authenticator::new(JwtSettings {
            issuer: Some("me".into()),
            audience: Some("app".into()),
            ..settings()
        });
        for claims in [
            json!({"userId":"u"}),
            json!({"userId":"u","iss":"me"}),
            json!({"userId":"u","aud":"app"}),
            json!({"userId":"u","iss":"me","aud":"other"}),
        ] {
            let t = sign(Algorithm::HS256, claims.clone(), SECRET);
            assert!(strict.verify(&t, TokenKind::Access).is_err(), "{claims}");
        }
        let both = sign(
            Algorithm::HS256,
            json!({"userId":"u","iss":"me","aud":["x","app"]}),
            SECRET,
        );
        assert!(strict.verify(&both, TokenKind::Access).is_ok());
        let only_iss = Authenticator::new(JwtSettings {
            issuer: Some("me".into()),
            ..settings()
        });
        let t = sign(Algorithm::HS256, json!({"userId":"u","iss":"me"}), SECRET);
        assert!(
            only_iss.verify(&t, TokenKind::Access).is_ok(),
            "aud not configured"
        );
    }

    #[test]
    fn rejects_alg_none() {
        let auth = Authenticator::new(settings());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(br#"{"userId":"u","permissions":{"isAdmin":true}}"#)
        );
        assert!(auth.verify(&token, TokenKind::Access).is_err());
    }

    #[test]
    fn issuer_and_audience_checked_only_when_configured() {
        let token = sign(
            Algorithm::HS256,
            json!({"userId":"u","iss":"other","aud":"x"}),
            SECRET,
        );
        assert!(Authenticator::new(settings())
            .verify(&token, TokenKind::Access)
            .is_ok());
        let strict = Authenticator::new(JwtSettings {
            issuer: Some("me".into()),
            audience: Some("app".into()),
            ..settings()
        });
        assert!(strict.verify(&token, TokenKind::Access).is_err());
        let good = sign(
            Algorithm::HS256,
            json!({"userId":"u","iss":"me","aud":"app"}),
            SECRET,
        );
        assert!(strict.verify(&good, TokenKind::Access).is_ok());
    }

    #[test]
    fn refresh_tokens_are_typed() {
        let auth = Authenticator::new(settings());
        let id = Identity {
            user_id: "u".into(),
            email: Some("a@b".into()),
            permissions: Permissions::all_documents(),
        };
        let refresh = auth.issue(&id, TokenKind::Refresh, now()).expect("issue");
        let access = auth.issue(&id, TokenKind::Access, now()).expect("issue");
        assert!(auth.verify(&refresh, TokenKind::Access).is_err());
        assert!(auth.verify(&access, TokenKind::Refresh).is_err());
        let back = auth.verify(&refresh, TokenKind::Refresh).expect("valid");
        assert_eq!(back.identity, id, "refresh keeps permissions and email");
        let untyped = sign(Algorithm::HS256, json!({"userId":"u"}), SECRET);
        assert!(auth.verify(&untyped, TokenKind::Refresh).is_err());
    }

    #[test]
    fn api_keys() {
        let auth = Authenticator::new(settings());
        let id = auth.verify_api_key("key-1").expect("known");
        assert_eq!(id.user_id, "api-key-user");
        assert!(id.permissions.is_admin);
        assert!(auth.verify_api_key("key-2").is_err());
        assert!(auth.verify_api_key("").is_err());
    }
}
