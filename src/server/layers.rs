//! The response layers every public route shares: C#'s security headers and CORS
//! (docs/operations.md §1).

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::{AppState, ServerConfig};

/// Security headers on every response (C#'s set) and CORS.
pub(crate) fn with_common_layers(
    router: Router<Arc<AppState>>,
    config: &ServerConfig,
) -> Router<Arc<AppState>> {
    let csp = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; connect-src 'self' wss: ws:; font-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; upgrade-insecure-requests";
    let cors = if config.cors_origins.iter().any(|o| o == "*") {
        CorsLayer::new().allow_origin(AllowOrigin::any())
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        CorsLayer::new()
            .allow_origin(origins)
            .allow_credentials(true)
    }
    .allow_methods([
        axum::http::Method::GET,
        axum::http::Method::POST,
        axum::http::Method::DELETE,
    ])
    .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
    let set = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    router
        .layer(set("content-security-policy", csp))
        .layer(set("x-content-type-options", "nosniff"))
        .layer(set("x-frame-options", "DENY"))
        .layer(set("x-xss-protection", "1; mode=block"))
        .layer(set("referrer-policy", "strict-origin-when-cross-origin"))
        .layer(cors)
}
