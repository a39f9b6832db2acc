//! HTTP auth routes with TS bodies (docs/operations.md §2). `/auth/login` is the upstream
//! demo (any email and password get a token) and exists only when
//! `SYNCKIT_DEMO_LOGIN=true`; real deployments mint tokens in their own backend.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::auth::{Identity, Permissions, TokenKind};

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Parse a JSON body without axum's rejection texts (responses never leak internals).
fn body_json(body: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/me", get(me))
        .route("/auth/verify", post(verify))
}

fn issue_pair(state: &AppState, identity: &Identity) -> Result<(String, String), Box<Response>> {
    let auth = &state.sync.auth;
    let now_secs = state.sync.now_ms() / 1000;
    let access = auth.issue(identity, TokenKind::Access, now_secs);
    let refresh = auth.issue(identity, TokenKind::Refresh, now_secs);
    match (access, refresh) {
        (Ok(a), Ok(r)) => Ok((a, r)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "could not sign token");
            Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to issue token",
            )))
        }
    }
}

async fn login(State(state): State<Arc<AppState>>, body: String) -> Response {
    if !state.config.demo_login {
        return error(
            StatusCode::NOT_FOUND,
            "Demo login is disabled (set SYNCKIT_DEMO_LOGIN=true for development only)",
        );
    }
    let Some(body) = body_json(&body) else {
        return error(StatusCode::BAD_REQUEST, "Email and password required");
    };
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let password = body
        .get("password")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let (Some(email), Some(_)) = (email, password) else {
        return error(StatusCode::BAD_REQUEST, "Email and password required");
    };
    let requested = body.get("permissions");
    let permissions = if requested
        .and_then(|p| p.get("isAdmin"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        Permissions::admin()
    } else {
        Permissions::from_claim(requested)
    };
    let identity = Identity {
        user_id: format!("user-{}", state.sync.now_ms()),
        email: Some(email.to_owned()),
        permissions,
    };
    match issue_pair(&state, &identity) {
        Ok((access, refresh)) => Json(json!({
            "userId": identity.user_id,
            "email": email,
            "accessToken": access,
            "refreshToken": refresh,
            "permissions": identity.permissions.to_body(),
        }))
        .into_response(),
        Err(r) => *r,
    }
}

async fn refresh(State(state): State<Arc<AppState>>, body: String) -> Response {
    let token = body_json(&body).and_then(|b| {
        b.get("refreshToken")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "Refresh token required");
    };
    let Ok(verified) = state.sync.auth.verify(&token, TokenKind::Refresh) else {
        return error(StatusCode::UNAUTHORIZED, "Invalid or expired refresh token");
    };
    match issue_pair(&state, &verified.identity) {
        Ok((access, refresh)) => {
            Json(json!({ "accessToken": access, "refreshToken": refresh })).into_response()
        }
        Err(r) => *r,
    }
}

async fn me(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(header) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return error(StatusCode::UNAUTHORIZED, "Missing Authorization header");
    };
    let Some(token) = header.strip_prefix("Bearer ") else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid Authorization header format",
        );
    };
    match state.sync.auth.verify(token, TokenKind::Access) {
        Ok(v) => Json(json!({
            "userId": v.identity.user_id,
            "email": v.identity.email,
            "permissions": v.identity.permissions.to_body(),
        }))
        .into_response(),
        Err(_) => error(StatusCode::UNAUTHORIZED, "Invalid or expired token"),
    }
}

async fn verify(State(state): State<Arc<AppState>>, body: String) -> Response {
    let token =
        body_json(&body).and_then(|b| b.get("token").and_then(Value::as_str).map(str::to_owned));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "Token required");
    };
    match state.sync.auth.verify(&token, TokenKind::Access) {
        Ok(v) => {
            Json(json!({ "valid": true, "userId": v.identity.user_id, "expiresAt": v.expires_at }))
                .into_response()
        }
        Err(_) => Json(json!({ "valid": false })).into_response(),
    }
}
