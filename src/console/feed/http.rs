//! The one HTTP client of synckit (the console's admin-API polls and actions, and the
//! tests' helper): hyper-util's client over plain `http://` (loopback or a private
//! network, as the admin listener is), one request per connection, JSON bodies, a
//! bounded response.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Largest response read: the biggest admin page is well under this.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("invalid address {0:?} (expected http://host:port)")]
    Address(String),
    #[error("unreachable: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// `host:port` from `http://host:port[/]` or `host:port`.
pub(crate) fn authority(address: &str) -> Result<String, HttpError> {
    let rest = address.strip_prefix("http://").unwrap_or(address);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || address.starts_with("https://") {
        return Err(HttpError::Address(address.to_owned()));
    }
    Ok(rest.to_owned())
}

/// Percent-encode one path segment (document and session ids carry `:` and more).
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One answer: status, headers (names lower-case) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    #[cfg(any(test, feature = "test-util"))]
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Send one request to `host:port` and read the whole answer, within `timeout`.
/// A `Host` header in `headers` replaces the one the client would send; a body is
/// sent as JSON.
pub async fn send(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
        // No connection outlives its request: a server draining for shutdown is
        // never held open by an idle pooled connection.
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| HttpError::Address(format!("{host}{path}: {e}")))?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| HttpError::Connect(error_chain(&e)))?;
        let status = response.status().as_u16();
        #[cfg(any(test, feature = "test-util"))]
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| HttpError::Malformed(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            #[cfg(any(test, feature = "test-util"))]
            headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// The error and its causes (hyper-util's own message alone says only "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The admin API's request: `(status, body)` with the body parsed as JSON (a
/// non-JSON body comes back as a JSON string).
pub(crate) async fn request(
    address: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Value), HttpError> {
    let host = authority(address)?;
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("accept", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let reply = send(&host, method, path, &headers, None, timeout).await?;
    let value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into_owned()));
    Ok((reply.status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_segments() {
        assert_eq!(
            authority("http://127.0.0.1:9091/").as_deref(),
            Ok("127.0.0.1:9091")
        );
        assert_eq!(authority("localhost:1").as_deref(), Ok("localhost:1"));
        assert!(authority("https://x:1").is_err());
        assert_eq!(encode_segment("room:a/b c"), "room%3Aa%2Fb%20c");
    }
}
