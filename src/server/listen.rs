//! Serving a listener's HTTP/1.1 connections with hyper directly rather than through
//! `axum::serve`, which sets no timer: without one hyper cannot time out a request
//! head, and a client sending its headers a byte at a time (slowloris) would hold a
//! connection and its task for ever. Here every request head must arrive within the
//! header-read timeout (`SYNCKIT_HEADER_READ_TIMEOUT`), else the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Refusal};

/// How one listener serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenOptions {
    /// Longest a client may take to send a request's head (line and headers).
    pub(crate) header_read_timeout: Duration,
    /// Disable Nagle's algorithm on accepted sockets (see `set_nodelay`).
    pub(crate) nodelay: bool,
}

/// Accept and serve until `stop` is cancelled; connections still open then are
/// asked to finish their current request. Handlers see the peer address as
/// [`ConnectInfo<SocketAddr>`] and may upgrade (WebSocket).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ListenOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if options.nodelay {
            super::set_nodelay(&stream);
        }
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            options,
            metrics.clone(),
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    options: ListenOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.call(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match served {
        Err(e) if e.is_timeout() => {
            metrics.refused(Refusal::HeaderTimeout);
            tracing::debug!(%peer, "closed an HTTP connection whose request head was too slow");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "HTTP connection ended with an error"),
        Ok(()) => {}
    }
}
