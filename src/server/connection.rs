//! One WebSocket connection: admission, the read loop (frames → session), the writer
//! task (outbox → socket), heartbeat, auth timeout, and an orderly close.

use std::io::IoSlice;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, FutureExt};
use futures_util::stream::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::carry_out::{carry_out, deliver, send_reply};
use super::live::{LiveGuard, LiveSession};
use super::registry::Admission;
use super::upgrade::{Reader, Socket, Wire};
use super::AppState;
use crate::metrics::Refusal;
use crate::protocol::errors::close;
use crate::protocol::ws_frame;
use crate::sync::peer::Outbox;
use crate::sync::session::{CloseRequest, Reply};
use crate::sync::{Outgoing, Peer, Session, SyncService};

/// Close reason sent to a session an administrator disconnected (with 1008).
pub const DISCONNECTED_BY_ADMIN: &str = "Disconnected by an administrator";

/// How long a closing connection waits for its writer to send what is queued.
const WRITER_DRAIN: Duration = Duration::from_secs(2);

/// How long a closing connection keeps reading after its close frame, so the peer
/// gets to read the close code (see [`linger`]).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A deadline far enough away to mean "none" (a year).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most outbox items the writer gathers into one socket write.
const MAX_BURST: usize = 64;

/// Drive one upgraded socket until it closes: admission, then the [`Connection`].
///
/// Not an `async fn`: one keeps its arguments in its state for its whole life, and
/// the socket would have stayed in every connection's future after being taken
/// apart into its two halves (BENCHMARKS.md, memory per idle connection).
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
            let Socket { reader, wire } = socket;
            // The admitted connection, from its first frame to its close. Not an
            // `async move` block: a block keeps what it captured in its state for its
            // whole life, and most of these values only go into the opening. `lazy`'s
            // closure holds them until the first poll, opens the connection there and
            // hands back its future, which `flatten` runs in the closure's place: the
            // connection's state holds only what its life needs.
            let admitted = futures_util::future::lazy(move |_| {
                Connection::open(state, admission, reader, wire, ip, user_agent)
                    .serve(query_token)
            });
            Either::Right(admitted.flatten())
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
async fn refuse(socket: Socket, code: u16, reason: &'static str) {
    let Socket { reader, mut wire } = socket;
    let close = ws_frame::close(Some(code), reason);
    if let Ok(Ok(())) = tokio::time::timeout(CLOSE_LINGER, wire.write_all(&close)).await {
        Box::pin(linger(reader, true)).await;
    }
}

/// A close frame of ours: its code and reason.
type CloseFrame = (u16, &'static str);

/// One admitted connection's state, for its whole life: its session, its side of
/// the outbox, its live-session entry, its slot and its socket's read half. The
/// loop's timers are not here: they are pinned in [`Connection::run_until_close`],
/// the only place they are polled.
struct Connection {
    state: Arc<AppState>,
    metrics: Arc<crate::metrics::Metrics>,
    conn_id: u64,
    session: Session,
    peer: Arc<Peer>,
    live: LiveGuard,
    /// The connection's slot in the registry, given back at the close.
    admission: Admission,
    reader: Box<Reader>,
    writer: tokio::task::JoinHandle<()>,
    /// When the client last sent a frame (for the heartbeat timeout).
    last_received: Instant,
    /// The token expiry the deadline was last set for.
    expiry_shown: Option<i64>,
    /// What the live-session entry last showed (user, subscription count): it is
    /// refreshed only when these move.
    shown: (Option<String>, usize),
    /// Whether the WebSocket layer can still read (for the linger after a close).
    readable: bool,
}

impl Connection {
    /// Set up an admitted connection: its outbox and the writer task, its
    /// live-session entry and its session.
    fn open(
        state: Arc<AppState>,
        admission: Admission,
        reader: Box<Reader>,
        wire: Wire,
        ip: IpAddr,
        user_agent: Option<String>,
    ) -> Self {
        let metrics = state.sync.metrics.clone();
        metrics.connections_accepted.inc();
        metrics.connections_open.inc();
        let conn_id = state.next_conn_id();

        let (peer, outbox) =
            Peer::with_broadcast_budget(conn_id, state.config.max_queued_broadcasts);
        let writer = tokio::spawn(write_loop(
            wire,
            outbox,
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
        // Its session row: nothing to wait for.
        let _ = deliver(&state.sync, &peer, session.start());
        Connection {
            state,
            metrics,
            conn_id,
            session,
            peer,
            live,
            admission,
            reader,
            writer,
            last_received: Instant::now(),
            expiry_shown: None,
            shown: (None, usize::MAX),
            readable: true,
        }
    }

    /// The connection's life: the query token's check, the loop, the close. Not an
    /// `async fn`, which would keep a second copy of the connection in its state.
    #[allow(clippy::manual_async_fn)] // the point: see above
    fn serve(
        mut self,
        query_token: Option<String>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            // Boxed, like every rare step (this check, the close) and a frame's
            // handling (in the loop): their futures, with every handler nested in
            // them, were most of this one's size, and this one lives as long as the
            // connection — boxed, an idle connection does not carry them
            // (BENCHMARKS.md, memory per idle connection).
            let rejected = match &query_token {
                Some(token) => {
                    let now = Instant::now();
                    let outcome = self.session.authenticate_query_token(token, now);
                    let checked = carry_out(&self.state.sync, &self.peer, &mut self.session, outcome, now);
                    Box::pin(checked).await.err()
                }
                None => None,
            };
            let close_with = match rejected {
                Some(CloseRequest { code, reason }) => Some((code, reason)),
                None => self.run_until_close().await,
            };
            Box::pin(self.close(close_with)).await;
        }
    }

    /// Read and answer the client until the connection is to end, and say with which
    /// close frame of ours (`None`: none — the client closed or went away, or reads
    /// too slowly for one). An `async fn`: its one argument is a reference, so there
    /// is no copy to keep, and its timers live in its future only while it runs.
    async fn run_until_close(&mut self) -> Option<CloseFrame> {
        let heartbeat_every = self.state.config.heartbeat_interval;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The heartbeat timeout counts from here, after the query token's check.
        self.last_received = Instant::now();
        // The three reasons to end from outside, each polled in place for the connection's
        // life: a `cancelled()` future made inside the loop registered and removed a waiter
        // on its token (a lock each way) for every frame and every ack.
        let shutting_down = self.state.connections_cancel.clone().cancelled_owned();
        let kicked = self.live.kicked().clone().cancelled_owned();
        let overflowed = self.peer.overflowed().clone().cancelled_owned();
        // The session ends when its token expires; re-authentication moves the deadline.
        let never = Instant::now() + NO_DEADLINE;
        // The session says when an unauthenticated connection is closed.
        let auth_deadline = tokio::time::sleep_until(self.session.auth_deadline().unwrap_or(never));
        let token_deadline = tokio::time::sleep_until(never);
        tokio::pin!(
            auth_deadline,
            shutting_down,
            kicked,
            overflowed,
            token_deadline
        );
        loop {
            self.follow_token_expiry(token_deadline.as_mut(), never);
            self.refresh_live_entry();
            // A broadcast of this connection's writes crowded a subscriber: let the
            // subscribers' writers run before reading another frame (src/sync/peer.rs).
            if self.peer.take_pace_request() {
                self.metrics.writers_paced.inc();
                tokio::task::yield_now().await;
            }
            tokio::select! {
                _ = &mut shutting_down => return Some((close::GOING_AWAY, close::SERVER_SHUTDOWN)),
                _ = &mut kicked => {
                    tracing::info!(conn_id = self.conn_id, "session disconnected by an administrator");
                    return Some((close::POLICY, DISCONNECTED_BY_ADMIN));
                }
                _ = &mut overflowed => {
                    tracing::warn!(conn_id = self.conn_id, "closing a client that reads too slowly");
                    return None;
                }
                ack = self.session.next_ack() => send_reply(&self.state.sync, &self.peer, Reply { msg: ack, id: None }),
                // Backpressure: while this connection's own replies wait unsent, or its
                // queue of acks is at its bound (docs/protocol.md §7.11), its socket is
                // not read (it is never closed for them).
                _ = self.peer.room(), if self.peer.own_backlogged() => {}
                frame = self.reader.next(), if !self.peer.own_backlogged() && !self.session.acks_full() => {
                    // No frame: the client went away, and gets no close frame.
                    let frame = frame?;
                    self.last_received = Instant::now();
                    // The session reads no clock: it is handed the time the frame came.
                    let now_ms = self.state.sync.now_ms();
                    let handled = on_frame(&self.state.sync, &mut self.session, &self.peer, frame, &self.live, self.last_received, now_ms);
                    if let FrameOutcome::End { close, readable } = Box::pin(handled).await {
                        self.readable = readable;
                        return close;
                    }
                }
                _ = heartbeat.tick() => {
                    if let Some(close) = self.on_heartbeat() {
                        return Some(close);
                    }
                }
                _ = &mut auth_deadline, if self.session.auth_deadline().is_some() => {
                    match self.session.on_auth_deadline(Instant::now()) {
                        Some(CloseRequest { code, reason }) => return Some((code, reason)),
                        // Woken before the deadline: wait for the rest of it.
                        None => auth_deadline.as_mut().reset(self.session.auth_deadline().unwrap_or(never)),
                    }
                }
                _ = &mut token_deadline, if self.expiry_shown.is_some() => {
                    self.metrics.refused(Refusal::TokenExpired);
                    tracing::info!(conn_id = self.conn_id, "closing a session whose token expired");
                    return Some((close::POLICY, close::TOKEN_EXPIRED));
                }
            }
        }
    }

    /// Move the token-expiry deadline to the session's expiry, if it changed (an
    /// authentication or a re-authentication); `never` when it has none.
    fn follow_token_expiry(&mut self, deadline: Pin<&mut tokio::time::Sleep>, never: Instant) {
        let expiry = self.session.expires_at_secs();
        if expiry != self.expiry_shown {
            self.expiry_shown = expiry;
            deadline.reset(expiry.map_or(never, |secs| {
                instant_at_epoch_secs(secs, self.state.sync.now_ms())
            }));
        }
    }

    /// Show the session's user and subscriptions in its live-session entry, when
    /// they moved since it was last shown.
    fn refresh_live_entry(&mut self) {
        let user = self.session.identity().map(|i| i.user_id.as_str());
        let subscribed = self.session.subscriptions().count();
        if user != self.shown.0.as_deref() || subscribed != self.shown.1 {
            self.live.update(user, &mut self.session.subscriptions());
            self.shown = (user.map(str::to_owned), subscribed);
        }
    }

    /// A heartbeat tick: end a connection the client has not sent on for the
    /// heartbeat timeout, or ping it and let the session sweep.
    fn on_heartbeat(&mut self) -> Option<CloseFrame> {
        if self.last_received.elapsed() >= self.state.config.heartbeat_timeout {
            self.metrics.refused(Refusal::HeartbeatTimeout);
            return Some((close::POLICY, close::HEARTBEAT_TIMEOUT));
        }
        self.peer.send_own(Outgoing::Ping);
        let outcome = self.session.on_heartbeat(Instant::now());
        let _ = deliver(&self.state.sync, &self.peer, outcome);
        None
    }

    /// The orderly close: the acks still owed, the session's close, our close frame
    /// (if any), the writer's drain, the slot given back, and the linger. Boxed by
    /// the caller, like every rare step: it takes the connection by value, and inline
    /// it would be a second connection in the connection's state. Not an `async fn`
    /// (like [`Connection::serve`]): that would copy the connection inside its future.
    #[allow(clippy::manual_async_fn)] // the point: see above
    fn close(
        mut self,
        close_with: Option<CloseFrame>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            if close_with.is_some() {
                let budget = self.state.config.shutdown_timeout;
                let drained = drain_acks(&self.state.sync, &self.peer, &mut self.session, budget);
                // Boxed on its own as well: the rest of the close (the writer's drain, the
                // linger) can wait seconds, and need not keep this step's state meanwhile.
                Box::pin(drained).await;
            }
            let _ = deliver(&self.state.sync, &self.peer, self.session.close());
            if let Some((code, reason)) = close_with {
                self.peer.send_own(Outgoing::Close {
                    code: Some(code),
                    reason: reason.into(),
                });
            } else if self.peer.overflowed().is_cancelled() {
                self.metrics.slow_clients_closed.inc();
                self.metrics.refused(Refusal::SlowClient);
            }
            drop(self.session);
            drop(self.peer);
            // A writer still busy after the drain is left to finish on its own (a client
            // that reads late still gets its close frame): every socket write it makes
            // is bounded by the write timeout, so it cannot hold the socket for ever.
            let written = tokio::time::timeout(WRITER_DRAIN, self.writer).await;
            // The connection is over for the server (its slot, its live entry, its
            // gauge); only the socket waits for the peer to read the close.
            drop(self.live);
            drop(self.admission);
            self.metrics.connections_open.dec();
            tracing::debug!(conn_id = self.conn_id, "connection closed");
            if let (Some(_), Ok(Ok(()))) = (close_with, written) {
                linger(self.reader, self.readable).await;
            }
        }
    }
}

/// Send the acks of writes already applied before the close frame, within `budget`:
/// an ack is a promise the client relies on, and shutdown drains storage before
/// exiting.
async fn drain_acks(svc: &SyncService, peer: &Peer, session: &mut Session, budget: Duration) {
    let budget = tokio::time::sleep(budget);
    tokio::pin!(budget);
    while session.has_pending_acks() {
        tokio::select! {
            ack = session.next_ack() => send_reply(svc, peer, Reply { msg: ack, id: None }),
            _ = &mut budget => break,
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
        close: Option<CloseFrame>,
        readable: bool,
    },
}

/// Handle one frame the client sent (or the error reading it). Boxed by the caller:
/// with every handler nested in it, this future was most of the connection's size,
/// and an idle connection need not carry it (BENCHMARKS.md, memory per idle
/// connection).
async fn on_frame(
    svc: &Arc<SyncService>,
    session: &mut Session,
    peer: &Peer,
    frame: Result<Message, tungstenite::Error>,
    live: &LiveGuard,
    now: Instant,
    now_ms: i64,
) -> FrameOutcome {
    let handled = match frame {
        Ok(Message::Text(text)) => {
            live.seen(now_ms);
            let outcome = session.handle_frame(true, text.as_bytes(), now);
            carry_out(svc, peer, session, outcome, now).await
        }
        Ok(Message::Binary(bytes)) => {
            live.seen(now_ms);
            let outcome = session.handle_frame(false, &bytes, now);
            carry_out(svc, peer, session, outcome, now).await
        }
        Ok(Message::Ping(payload)) => {
            // The WebSocket library reads but does not write: the pong is ours.
            live.seen(now_ms);
            peer.send_own(Outgoing::Pong(payload));
            Ok(())
        }
        Ok(Message::Pong(_) | Message::Frame(_)) => {
            live.seen(now_ms);
            Ok(())
        }
        Ok(Message::Close(frame)) => {
            // The answer to the client's close: its code and reason echoed (the
            // library has put 1002 in place of a code a peer may not send), or a
            // close with no code for one that had none. Nothing is sent after it.
            let (code, reason) = match frame {
                Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                None => (None, String::new()),
            };
            peer.send_own(Outgoing::Close {
                code,
                reason: reason.into(),
            });
            return FrameOutcome::End {
                close: None,
                readable: true,
            };
        }
        Err(e) => {
            // The WebSocket layer reads no more after an error.
            let close = is_over_size_limit(&e).then(|| {
                svc.metrics.refused(Refusal::FrameTooLarge);
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
async fn linger(mut reader: Box<Reader>, readable: bool) {
    let drain = async {
        if readable {
            while let Some(message) = reader.next().await {
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
        let raw = reader.get_mut();
        while matches!(raw.read(&mut scratch).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
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

/// The writer task: sends the outbox's items, in order, as the socket's only writer.
/// A socket write that waits longer than `write_timeout` (the client stopped
/// reading) marks the peer too slow, which closes the connection — also while its
/// socket is not being read for backpressure — and the writer gives the socket up:
/// nothing is left waiting on a client that does not read.
async fn write_loop(
    mut wire: Wire,
    mut rx: Outbox,
    write_timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let stalled = write_all(&mut wire, &mut rx, write_timeout, &metrics).await;
    if stalled.is_err() {
        tracing::warn!(
            timeout = ?write_timeout,
            "closing a client that stopped reading: a socket write stalled"
        );
        rx.mark_slow();
    }
}

/// A socket write that did not finish within the write timeout.
struct Stalled;

/// Bound one socket operation by the write timeout. Most operations finish on
/// their first poll (the kernel takes the bytes), so the timer is only set up for
/// one that has to wait: a timer per write was a measurable part of the cost of a
/// delivery (BENCHMARKS.md "Where the time went").
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

/// Send the outbox until it ends, a close frame is sent or the socket fails.
async fn write_all(
    wire: &mut Wire,
    rx: &mut Outbox,
    write_timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> Result<(), Stalled> {
    // One cancellation future for the task's life, not one per outbox wake: each
    // new one registers with the token and unregisters when dropped, a cost paid per
    // delivery batch (BENCHMARKS.md "Against a minimal broadcast server").
    let overflowed = rx.overflowed().clone();
    let cancelled = overflowed.cancelled();
    tokio::pin!(cancelled);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancelled => {
                let close = ws_frame::close(Some(close::TRY_AGAIN_LATER), close::SLOW_CLIENT);
                let _ = write_burst(wire, &[close], write_timeout).await?;
                return Ok(());
            }
            item = rx.recv() => item,
        };
        let Some(item) = item else { return Ok(()) };
        let (first, mut closed) = to_wire(item, metrics);
        // What is already queued goes out in the same write (one syscall for a
        // burst), taken from the outbox under one lock.
        let mut rest = Vec::new();
        if !closed {
            rx.try_recv_many(MAX_BURST - 1, &mut rest);
        }
        let written = if rest.is_empty() {
            write_burst(wire, std::slice::from_ref(&first), write_timeout).await?
        } else {
            let mut burst = Vec::with_capacity(1 + rest.len());
            burst.push(first);
            for item in rest {
                // Nothing queued after a close frame is sent.
                if !closed {
                    let (bytes, close) = to_wire(item, metrics);
                    burst.push(bytes);
                    closed = close;
                }
            }
            write_burst(wire, &coalesced(burst), write_timeout).await?
        };
        if closed || written.is_err() {
            return Ok(());
        }
    }
}

/// A burst of small frames (at most this many bytes in all) is copied into one
/// buffer before it is written.
const COALESCE_MAX_BYTES: usize = 64 * 1024;

/// A burst as the buffers to write: several small frames joined into one, larger
/// ones as they are. The kernel copies one contiguous buffer into the socket
/// faster than tens of ~200-byte iovecs (one per delta when batching is off), and
/// the copy here costs less than it saves (BENCHMARKS.md, "A binary delta read into
/// its members; small frames joined before the write").
fn coalesced(burst: Vec<Bytes>) -> Vec<Bytes> {
    let total: usize = burst.iter().map(Bytes::len).sum();
    if burst.len() < 2 || total > COALESCE_MAX_BYTES {
        return burst;
    }
    let mut joined = Vec::with_capacity(total);
    for bytes in &burst {
        joined.extend_from_slice(bytes);
    }
    vec![Bytes::from(joined)]
}

/// An outbox item's bytes on the wire, and whether it is our close frame (after
/// which nothing may be sent). A broadcast is already framed; it is sent as it is.
fn to_wire(item: Outgoing, metrics: &crate::metrics::Metrics) -> (Bytes, bool) {
    match item {
        Outgoing::Frames(framed) => {
            metrics.bytes_out.add(framed.payload_len() as u64);
            (framed.into_wire(), false)
        }
        Outgoing::Frame(frame) => {
            metrics.bytes_out.add(frame.len() as u64);
            (ws_frame::data(&frame), false)
        }
        Outgoing::Ping => (ws_frame::ping(), false),
        Outgoing::Pong(payload) => (ws_frame::pong(&payload), false),
        Outgoing::Close { code, reason } => (ws_frame::close(code, &reason), true),
    }
}

/// Write every byte of `burst`, in order, with as few syscalls as the socket allows
/// (vectored). Each wait for the socket is bounded by the write timeout on its own:
/// progress starts a new bound, so a long write to a slow but reading client is not
/// cut short.
async fn write_burst(
    wire: &mut Wire,
    burst: &[Bytes],
    write_timeout: Duration,
) -> Result<std::io::Result<()>, Stalled> {
    let (mut index, mut offset) = (0, 0);
    while index < burst.len() {
        let step = std::future::poll_fn(|cx| {
            // Built in the poll, not kept in the task: the writer's state stays small.
            let mut slices = [IoSlice::new(&[]); MAX_BURST];
            let mut count = 0;
            for (slot, bytes) in slices.iter_mut().zip(&burst[index..]) {
                *slot = IoSlice::new(if count == 0 { &bytes[offset..] } else { bytes });
                count += 1;
            }
            Pin::new(&mut *wire).poll_write_vectored(cx, &slices[..count])
        });
        let mut written = match bounded(write_timeout, step).await? {
            Ok(0) => return Ok(Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        // Move past what the socket took: whole buffers, then into the next one.
        while let Some(bytes) = burst.get(index) {
            let left = bytes.len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            index += 1;
            offset = 0;
        }
    }
    bounded(write_timeout, wire.flush()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_small_frames_is_joined_in_order_and_a_large_one_is_not() {
        let small = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
        assert_eq!(coalesced(small), vec![Bytes::from_static(b"abc")]);
        let one = vec![Bytes::from_static(b"x")];
        assert_eq!(coalesced(one.clone()), one);
        let large = vec![
            Bytes::from(vec![1u8; COALESCE_MAX_BYTES]),
            Bytes::from_static(b"y"),
        ];
        assert_eq!(coalesced(large.clone()), large);
    }
}
