//! The WebSocket upgrade (RFC 6455 §4.2 over HTTP/1.1), done here rather than by
//! axum's extractor so a connection owns its socket all the way down: after a frame
//! over the size limit the WebSocket library stops reading for good, and letting the
//! peer read our close code then takes draining the raw stream
//! (`connection::linger`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The raw upgraded stream.
type Io = TokioIo<Upgraded>;

/// An upgraded connection, in two halves: the WebSocket library reads frames from
/// `reader`; the connection's writer sends every byte itself on `wire`, frames it
/// built (or a broadcast framed once for all subscribers, `protocol::ws_frame`).
pub struct Socket {
    pub(crate) reader: Box<Reader>,
    pub(crate) wire: Wire,
}

/// The reading half, with the WebSocket library's frame parser and limits.
pub(crate) type Reader = WebSocketStream<ReadSide>;

/// The writing half.
pub(crate) type Wire = WriteHalf<Io>;

/// The reading half as the WebSocket library sees it: reads come from the socket;
/// what the library would write by itself (its automatic pong and close replies) is
/// dropped, because the connection sends those in order with everything else it
/// writes (a second writer would interleave bytes mid-frame).
pub(crate) struct ReadSide(ReadHalf<Io>);

impl AsyncRead for ReadSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The GUID every server appends to the client's key (RFC 6455).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request, not yet answered.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    key: HeaderValue,
}

/// Why a request is not a WebSocket upgrade (answered 400, or 426 for the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnUpgrade(&'static str, StatusCode);

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        let mut response = (self.1, self.0).into_response();
        if self.1 == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl Upgrade {
    /// Take the upgrade out of a request, or say why it is not one.
    pub fn from_request(request: &mut Request) -> Result<Upgrade, NotAnUpgrade> {
        let headers = request.headers();
        if request.method() != Method::GET {
            return Err(NotAnUpgrade(
                "WebSocket upgrades use GET",
                StatusCode::METHOD_NOT_ALLOWED,
            ));
        }
        if !header_has(headers, header::CONNECTION, "upgrade")
            || !header_has(headers, header::UPGRADE, "websocket")
        {
            return Err(NotAnUpgrade(
                "Expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
                StatusCode::BAD_REQUEST,
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(NotAnUpgrade(
                "Sec-WebSocket-Version must be 13",
                StatusCode::UPGRADE_REQUIRED,
            ));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotAnUpgrade(
                "Sec-WebSocket-Key is missing",
                StatusCode::BAD_REQUEST,
            ))?;
        if !valid_key(key.as_bytes()) {
            return Err(NotAnUpgrade(
                "Sec-WebSocket-Key must be 16 bytes in base64",
                StatusCode::BAD_REQUEST,
            ));
        }
        let on_upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade(
                "this connection cannot be upgraded",
                StatusCode::BAD_REQUEST,
            ))?;
        Ok(Upgrade { on_upgrade, key })
    }

    /// Answer 101 and run `serve` on the socket once hyper hands it over.
    pub fn respond<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { on_upgrade, key } = self;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (read, wire) = tokio::io::split(TokioIo::new(upgraded));
                    let reader = WebSocketStream::from_raw_socket(
                        ReadSide(read),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    let socket = Socket {
                        reader: Box::new(reader),
                        wire,
                    };
                    // A task of its own rather than awaited here: this task's state
                    // (the upgrade, the configuration, the closure) would otherwise stay
                    // part of every connection's for its life (BENCHMARKS.md, memory
                    // per idle connection).
                    tokio::spawn(serve(socket));
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let accept = accept_key(key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// A client key is a nonce of 16 bytes in base64 (RFC 6455 §4.1): 24 characters.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

/// `Sec-WebSocket-Accept` for a client key.
fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_are_sixteen_bytes_of_base64() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"short",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ==AAAA",
            b"dGhlIHNhbXBsZSBub25jZ!==",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn upgrade_headers_are_token_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has(&h, header::CONNECTION, "upgrade"));
        assert!(!header_has(&h, header::UPGRADE, "websocket"));
    }
}
