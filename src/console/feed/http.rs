//! A tiny HTTP/1.1 client for the admin API: one request per connection
//! (`Connection: close`), JSON bodies, plain `http://` on loopback or a private
//! network. The admin API needs nothing more, and this keeps a full HTTP client
//! stack out of the binary.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
pub fn authority(address: &str) -> Result<String, HttpError> {
    let rest = address.strip_prefix("http://").unwrap_or(address);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || address.starts_with("https://") {
        return Err(HttpError::Address(address.to_owned()));
    }
    Ok(rest.to_owned())
}

/// Percent-encode one path segment (document and session ids carry `:` and more).
pub fn encode_segment(segment: &str) -> String {
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

/// Send one request and parse the JSON answer: `(status, body)`; a non-JSON body
/// comes back as a JSON string.
pub async fn request(
    address: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Value), HttpError> {
    let host = authority(address)?;
    tokio::time::timeout(timeout, exchange(&host, method, path, bearer))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn exchange(
    host: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<(u16, Value), HttpError> {
    let mut stream = TcpStream::connect(host)
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let mut raw = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError::Malformed("response too large".into()));
        }
    }
    parse_response(&raw)
}

/// Status line, headers, body (content-length, chunked, or to the end).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..split])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed("bad status line".into()))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, value))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| HttpError::Malformed("bad chunk".into()))?;
        let size_text = std::str::from_utf8(&body[..end])
            .map_err(|_| HttpError::Malformed("bad chunk size".into()))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed("bad chunk size".into()))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err(HttpError::Malformed("truncated chunk".into()));
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(
            parse_response(plain),
            Ok((200, serde_json::json!({"a": 1})))
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":2}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked),
            Ok((404, serde_json::json!({"a": 2})))
        );
        assert!(parse_response(b"garbage").is_err());
    }

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
