//! One WebSocket connection: admission, the read loop (frames → session), the writer
//! task (outbox → socket), heartbeat, auth timeout, and an orderly close.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::{Sink, SinkExt};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::live::{LiveGuard, LiveSession};
use super::registry::Admission;
use super::upgrade::Socket;
use super::AppState;
use crate::metrics::Refusal;
use crate::protocol::errors::close;
use crate::protocol::EncodedFrame;
use crate::sync::peer::Outbox;
use crate::sync::session::CloseRequest;
use crate::sync::{Outgoing, Peer, Session};

/// Close reason sent to a session an administrator disconnected (with 1008).
pub const DISCONNECTED_BY_ADMIN: &str = "Disconnected by an administrator";

/// How long a closing connection waits for its writer to send what is queued.
const WRITER_DRAIN: Duration = Duration::from_secs(2);

/// How long a closing connection keeps reading after its close frame, so the peer
/// gets to read the close code (see [`linger`]).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A deadline far enough away to mean "none" (a year).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Drive one upgraded socket until it closes: admission, then `serve_admitted`.
///
/// Not an `async fn`: one keeps its arguments in its state for its whole life, and
/// the socket (328 bytes) would have stayed in every connection's future after being
/// split into its two halves (BENCHMARKS.md, memory per idle connection).
pub fn serve_socket(
    state: Arc<AppState>,
    socket: Socket,
    ip: IpAddr,
    user_agent: Option<String>,
    query_token: Option<String>,
) -> impl std::future::Future<Output = ()> + Send {
    let metrics = &state.sync.metrics;
    match state.registry.admit(ip, &state.config) {
        Ok(admission) => {
            let (sink, stream) = socket.split();
            Either::Right(serve_admitted(
                state,
                admission,
                sink,
                stream,
                ip,
                user_agent,
                query_token,
            ))
        }
        Err((code, reason)) => {
            if reason == close::TOO_MANY_FROM_IP {
                metrics.connections_rejected_per_ip.inc();
                tracing::warn!(%ip, "[SECURITY] Connection limit exceeded for IP: {ip}");
            } else {
                metrics.connections_rejected_capacity.inc();
                tracing::warn!(%ip, "connection refused: server at maximum capacity");
            }
            Either::Left(refuse(socket, code, reason))
        }
    }
}

/// Send a refused connection its close frame and let the peer read it.
async fn refuse(mut socket: Socket, code: u16, reason: &'static str) {
    let _ = socket.send(close_message(code, reason)).await;
    Box::pin(linger(socket, true)).await;
}

/// An admitted connection, from its first frame to its close. A function returning
/// an `async move` block, not an `async fn`: that would keep a second copy of every
/// argument in the connection's state for its whole life.
#[allow(clippy::manual_async_fn)] // the point: see above
fn serve_admitted(
    state: Arc<AppState>,
    admission: Admission,
    sink: SplitSink<Socket, Message>,
    mut stream: SplitStream<Socket>,
    ip: IpAddr,
    user_agent: Option<String>,
    query_token: Option<String>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let metrics = state.sync.metrics.clone();
        metrics.connections_accepted.inc();
        metrics.connections_open.inc();
        let conn_id = state.next_conn_id();

        let (peer, outbox) = Peer::new(conn_id);
        let writer = tokio::spawn(write_loop(
            sink,
            outbox,
            peer.overflowed().clone(),
            state.config.write_timeout,
            metrics.clone(),
        ));
        let now_ms = state.sync.now_ms();
        let live = state.live.register(LiveSession {
            id: format!("{}:conn-{conn_id}", state.instance_id()),
            conn_id,
            user: None,
            client: user_agent.clone(),
            remote_ip: ip.to_string(),
            connected_at_ms: now_ms,
            last_seen_ms: now_ms,
            subscriptions: Vec::new(),
        });
        let mut session = Session::new(
            state.sync.clone(),
            peer.clone(),
            ip.to_string(),
            user_agent,
            Instant::now(),
        );
        session.persist_session();
        let rejected_token = match &query_token {
            Some(token) => Box::pin(session.authenticate_query_token(token, Instant::now()))
                .await
                .err(),
            None => None,
        };

        let heartbeat_every = state.config.heartbeat_interval;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let auth_deadline = tokio::time::sleep(state.config.auth_timeout);
        tokio::pin!(auth_deadline);
        let mut last_received = Instant::now();
        // The three reasons to end from outside, each polled in place for the connection's
        // life: a `cancelled()` future made inside the loop registered and removed a waiter
        // on its token (a lock each way) for every frame and every ack.
        let shutting_down = state.connections_cancel.clone().cancelled_owned();
        let kicked = live.kicked().clone().cancelled_owned();
        let overflowed = peer.overflowed().clone().cancelled_owned();
        tokio::pin!(shutting_down, kicked, overflowed);

        // The session ends when its token expires; re-authentication moves the deadline.
        let never = Instant::now() + NO_DEADLINE;
        let token_deadline = tokio::time::sleep_until(never);
        tokio::pin!(token_deadline);
        let mut expiry_shown: Option<i64> = None;

        // A frame's handling is boxed (below), like the rare steps (query-token check,
        // close, linger): their futures, with every handler nested in them, were most of
        // this one's size, and this one lives as long as the connection — boxed, an idle
        // connection does not carry them (BENCHMARKS.md, memory per idle connection).
        // Whether the WebSocket layer can still read (for the linger after a close).
        let mut stream_readable = true;
        // What the live-session entry last showed: it is refreshed only when these move.
        let mut shown: (Option<String>, usize) = (None, usize::MAX);
        let close_with: Option<(u16, &'static str)> = loop {
            if let Some(CloseRequest { code, reason }) = rejected_token {
                break Some((code, reason));
            }
            if session.expires_at_secs() != expiry_shown {
                expiry_shown = session.expires_at_secs();
                token_deadline
                    .as_mut()
                    .reset(expiry_shown.map_or(never, |secs| {
                        instant_at_epoch_secs(secs, state.sync.now_ms())
                    }));
            }
            let user = session.identity().map(|i| i.user_id.as_str());
            let subscribed = session.subscriptions().count();
            if user != shown.0.as_deref() || subscribed != shown.1 {
                live.update(user, &mut session.subscriptions());
                shown = (user.map(str::to_owned), subscribed);
            }
            tokio::select! {
                _ = &mut shutting_down => break Some((close::GOING_AWAY, close::SERVER_SHUTDOWN)),
                _ = &mut kicked => {
                    tracing::info!(conn_id, "session disconnected by an administrator");
                    break Some((close::POLICY, DISCONNECTED_BY_ADMIN));
                }
                _ = &mut overflowed => {
                    tracing::warn!(conn_id, "closing a client that reads too slowly");
                    break None;
                }
                ack = session.next_ack() => session.reply(&ack).await,
                // Backpressure: while this connection's own replies wait unsent, or its
                // queue of acks is at its bound (docs/protocol.md §7.11), its socket is
                // not read (it is never closed for them).
                _ = peer.room(), if peer.own_backlogged() => {}
                frame = stream.next(), if !peer.own_backlogged() && !session.acks_full() => {
                    let Some(frame) = frame else { break None };
                    last_received = Instant::now();
                    let now_ms = state.sync.now_ms();
                    // The session reads no clock: it is handed the time the frame came.
                    match Box::pin(on_frame(&mut session, frame, &live, last_received, now_ms, &metrics)).await {
                        FrameOutcome::Handled => {}
                        FrameOutcome::End { close, readable } => {
                            stream_readable = readable;
                            break close;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_received.elapsed() >= state.config.heartbeat_timeout {
                        metrics.refused(Refusal::HeartbeatTimeout);
                        break Some((close::POLICY, close::HEARTBEAT_TIMEOUT));
                    }
                    peer.send_own(Outgoing::Ping);
                    session.touch();
                    session.sweep(Instant::now());
                }
                _ = &mut auth_deadline, if state.config.sync.auth_required && !session.is_authenticated() => {
                    metrics.refused(Refusal::NotAuthenticated);
                    break Some((close::POLICY, crate::protocol::errors::AUTHENTICATION_TIMEOUT));
                }
                _ = &mut token_deadline, if expiry_shown.is_some() => {
                    metrics.refused(Refusal::TokenExpired);
                    tracing::info!(conn_id, "closing a session whose token expired");
                    break Some((close::POLICY, close::TOKEN_EXPIRED));
                }
            }
        };

        // Acks of writes already applied are sent before the close frame: an ack is a
        // promise the client relies on, and shutdown drains storage before exiting.
        if close_with.is_some() {
            let budget = tokio::time::sleep(state.config.shutdown_timeout);
            tokio::pin!(budget);
            while session.has_pending_acks() {
                tokio::select! {
                    ack = session.next_ack() => session.reply(&ack).await,
                    _ = &mut budget => break,
                }
            }
        }
        Box::pin(session.close()).await;
        if let Some((code, reason)) = close_with {
            peer.send_own(Outgoing::Close {
                code,
                reason: reason.into(),
            });
        } else if peer.overflowed().is_cancelled() {
            metrics.slow_clients_closed.inc();
            metrics.refused(Refusal::SlowClient);
        }
        drop(session);
        drop(peer);
        // A writer still busy after the drain is left to finish on its own (a client
        // that reads late still gets its close frame): every socket write it makes is
        // bounded by the write timeout, so it cannot hold the socket for ever.
        let written = tokio::time::timeout(WRITER_DRAIN, writer).await;
        // The connection is over for the server (its slot, its live entry, its gauge);
        // only the socket waits for the peer to read the close.
        drop(live);
        drop(admission);
        metrics.connections_open.dec();
        tracing::debug!(conn_id, "connection closed");
        if let (Some(_), Ok(Ok(sink))) = (close_with, written) {
            if let Ok(socket) = stream.reunite(sink) {
                Box::pin(linger(socket, stream_readable)).await;
            }
        }
    }
}

/// What a frame from the socket did to the connection.
enum FrameOutcome {
    /// Handled; the connection goes on.
    Handled,
    /// The connection ends: with this close frame of ours (`None`: none), and whether
    /// the WebSocket layer can still read (for the linger).
    End {
        close: Option<(u16, &'static str)>,
        readable: bool,
    },
}

/// Handle one frame the client sent (or the error reading it). Boxed by the caller:
/// with every handler nested in it, this future was most of the connection's size,
/// and an idle connection need not carry it (BENCHMARKS.md, memory per idle
/// connection).
async fn on_frame(
    session: &mut Session,
    frame: Result<Message, tungstenite::Error>,
    live: &LiveGuard,
    now: Instant,
    now_ms: i64,
    metrics: &crate::metrics::Metrics,
) -> FrameOutcome {
    let handled = match frame {
        Ok(Message::Text(text)) => {
            live.seen(now_ms);
            session.handle_frame(true, text.as_bytes(), now).await
        }
        Ok(Message::Binary(bytes)) => {
            live.seen(now_ms);
            session.handle_frame(false, &bytes, now).await
        }
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
            live.seen(now_ms);
            Ok(())
        }
        Ok(Message::Close(_)) => {
            return FrameOutcome::End {
                close: None,
                readable: true,
            }
        }
        Err(e) => {
            // The WebSocket layer reads no more after an error.
            let close = is_over_size_limit(&e).then(|| {
                metrics.refused(Refusal::FrameTooLarge);
                (close::TOO_BIG, close::MESSAGE_TOO_LARGE)
            });
            return FrameOutcome::End {
                close,
                readable: false,
            };
        }
    };
    match handled {
        Ok(()) => FrameOutcome::Handled,
        Err(CloseRequest { code, reason }) => FrameOutcome::End {
            close: Some((code, reason)),
            readable: true,
        },
    }
}

/// After our close frame: read and discard what the peer still sends until it
/// answers the close (or goes away, or [`CLOSE_LINGER`] passes). Closing the socket
/// with unread input makes the kernel send a reset, and a reset makes the peer's
/// kernel drop our close frame before the client reads it: a client that was still
/// sending would see 1006 instead of the code we sent. When the WebSocket layer can
/// no longer read (after a frame over the size limit), the raw stream is drained.
async fn linger(mut socket: Socket, readable: bool) {
    let drain = async {
        if readable {
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Close(_)) => return,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
        // On the heap, and only now: an array here would be part of every
        // connection's task for its whole life.
        let mut scratch = vec![0u8; 8192];
        let raw = socket.get_mut();
        while matches!(raw.read(&mut scratch).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: Utf8Bytes::from(reason),
    }))
}

/// The instant (on tokio's clock) of an epoch-seconds time, for token expiry, given
/// the wall time now.
fn instant_at_epoch_secs(secs: i64, now_ms: i64) -> Instant {
    let remaining_ms = secs.saturating_mul(1000).saturating_sub(now_ms);
    let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
    Instant::now() + remaining.min(NO_DEADLINE)
}

/// Whether a read failed because a frame or message exceeded the configured limit
/// (answered with close 1009) rather than because the peer went away.
fn is_over_size_limit(error: &tungstenite::Error) -> bool {
    let over = matches!(error, tungstenite::Error::Capacity(_));
    if !over {
        tracing::debug!(error = %error, "socket error");
    }
    over
}

/// The writer task; hands its half of the socket back when done, for the linger.
/// A socket write that waits longer than `write_timeout` (the client stopped
/// reading) marks the peer too slow, which closes the connection — also while its
/// socket is not being read for backpressure — and the writer gives the socket up:
/// nothing is left waiting on a client that does not read.
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    rx: Outbox,
    overflowed: CancellationToken,
    write_timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) -> SplitSink<Socket, Message> {
    let stalled = write_all(&mut sink, rx, &overflowed, write_timeout, &metrics).await;
    if stalled.is_err() {
        tracing::warn!(
            timeout = ?write_timeout,
            "closing a client that stopped reading: a socket write stalled"
        );
        overflowed.cancel();
    }
    sink
}

/// A socket write (feed, send or flush) that did not finish within the write timeout.
struct Stalled;

/// Bound one socket operation by the write timeout. Most operations finish on
/// their first poll (a feed into the WebSocket layer's write buffer), so the timer
/// is only set up for one that has to wait: a timer per fed frame was a measurable
/// part of the cost of a delivery (BENCHMARKS.md "Where the time went").
async fn bounded<T>(
    write_timeout: Duration,
    op: impl std::future::Future<Output = T>,
) -> Result<T, Stalled> {
    let mut op = std::pin::pin!(op);
    let first = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first {
        return Ok(done);
    }
    // Boxed: the timer is rare here, and inline it would be part of the writer task's
    // state for the connection's life (BENCHMARKS.md, memory per idle connection).
    Box::pin(tokio::time::timeout(write_timeout, op))
        .await
        .map_err(|_| Stalled)
}

async fn write_all(
    sink: &mut SplitSink<Socket, Message>,
    mut rx: Outbox,
    overflowed: &CancellationToken,
    write_timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> Result<(), Stalled> {
    // One cancellation future for the task's life, not one per outbox wake: each
    // new one registers with the token and unregisters when dropped, a cost paid per
    // delivery batch (BENCHMARKS.md "Against a minimal broadcast server").
    let cancelled = overflowed.cancelled();
    tokio::pin!(cancelled);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancelled => {
                let close = close_message(close::TRY_AGAIN_LATER, close::SLOW_CLIENT);
                let _ = bounded(write_timeout, sink.send(close)).await?;
                return Ok(());
            }
            item = rx.recv() => item,
        };
        let Some(mut item) = item else {
            let _ = bounded(write_timeout, sink.close()).await?;
            return Ok(());
        };
        // Feed everything already queued, then flush once: one syscall for a burst.
        loop {
            match write_item(sink, item, write_timeout, metrics).await? {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    let _ = bounded(write_timeout, sink.flush()).await?;
                    return Ok(());
                }
            }
            match rx.try_recv() {
                Some(next) => item = next,
                None => break,
            }
        }
        if bounded(write_timeout, sink.flush()).await?.is_err() {
            return Ok(());
        }
    }
}

/// Returns Ok(false) after a close frame (nothing more may be sent). Each socket
/// operation is bounded by the write timeout on its own, so a long broadcast to a
/// slow but reading client is not cut short.
async fn write_item(
    sink: &mut SplitSink<Socket, Message>,
    item: Outgoing,
    write_timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> Result<Result<bool, tungstenite::Error>, Stalled> {
    let fed = match item {
        Outgoing::Frame(frame) => {
            metrics.bytes_out.add(frame.len() as u64);
            bounded(write_timeout, sink.feed(to_message(frame))).await?
        }
        Outgoing::Frames(frames) => {
            // One shared counter update per item, not per frame.
            let bytes: usize = frames.iter().map(EncodedFrame::len).sum();
            metrics.bytes_out.add(bytes as u64);
            feed_frames(sink, &frames, write_timeout).await?
        }
        Outgoing::Ping => {
            let ping = Message::Ping(Default::default());
            bounded(write_timeout, sink.feed(ping)).await?
        }
        Outgoing::Close { code, reason } => {
            let close = close_message(code, &reason);
            let sent = bounded(write_timeout, sink.send(close)).await?;
            return Ok(sent.map(|()| false));
        }
    };
    Ok(fed.map(|()| true))
}

/// Feed a window's frames into the WebSocket layer: as many per poll as it takes, so
/// a frame costs a `poll_ready` and a `start_send`, not a future, a `select` and a
/// timer check of its own (BENCHMARKS.md "Where the time went"). Each wait for the
/// socket is still bounded by the write timeout on its own: progress starts a new
/// bound, so a long broadcast to a slow but reading client is not cut short.
async fn feed_frames(
    sink: &mut SplitSink<Socket, Message>,
    frames: &[EncodedFrame],
    write_timeout: Duration,
) -> Result<Result<(), tungstenite::Error>, Stalled> {
    let mut next = 0;
    while next < frames.len() {
        let step = std::future::poll_fn(|cx| {
            let start = next;
            while let Some(frame) = frames.get(next) {
                match Pin::new(&mut *sink).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // Waiting: after progress, a new bound starts with the next step.
                    Poll::Pending if next > start => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
                Pin::new(&mut *sink).start_send(to_message(frame.clone()))?;
                next += 1;
            }
            Poll::Ready(Ok(()))
        });
        if let Err(e) = bounded(write_timeout, step).await? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

fn to_message(frame: EncodedFrame) -> Message {
    match frame {
        EncodedFrame::Binary(bytes) => Message::Binary(bytes),
        EncodedFrame::Text(text) => Message::Text(Utf8Bytes::from(text)),
    }
}
