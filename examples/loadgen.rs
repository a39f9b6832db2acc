//! `loadgen` — benchmark load generator for a SyncKit-compatible WebSocket sync server.
//!
//! It speaks the binary protocol of `docs/protocol.md` §2.1 (13-byte header: u8 type code,
//! i64 big-endian epoch-ms timestamp, u32 big-endian payload length, then a JSON object)
//! against a server running with auth disabled (connections are auto-authenticated at
//! connect, so no `auth` message is sent). Every run prints exactly ONE JSON object on
//! stdout with the parameters used and all figures; diagnostics go to stderr. The exit code
//! is 0 when the run completed cleanly (`"ok": true`), 1 otherwise.
//!
//! Scenarios:
//!
//! * `fanout` — 1 writer + S subscribers on one fresh document. The writer sends N SDK-shape
//!   `delta`s (§7.6), each to its own field `f<n>` whose value is the send time in ns since
//!   a process-wide origin, so every receiver can compute delivery latency from the server's
//!   broadcast (§7.7) without any lookup. `--rate 0` pipelines flat out with at most
//!   `--window` unacked deltas; `--rate R` paces R deltas/s.
//! * `many-docs` — C clients, each subscribed to and writing its own document, K deltas each,
//!   flat out with an ack window (default 1) or at `--rate` deltas/s per client.
//! * `idle` — C idle connections opened `--connect-concurrency` at a time; with
//!   `--server-pid` it reports the server's VmRSS before (the idle server), with all of them
//!   open, and after they closed, and the RSS per connection; `hold_cpu` is both processes'
//!   CPU over `--hold` (idle but for heartbeats, §10: hold at least `WS_HEARTBEAT_INTERVAL`).
//!   More connections than one ephemeral-port range allows need `--source-addrs`.
//!
//! Run it against a server on loopback (other hosts are refused unless
//! `--allow-non-loopback`):
//!
//! ```text
//! cargo run --release --example loadgen -- fanout --subscribers 50 --deltas 20000 --rate 0
//! cargo run --release --example loadgen -- fanout --subscribers 100 --deltas 10000 --rate 1000
//! cargo run --release --example loadgen -- many-docs --clients 1000 --deltas 20 --window 1
//! cargo run --release --example loadgen -- idle --connections 10000 --server-pid "$(pgrep -n synckit)"
//! ```
//!
//! Global options (`--url`, default `ws://127.0.0.1:8080/ws` or `$SYNCKIT_URL`; `--timeout`,
//! default 60s, bounds the whole run; `--server-pid`; `--connect-concurrency`) may be given
//! before or after the scenario name. Durations use humantime syntax (`500ms`, `2s`, `1m`).
//!
//! Server settings a benchmark needs (all connections come from one IP, and the per-connection
//! message limit of §11.1 would otherwise throttle the writer):
//!
//! ```text
//! SYNCKIT_AUTH_REQUIRED=false
//! SYNCKIT_MAX_CONNECTIONS_PER_IP=20000   # > subscribers+1, > clients, > idle connections
//! WS_MAX_CONNECTIONS=20000               # idle with 10000 connections
//! SYNCKIT_MAX_MESSAGES_PER_MINUTE=0         # 0 disables the per-connection message limit
//! SYNCKIT_ADMIN_LISTEN=off                 # not needed; frees port 9091 for parallel servers
//! ```
//!
//! BENCHMARKS.md has the exact commands and figures.
//!
//! Broadcast latency includes the server's batch window (§8.6: 50 ms by default; a server that
//! honours `SYNC_BATCH_DELAY` can set it to 0), so compare runs with the same setting. Acks are
//! not batched. Run the generator on the same machine as the server (loopback): it shares the
//! cores with it, which is why the report includes both processes' CPU.
//!
//! File descriptors: each connection is one fd here and one in the server. At startup the
//! generator raises its own soft `RLIMIT_NOFILE` to the hard limit when it needs more, by
//! running util-linux `prlimit` on its own pid (no `unsafe`, no extra crate); if that fails it
//! warns, and you need `ulimit -n 20000` in the shell (the server needs the same).
//!
//! CPU figures come from `/proc/<pid>/stat` (assumes the usual `CLK_TCK` of 100 Hz), so the
//! report shows whether the generator itself was the bottleneck (`cpu_cores_avg` near the
//! number of cores means it saturated).

// Test and benchmark code: failing loudly is the point (Cargo.toml [lints]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::{frame::CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// Wire type codes (docs/protocol.md §3). Only these are used; everything else is ignored.
#[path = "support/wire.rs"]
mod wire;
use wire::*;

/// The SDK gives up on a subscribe after 10 s (§7.1); a setup step waiting longer than that
/// means the server is broken, not slow.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a clean close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Flat-out writers `feed` frames into tungstenite's write buffer and flush every this many
/// frames (and whenever they are about to wait), so a burst costs few syscalls without
/// letting queued frames sit long enough to distort latency.
const FLUSH_EVERY: usize = 64;
/// Read buffer for connections that carry little traffic. tungstenite allocates the read
/// buffer eagerly (default 128 KiB), which would waste ~1.3 GB of our own memory on 10k idle
/// connections.
const SMALL_READ_BUFFER: usize = 4 * 1024;
const DEFAULT_READ_BUFFER: usize = 128 * 1024;
/// Distinct error texts kept in the report; further distinct texts are only counted.
const MAX_ERROR_KINDS: usize = 20;
/// Linux reports /proc/<pid>/stat CPU times in clock ticks; 100 Hz on every common platform.
const CLK_TCK: f64 = 100.0;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for a SyncKit-compatible WebSocket sync server (binary protocol)"
)]
struct Cli {
    /// WebSocket URL of the server under test.
    #[arg(
        long,
        global = true,
        env = "SYNCKIT_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    url: String,
    /// Hard bound on the whole run (connect, measure, drain, close).
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Server process id: adds its CPU time (and VmRSS for `idle`) to the report.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// How many connections are being opened at the same time during setup.
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    /// Permit a URL whose host is not loopback (by default only 127.0.0.0/8, ::1, localhost).
    #[arg(long, global = true)]
    allow_non_loopback: bool,
    /// Bind each client socket to one of these local addresses, round-robin, before it
    /// connects (comma-separated, e.g. 127.0.0.2,127.0.0.3): every source address has its
    /// own ephemeral-port range, so one generator can hold more connections to one server
    /// port than a single range allows (~28,000 with Linux's default). `ws://` only.
    #[arg(long, global = true, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// 1 writer + S subscribers on one fresh document; measures broadcast fan-out.
    Fanout(FanoutArgs),
    /// C clients each writing its own document; measures ack and broadcast latency.
    ManyDocs(ManyDocsArgs),
    /// C idle connections; measures server memory per connection.
    Idle(IdleArgs),
}

#[derive(Args, Debug, Clone)]
struct FanoutArgs {
    /// Number of subscribers (the writer is extra).
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Total deltas the writer sends.
    #[arg(long, default_value_t = 10_000)]
    deltas: usize,
    /// Deltas per second; 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Maximum unacked deltas in flight.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// After the last send, how long to wait for outstanding acks and broadcasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Connect the subscribers to this server instead (another instance of the same
    /// fleet): measures cross-instance delivery, writer on `--url`.
    #[arg(long)]
    subscriber_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct ManyDocsArgs {
    /// Number of clients, each with its own document.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Deltas per client.
    #[arg(long, default_value_t = 20)]
    deltas: usize,
    /// Deltas per second per client; 0 = flat out (limited by --window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Maximum unacked deltas per client.
    #[arg(long, default_value_t = 1)]
    window: usize,
}

#[derive(Args, Debug, Clone)]
struct IdleArgs {
    /// Number of idle connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Wait after the last connection opened before reading the server's RSS.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Keep the connections open this long after the measurement, then close them.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Also subscribe every connection to its own document (memory of a "real" client).
    #[arg(long)]
    subscribe: bool,
    /// Skip the ping/pong round on every connection that proves they are all still served.
    #[arg(long)]
    skip_ping_check: bool,
}

/// State shared by every task of one run.
struct Ctx {
    url: String,
    run_id: String,
    /// Common clock origin: latency markers are ns since this instant, so a sender and a
    /// receiver in this process compare them without any clock skew.
    origin: Instant,
    /// Every wait in the run is bounded by this.
    deadline: Instant,
    connect_concurrency: usize,
    errors: ErrorLog,
    /// `--source-addrs`; empty = let the kernel choose the source address.
    source_addrs: Vec<IpAddr>,
    /// Round-robin cursor over `source_addrs`.
    next_source: AtomicUsize,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn step_deadline(&self) -> Instant {
        (Instant::now() + STEP_TIMEOUT).min(self.deadline)
    }
}

/// Counts errors and keeps a few distinct texts; errors are rare, so a mutex is fine.
#[derive(Default)]
struct ErrorLog {
    count: AtomicU64,
    kinds: Mutex<BTreeMap<String, u64>>,
}

impl ErrorLog {
    fn record(&self, what: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kinds) = self.kinds.lock() {
            let key = what.to_string();
            if kinds.len() < MAX_ERROR_KINDS || kinds.contains_key(&key) {
                *kinds.entry(key).or_insert(0) += 1;
            }
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn to_json(&self) -> Value {
        let kinds = self.kinds.lock().map(|k| k.clone()).unwrap_or_default();
        json!({ "count": self.count(), "kinds": kinds })
    }
}

// ---------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Builds one binary frame (§2.1).
fn frame(code: u8, payload: &[u8]) -> Result<Message> {
    let len = u32::try_from(payload.len()).context("payload longer than u32::MAX")?;
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.push(code);
    buf.extend_from_slice(&epoch_ms().to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    Ok(Message::binary(buf))
}

/// Splits a binary frame into (type code, payload) without looking at the JSON.
fn decode(data: &[u8]) -> Option<(u8, &[u8])> {
    let code = *data.first()?;
    let len_bytes: [u8; 4] = data.get(9..HEADER_LEN)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let payload = data.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    Some((code, payload))
}

/// SDK 0.1.x/0.2.x write shape (§7.6). `type` is omitted: the header carries it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeltaOut<'a> {
    document_id: &'a str,
    field: &'a str,
    value: u64,
    clock: OneClock<'a>,
    client_id: &'a str,
    timestamp: i64,
    message_id: &'a str,
}

impl DeltaOut<'_> {
    fn to_frame(&self) -> Result<Message> {
        frame(T_DELTA, &serde_json::to_vec(self)?)
    }
}

/// A vector clock with only the writer's own entry, serialized as a JSON object without
/// building a map per message.
struct OneClock<'a>(&'a str, u64);

impl Serialize for OneClock<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

/// The only parts of a broadcast `delta` (§7.7) we need; serde skips the rest (`id`,
/// `clock`, ...) without allocating, which keeps per-delivery work small.
#[derive(Deserialize)]
struct BroadcastIn<'a> {
    #[serde(borrow)]
    field: Cow<'a, str>,
    value: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckIn<'a> {
    #[serde(borrow)]
    message_id: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncResponseIn<'a> {
    #[serde(borrow)]
    document_id: Cow<'a, str>,
}

fn error_text(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorIn {
        error: Option<String>,
    }
    match serde_json::from_slice::<ErrorIn>(payload) {
        Ok(ErrorIn { error: Some(e) }) => format!("server error: {e}"),
        _ => format!("server error: {}", String::from_utf8_lossy(payload)),
    }
}

fn close_text(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
        None => "closed by server".to_string(),
    }
}

/// Field names are `f<n>` and message ids end in `-<n>`: the index is the number at the end.
fn trailing_index(s: &str) -> Option<usize> {
    let start = s.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    s.get(start..)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

fn check_loopback(url: &str) -> Result<()> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid --url {url}"))?;
    let host = uri.host().context("--url has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("refusing non-loopback host {host}; pass --allow-non-loopback if you mean it");
    }
    Ok(())
}

async fn connect(ctx: &Ctx, read_buffer: usize) -> Result<Ws> {
    connect_to(ctx, &ctx.url, read_buffer).await
}

async fn connect_to(ctx: &Ctx, url: &str, read_buffer: usize) -> Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    if !ctx.source_addrs.is_empty() {
        let i = ctx.next_source.fetch_add(1, Ordering::Relaxed) % ctx.source_addrs.len();
        let fut = connect_from(ctx.source_addrs[i], url, config);
        return timeout_at(ctx.step_deadline(), fut)
            .await
            .context("connect timed out")?;
    }
    // disable_nagle: small frames must leave at once or latency figures measure Nagle.
    let fut = connect_async_with_config(url, Some(config), true);
    let (ws, _response) = timeout_at(ctx.step_deadline(), fut)
        .await
        .context("connect timed out")?
        .context("connect failed")?;
    Ok(ws)
}

/// TCP connect from `source` (port chosen by the kernel), then the WebSocket handshake over
/// that stream: what `connect_async_with_config` does, with a bind before the connect.
async fn connect_from(source: IpAddr, url: &str, config: WebSocketConfig) -> Result<Ws> {
    let uri: Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("--source-addrs supports ws:// URLs only");
    }
    let host = uri.host().context("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let target = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolve {host}"))?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .with_context(|| format!("{host} has no address of the family of {source}"))?;
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("socket")?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(target).await.context("connect failed")?;
    // As connect_async_with_config(.., disable_nagle = true): no Nagle delay in latencies.
    stream.set_nodelay(true).context("set_nodelay")?;
    let (ws, _response) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .context("connect failed")?;
    Ok(ws)
}

/// Sends `subscribe` and waits for the matching `sync_response` (§7.1, §7.4).
async fn subscribe(ctx: &Ctx, ws: &mut Ws, doc: &str) -> Result<()> {
    let payload = serde_json::to_vec(&json!({ "documentId": doc }))?;
    ws.send(frame(T_SUBSCRIBE, &payload)?).await?;
    let deadline = ctx.step_deadline();
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .context("timed out waiting for sync_response")?
            .context("connection ended before sync_response")??;
        match msg {
            Message::Binary(data) => match decode(&data) {
                Some((T_SYNC_RESPONSE, p)) => {
                    let r: SyncResponseIn = serde_json::from_slice(p)
                        .context("sync_response payload is not the expected JSON")?;
                    if r.document_id == doc {
                        return Ok(());
                    }
                }
                Some((T_ERROR, p)) => bail!("subscribe rejected: {}", error_text(p)),
                Some(_) => {}
                None => bail!("malformed binary frame while subscribing"),
            },
            Message::Text(_) => bail!("server answered a binary client with a text frame"),
            Message::Close(f) => bail!("{} (while subscribing)", close_text(f.as_ref())),
            _ => {}
        }
    }
}

/// Opens `n` connections, `connect_concurrency` at a time, each optionally subscribed to
/// `doc_for(i)`. Failures are recorded and skipped; results are sorted by index.
async fn open_many(
    ctx: &Arc<Ctx>,
    url: &str,
    n: usize,
    read_buffer: usize,
    doc_for: impl Fn(usize) -> Option<String>,
) -> Vec<(usize, Ws)> {
    let gate = Arc::new(Semaphore::new(ctx.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let ctx = Arc::clone(ctx);
        let gate = Arc::clone(&gate);
        let doc = doc_for(i);
        let url = url.to_owned();
        // One task per connection so handshakes use every runtime thread; the semaphore
        // keeps the server from seeing a connect storm larger than asked for.
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.context("connect gate closed")?;
            let mut ws = connect_to(&ctx, &url, read_buffer).await?;
            if let Some(doc) = doc {
                subscribe(&ctx, &mut ws, &doc).await?;
            }
            Ok::<_, anyhow::Error>((i, ws))
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(conn)) => out.push(conn),
            Ok(Err(e)) => ctx.errors.record(format!("setup: {e:#}")),
            Err(e) => ctx.errors.record(format!("setup task: {e}")),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Close handshake with a bound; returns whether the server answered it.
async fn close_gracefully(mut ws: Ws) -> bool {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    if !matches!(timeout_at(deadline, ws.close(None)).await, Ok(Ok(()))) {
        return false;
    }
    // Read until the server's close frame ends the stream.
    loop {
        match timeout_at(deadline, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => {}
            Err(_) => return false,
        }
    }
}

type WsResult = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>;

/// Handles one read from a connection the way every reader in this file does: a binary
/// frame is split into (type code, payload) and handed to `on_frame`, except server `error`
/// frames and malformed frames, which are recorded; other messages are ignored. A close, a
/// read error or the end of the stream is recorded under `role` and returns false: the
/// connection is over. Returns true otherwise.
fn handle_read(
    ctx: &Ctx,
    role: &str,
    msg: Option<WsResult>,
    mut on_frame: impl FnMut(u8, &[u8]),
) -> bool {
    match msg {
        Some(Ok(Message::Binary(data))) => match decode(&data) {
            Some((T_ERROR, p)) => ctx.errors.record(error_text(p)),
            Some((code, p)) => on_frame(code, p),
            None => ctx.errors.record("malformed binary frame"),
        },
        Some(Ok(Message::Close(f))) => {
            ctx.errors
                .record(format!("{role} {}", close_text(f.as_ref())));
            return false;
        }
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            ctx.errors.record(format!("{role} read: {e}"));
            return false;
        }
        None => {
            ctx.errors.record(format!("{role} connection ended"));
            return false;
        }
    }
    true
}

/// Something that has received all it waits for.
trait Complete {
    fn complete(&self) -> bool;
}

/// Reads frames into `got` (through `on_frame`, see `handle_read`) until it is complete or
/// `stop` fires; returns false when the connection ended instead.
async fn read_until<T, S>(
    ctx: &Ctx,
    role: &str,
    rx: &mut S,
    stop: &mut watch::Receiver<bool>,
    got: &mut T,
    mut on_frame: impl FnMut(&mut T, u8, &[u8]),
) -> bool
where
    T: Complete,
    S: futures_util::Stream<Item = WsResult> + Unpin,
{
    while !got.complete() {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = rx.next() => {
                if !handle_read(ctx, role, msg, |code, p| on_frame(got, code, p)) {
                    return false;
                }
            }
        }
    }
    true
}

/// One writing client: its `i`-th delta goes to its own field `f<i>` with message id
/// `<client_id>-<i>`, and carries its send time (ns since the run's origin) as the value,
/// so every receiver computes delivery latency from the broadcast alone.
struct DeltaSource {
    doc: String,
    client_id: String,
}

impl DeltaSource {
    fn new(ctx: &Ctx, doc: &str, who: &str) -> Self {
        Self {
            doc: doc.to_owned(),
            client_id: format!("lg-{}-{who}", ctx.run_id),
        }
    }

    /// Builds delta `i`; returns its send time (ns since the origin) and the frame.
    fn delta(&self, ctx: &Ctx, i: usize) -> Result<(u64, Message)> {
        let field = format!("f{i}");
        let message_id = format!("{}-{i}", self.client_id);
        let t = ctx.now_ns();
        let frame = DeltaOut {
            document_id: &self.doc,
            field: &field,
            value: t,
            clock: OneClock(&self.client_id, i as u64 + 1),
            client_id: &self.client_id,
            timestamp: epoch_ms(),
            message_id: &message_id,
        }
        .to_frame()?;
        Ok((t, frame))
    }
}

// ---------------------------------------------------------------------------------------
// Measurement helpers
// ---------------------------------------------------------------------------------------

/// Receipts of one kind (broadcast deltas or acks) on one connection, deduplicated by the
/// delta index carried in the field name or message id.
struct Receipts {
    seen: Vec<bool>,
    latencies_ns: Vec<u64>,
    distinct: usize,
    duplicates: u64,
    last_at: Option<Instant>,
}

/// Broadcast deltas received; latency is measured from the send time in the value.
type Deliveries = Receipts;
/// Acks received; latency is measured from the writer's recorded send time.
type Acks = Receipts;

impl Complete for Receipts {
    fn complete(&self) -> bool {
        self.distinct == self.seen.len()
    }
}

impl Receipts {
    fn new(n: usize) -> Self {
        Self {
            seen: vec![false; n],
            latencies_ns: Vec::with_capacity(n),
            distinct: 0,
            duplicates: 0,
            last_at: None,
        }
    }

    /// Counts receipt `i` with the given latency; returns true the first time only, false
    /// for a repeat or an index outside the run (recorded as an error under `what`).
    fn mark(&mut self, ctx: &Ctx, i: Option<usize>, latency_ns: u64, what: &str) -> bool {
        let Some(slot) = i.and_then(|i| self.seen.get_mut(i)) else {
            ctx.errors.record(format!("{what} for an unknown index"));
            return false;
        };
        if *slot {
            self.duplicates += 1;
            return false;
        }
        *slot = true;
        self.distinct += 1;
        self.latencies_ns.push(latency_ns);
        self.last_at = Some(Instant::now());
        true
    }

    fn on_delta(&mut self, ctx: &Ctx, payload: &[u8]) {
        let now_ns = ctx.now_ns();
        match serde_json::from_slice::<BroadcastIn>(payload) {
            Ok(b) => {
                let latency = now_ns.saturating_sub(b.value);
                self.mark(ctx, trailing_index(&b.field), latency, "broadcast delta");
            }
            Err(e) => ctx
                .errors
                .record(format!("unparseable broadcast delta: {e}")),
        }
    }

    /// Returns true for the first ack of a message: a repeated ack must not free a second
    /// window slot. `send_ns(i)` gives the send time of delta i.
    fn on_ack(&mut self, ctx: &Ctx, payload: &[u8], send_ns: impl Fn(usize) -> u64) -> bool {
        let now_ns = ctx.now_ns();
        match serde_json::from_slice::<AckIn>(payload) {
            Ok(ack) => {
                let i = trailing_index(&ack.message_id).filter(|&i| i < self.seen.len());
                let latency = i.map_or(0, |i| now_ns.saturating_sub(send_ns(i)));
                self.mark(ctx, i, latency, "ack")
            }
            Err(e) => {
                ctx.errors.record(format!("unparseable ack: {e}"));
                false
            }
        }
    }
}

/// What a writing client receives: acks of its deltas and the broadcast echo of them (the
/// server broadcasts to the sender too, §8.6).
struct WriterReceipts {
    acks: Acks,
    echo: Deliveries,
}

impl Complete for WriterReceipts {
    fn complete(&self) -> bool {
        self.acks.complete() && self.echo.complete()
    }
}

impl WriterReceipts {
    fn new(n: usize) -> Self {
        Self {
            acks: Acks::new(n),
            echo: Deliveries::new(n),
        }
    }

    /// Handles one frame; returns true when it is the first ack of a delta (a window slot
    /// is free again). `send_ns(i)` gives the send time of delta i.
    fn on_frame(
        &mut self,
        ctx: &Ctx,
        code: u8,
        payload: &[u8],
        send_ns: impl Fn(usize) -> u64,
    ) -> bool {
        match code {
            T_ACK => self.acks.on_ack(ctx, payload, send_ns),
            T_DELTA => {
                self.echo.on_delta(ctx, payload);
                false
            }
            _ => false,
        }
    }
}

/// Nearest-rank percentiles in milliseconds.
fn latency_json(mut ns: Vec<u64>) -> Value {
    if ns.is_empty() {
        return json!({ "count": 0 });
    }
    ns.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * ns.len() as f64).ceil() as usize;
        ms(ns[rank.clamp(1, ns.len()) - 1])
    };
    let mean = ns.iter().map(|&v| v as f64).sum::<f64>() / ns.len() as f64 / 1e6;
    json!({
        "count": ns.len(),
        "p50": pct(50.0),
        "p90": pct(90.0),
        "p99": pct(99.0),
        "max": ms(ns[ns.len() - 1]),
        "mean": round3(mean),
    })
}

fn ms(ns: u64) -> f64 {
    round3(ns as f64 / 1e6)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn per_sec(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs).round()
    } else {
        0.0
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// (user, system) CPU seconds of a process, all threads included.
fn proc_cpu(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing paren, where
    // field 3 (state) is index 0, so utime (14) and stime (15) are indices 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / CLK_TCK, stime / CLK_TCK))
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU used by this process and (optionally) the server between `start()` and `report()`.
struct CpuWindow {
    at: Instant,
    own: Option<(f64, f64)>,
    server_pid: Option<u32>,
    server: Option<(f64, f64)>,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            own: proc_cpu("self"),
            server_pid,
            server: server_pid.and_then(|p| proc_cpu(&p.to_string())),
        }
    }

    fn report(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64();
        let diff = |before: Option<(f64, f64)>, after: Option<(f64, f64)>| match (before, after) {
            (Some((u0, s0)), Some((u1, s1))) => {
                let (u, s) = (u1 - u0, s1 - s0);
                json!({
                    "user_s": round3(u),
                    "sys_s": round3(s),
                    "cpu_cores_avg": if wall > 0.0 { round3((u + s) / wall) } else { 0.0 },
                })
            }
            _ => Value::Null,
        };
        json!({
            "wall_s": round3(wall),
            "loadgen": diff(self.own, proc_cpu("self")),
            "server": diff(self.server, self.server_pid.and_then(|p| proc_cpu(&p.to_string()))),
        })
    }
}

/// Raises the soft fd limit to the hard limit when `needed` exceeds it. There is no safe
/// std API for setrlimit, so this runs util-linux `prlimit` on our own pid; the limit is
/// per process, so it applies to us from then on.
fn ensure_nofile(needed: u64) -> Value {
    fn read_limits() -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut nums = line
            .trim_start_matches("Max open files")
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        Some((nums.next()?, nums.next()?))
    }
    let Some((soft, hard)) = read_limits() else {
        return json!({ "note": "could not read /proc/self/limits" });
    };
    if soft >= needed {
        return json!({ "soft": soft, "hard": hard, "raised": false });
    }
    let ran = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:"))
        .status();
    let (now_soft, _) = read_limits().unwrap_or((soft, hard));
    if now_soft < needed {
        eprintln!(
            "loadgen: warning: fd limit {now_soft} < {needed} needed (prlimit: {ran:?}); \
             run `ulimit -n {needed}` first"
        );
    }
    json!({ "soft_before": soft, "soft": now_soft, "hard": hard, "raised": now_soft > soft })
}

/// Waits for all handles; at `deadline` tells the tasks to stop and collects what they have.
async fn join_until<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
    deadline: Instant,
    stop: &watch::Sender<bool>,
    ctx: &Ctx,
) -> Vec<T> {
    let all = futures_util::future::join_all(handles);
    tokio::pin!(all);
    let joined = tokio::select! {
        r = &mut all => r,
        _ = sleep_until(deadline) => {
            // Tasks watch this flag, so they return promptly with partial results.
            let _ = stop.send(true);
            all.await
        }
    };
    joined
        .into_iter()
        .filter_map(|r| {
            r.map_err(|e| ctx.errors.record(format!("task failed: {e}")))
                .ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenario: fanout
// ---------------------------------------------------------------------------------------

/// One subscriber: counts broadcast deliveries until it has all of them or is told to stop.
async fn fanout_subscriber(
    ctx: Arc<Ctx>,
    mut ws: Ws,
    n: usize,
    mut stop: watch::Receiver<bool>,
) -> Deliveries {
    let mut got = Deliveries::new(n);
    let open = read_until(
        &ctx,
        "subscriber",
        &mut ws,
        &mut stop,
        &mut got,
        |got, code, p| {
            if code == T_DELTA {
                got.on_delta(&ctx, p);
            }
        },
    )
    .await;
    if open {
        close_gracefully(ws).await;
    }
    got
}

type WsRead = futures_util::stream::SplitStream<Ws>;

/// The writer's receive half: acks free window slots; the writer's own echo is tracked apart
/// from subscriber deliveries.
async fn writer_reader(
    ctx: Arc<Ctx>,
    mut rx: WsRead,
    n: usize,
    send_ns: Arc<Vec<AtomicU64>>,
    window: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> (WriterReceipts, WsRead) {
    let mut got = WriterReceipts::new(n);
    let lookup = |i: usize| send_ns[i].load(Ordering::Relaxed);
    read_until(
        &ctx,
        "writer",
        &mut rx,
        &mut stop,
        &mut got,
        |got, code, p| {
            if got.on_frame(&ctx, code, p, lookup) {
                window.add_permits(1);
            }
        },
    )
    .await;
    // Wake a sender blocked on the window so it fails fast instead of waiting out the run.
    window.close();
    (got, rx)
}

struct SendStats {
    sent: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

async fn fanout_send(
    ctx: &Ctx,
    tx: &mut futures_util::stream::SplitSink<Ws, Message>,
    args: &FanoutArgs,
    doc: &str,
    send_ns: &[AtomicU64],
    window: &Semaphore,
    stats: &mut SendStats,
) -> Result<()> {
    let source = DeltaSource::new(ctx, doc, "writer");
    let paced = args.rate > 0.0;
    // tokio timers have 1 ms resolution, so high rates send several deltas per tick; the
    // number due is derived from elapsed time, which keeps the average rate exact.
    let tick = if paced {
        Duration::from_secs_f64(1.0 / args.rate).max(Duration::from_millis(1))
    } else {
        Duration::from_secs(1)
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    for (i, sent_at) in send_ns.iter().enumerate().take(args.deltas) {
        if paced {
            while (start.elapsed().as_secs_f64() * args.rate) < i as f64 {
                tx.flush().await?;
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = sleep_until(ctx.deadline) => bail!("run timeout while pacing"),
                }
            }
        }
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                // Window full: push out what is buffered, then wait for an ack.
                tx.flush().await?;
                timeout_at(ctx.deadline, window.acquire())
                    .await
                    .context("run timeout waiting for acks")?
                    .map_err(|_| anyhow!("writer connection closed"))?
                    .forget();
            }
            Err(TryAcquireError::Closed) => bail!("writer connection closed"),
        }
        let (t, delta) = source.delta(ctx, i)?;
        sent_at.store(t, Ordering::Relaxed);
        tx.feed(delta).await?;
        let now = Instant::now();
        stats.first_at.get_or_insert(now);
        stats.last_at = Some(now);
        stats.sent += 1;
        if paced || (i + 1) % FLUSH_EVERY == 0 {
            tx.flush().await?;
        }
    }
    tx.flush().await?;
    Ok(())
}

async fn run_fanout(ctx: Arc<Ctx>, args: FanoutArgs, server_pid: Option<u32>) -> Result<Value> {
    if args.deltas == 0 {
        bail!("--deltas must be > 0");
    }
    let n = args.deltas;
    let nofile = ensure_nofile(args.subscribers as u64 + 64);
    let doc = format!("bench-fanout-{}", ctx.run_id);

    // Subscribers first, each with its sync_response in hand, so none misses early deltas.
    let subscriber_url = match &args.subscriber_url {
        Some(url) => {
            check_loopback(url)?;
            url.clone()
        }
        None => ctx.url.clone(),
    };
    let subs = open_many(
        &ctx,
        &subscriber_url,
        args.subscribers,
        DEFAULT_READ_BUFFER,
        |_| Some(doc.clone()),
    )
    .await;
    let connected = subs.len();
    let mut writer = connect(&ctx, DEFAULT_READ_BUFFER)
        .await
        .context("writer connect")?;
    subscribe(&ctx, &mut writer, &doc)
        .await
        .context("writer subscribe")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = CpuWindow::start(server_pid);
    let sub_handles: Vec<_> = subs
        .into_iter()
        .map(|(_, ws)| tokio::spawn(fanout_subscriber(Arc::clone(&ctx), ws, n, stop_rx.clone())))
        .collect();

    let (mut tx, rx) = writer.split();
    let send_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let window = Arc::new(Semaphore::new(args.window.max(1)));
    let reader = tokio::spawn(writer_reader(
        Arc::clone(&ctx),
        rx,
        n,
        Arc::clone(&send_ns),
        Arc::clone(&window),
        stop_rx.clone(),
    ));

    let mut sent = SendStats {
        sent: 0,
        first_at: None,
        last_at: None,
    };
    if let Err(e) = fanout_send(&ctx, &mut tx, &args, &doc, &send_ns, &window, &mut sent).await {
        ctx.errors.record(format!("writer send: {e:#}"));
    }

    // Everything still missing gets --drain after the last send, never past the run deadline.
    let drain_deadline = (Instant::now() + args.drain).min(ctx.deadline);
    let mut reader_out = join_until(vec![reader], drain_deadline, &stop_tx, &ctx).await;
    let subs_out = join_until(sub_handles, drain_deadline, &stop_tx, &ctx).await;
    let cpu_report = cpu.report();

    let WriterReceipts { acks, echo } = match reader_out.pop() {
        Some((got, rx)) => {
            if let Ok(ws) = tx.reunite(rx) {
                close_gracefully(ws).await;
            }
            got
        }
        None => WriterReceipts::new(n),
    };

    let received: usize = subs_out.iter().map(|d| d.distinct).sum();
    let duplicates: u64 = subs_out.iter().map(|d| d.duplicates).sum();
    let slowest_last = subs_out.iter().filter_map(|d| d.last_at).max();
    let elapsed = match (sent.first_at, slowest_last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    let send_phase = match (sent.first_at, sent.last_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    // Missing counts what was sent but not delivered; a short send shows in deltas_sent.
    let expected = connected * sent.sent;
    let latencies: Vec<u64> = subs_out.into_iter().flat_map(|d| d.latencies_ns).collect();
    let ok = ctx.errors.count() == 0
        && sent.sent == n
        && connected == args.subscribers
        && received == expected
        && acks.complete()
        && echo.complete();

    Ok(json!({
        "scenario": "fanout",
        "document_id": doc,
        "params": {
            "subscribers": args.subscribers,
            "deltas": n,
            "rate": args.rate,
            "mode": if args.rate > 0.0 { "fixed_rate" } else { "flat_out" },
            "window": args.window,
            "drain": human(args.drain),
        },
        "subscribers_connected": connected,
        "deltas_sent": sent.sent,
        "acks_received": acks.distinct,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "deltas_per_s": per_sec(sent.sent, elapsed),
        "deliveries_per_s": per_sec(received, elapsed),
        "send_phase_s": round3(send_phase.as_secs_f64()),
        "send_rate_per_s": per_sec(sent.sent, send_phase),
        "deliveries": {
            "expected": expected,
            "received": received,
            "missing": expected - received.min(expected),
            "duplicates": duplicates,
        },
        "delivery_latency_ms": latency_json(latencies),
        "ack_latency_ms": latency_json(acks.latencies_ns),
        "writer_echo": {
            "expected": sent.sent,
            "received": echo.distinct,
            "missing": sent.sent - echo.distinct.min(sent.sent),
            "duplicates": echo.duplicates,
            "latency_ms": latency_json(echo.latencies_ns),
        },
        "cpu": cpu_report,
        "nofile": nofile,
        "ok": ok,
    }))
}

// ---------------------------------------------------------------------------------------
// Scenario: many-docs
// ---------------------------------------------------------------------------------------

struct ClientOut {
    sent: usize,
    got: WriterReceipts,
}

/// One client on its own document: a single task both sends and receives, because with a
/// window of 1 the next send depends on the previous ack anyway.
async fn many_docs_client(
    ctx: Arc<Ctx>,
    mut ws: Ws,
    doc: String,
    args: ManyDocsArgs,
    first_send: Instant,
    mut stop: watch::Receiver<bool>,
) -> ClientOut {
    let k = args.deltas;
    let source = DeltaSource::new(&ctx, &doc, &format!("c-{doc}"));
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let window = args.window.max(1);
    let mut send_ns = vec![0u64; k];
    let mut out = ClientOut {
        sent: 0,
        got: WriterReceipts::new(k),
    };
    let mut inflight = 0usize;
    let mut next_send = first_send;
    while !out.got.complete() {
        let can_send = out.sent < k && inflight < window;
        if can_send && (period.is_none() || Instant::now() >= next_send) {
            let i = out.sent;
            let sent = match source.delta(&ctx, i) {
                Ok((t, f)) => {
                    send_ns[i] = t;
                    ws.send(f).await.map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                ctx.errors.record(format!("client send: {e:#}"));
                return out;
            }
            out.sent += 1;
            inflight += 1;
            if let Some(p) = period {
                next_send += p;
            }
            continue;
        }
        let wait_timer = can_send && period.is_some();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => {
                let open = handle_read(&ctx, "client", msg, |code, p| {
                    if out.got.on_frame(&ctx, code, p, |i| send_ns[i]) {
                        inflight = inflight.saturating_sub(1);
                    }
                });
                if !open {
                    return out;
                }
            }
            _ = sleep_until(next_send), if wait_timer => {}
        }
    }
    close_gracefully(ws).await;
    out
}

async fn run_many_docs(
    ctx: Arc<Ctx>,
    args: ManyDocsArgs,
    server_pid: Option<u32>,
) -> Result<Value> {
    if args.deltas == 0 || args.clients == 0 {
        bail!("--clients and --deltas must be > 0");
    }
    let nofile = ensure_nofile(args.clients as u64 + 64);
    let doc_of = |i: usize| format!("bench-docs-{}-{i}", ctx.run_id);
    let conns = open_many(&ctx, &ctx.url, args.clients, SMALL_READ_BUFFER, |i| {
        Some(doc_of(i))
    })
    .await;
    let connected = conns.len();

    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu = CpuWindow::start(server_pid);
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|(i, ws)| {
            // Stagger paced clients across one period so they do not all fire on one tick.
            let offset = if args.rate > 0.0 {
                Duration::from_secs_f64(i as f64 / args.clients as f64 / args.rate)
            } else {
                Duration::ZERO
            };
            tokio::spawn(many_docs_client(
                Arc::clone(&ctx),
                ws,
                doc_of(i),
                args.clone(),
                start + offset,
                stop_rx.clone(),
            ))
        })
        .collect();
    let outs = join_until(handles, ctx.deadline, &stop_tx, &ctx).await;
    let cpu_report = cpu.report();

    let sent: usize = outs.iter().map(|o| o.sent).sum();
    let acked: usize = outs.iter().map(|o| o.got.acks.distinct).sum();
    let echoed: usize = outs.iter().map(|o| o.got.echo.distinct).sum();
    let duplicates: u64 = outs.iter().map(|o| o.got.echo.duplicates).sum();
    let last_ack = outs.iter().filter_map(|o| o.got.acks.last_at).max();
    let last_echo = outs.iter().filter_map(|o| o.got.echo.last_at).max();
    let since_start = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t - start);
    let ack_elapsed = since_start(last_ack);
    let e2e_elapsed = since_start(last_echo.max(last_ack));
    let expected = args.clients * args.deltas;
    let (mut ack_lat, mut echo_lat) = (Vec::new(), Vec::new());
    for o in outs {
        ack_lat.extend(o.got.acks.latencies_ns);
        echo_lat.extend(o.got.echo.latencies_ns);
    }
    let ok = ctx.errors.count() == 0 && sent == expected && acked == sent && echoed == sent;

    Ok(json!({
        "scenario": "many-docs",
        "params": {
            "clients": args.clients,
            "deltas_per_client": args.deltas,
            "rate_per_client": args.rate,
            "mode": if args.rate > 0.0 { "fixed_rate" } else { "flat_out" },
            "window": args.window,
        },
        "clients_connected": connected,
        "deltas_expected": expected,
        "deltas_sent": sent,
        "acks_received": acked,
        "broadcasts_received": echoed,
        // Relative to what was sent, so a short run does not count unsent deltas as lost.
        "missing_acks": sent - acked.min(sent),
        "missing_broadcasts": sent - echoed.min(sent),
        "duplicate_broadcasts": duplicates,
        "elapsed_s": round3(ack_elapsed.as_secs_f64()),
        "deltas_per_s": per_sec(acked, ack_elapsed),
        "e2e_elapsed_s": round3(e2e_elapsed.as_secs_f64()),
        "broadcasts_per_s": per_sec(echoed, e2e_elapsed),
        "ack_latency_ms": latency_json(ack_lat),
        "broadcast_latency_ms": latency_json(echo_lat),
        "cpu": cpu_report,
        "nofile": nofile,
        "ok": ok,
    }))
}

// ---------------------------------------------------------------------------------------
// Scenario: idle
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Hold,
    Ping,
    Close,
}

#[derive(Default)]
struct IdleCounters {
    closed_by_server: AtomicUsize,
    pongs: AtomicUsize,
    closed_clean: AtomicUsize,
}

/// Keeps one connection open. It keeps reading, because tungstenite answers the server's
/// protocol pings (§10) only while the stream is polled.
async fn idle_holder(
    ctx: Arc<Ctx>,
    mut ws: Ws,
    mut phase: watch::Receiver<Phase>,
    counters: Arc<IdleCounters>,
) {
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                let current = *phase.borrow_and_update();
                if changed.is_err() || current == Phase::Close {
                    if close_gracefully(ws).await {
                        counters.closed_clean.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                if current == Phase::Ping && !awaiting_pong {
                    match frame(T_PING, b"{}") {
                        Ok(f) => {
                            if let Err(e) = ws.send(f).await {
                                ctx.errors.record(format!("idle ping send: {e}"));
                            }
                            awaiting_pong = true;
                        }
                        Err(e) => ctx.errors.record(format!("idle ping: {e:#}")),
                    }
                }
            }
            msg = ws.next() => {
                let open = handle_read(&ctx, "idle", msg, |code, _| {
                    if code == T_PONG && awaiting_pong {
                        awaiting_pong = false;
                        counters.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                });
                if !open {
                    counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

async fn run_idle(ctx: Arc<Ctx>, args: IdleArgs, server_pid: Option<u32>) -> Result<Value> {
    let c = args.connections;
    let nofile = ensure_nofile(c as u64 + 64);
    let rss_before = server_pid.and_then(vm_rss_kib);
    if server_pid.is_some() && rss_before.is_none() {
        ctx.errors.record("cannot read VmRSS of --server-pid");
    }

    let t0 = Instant::now();
    let conns = open_many(&ctx, &ctx.url, c, SMALL_READ_BUFFER, |i| {
        args.subscribe
            .then(|| format!("bench-idle-{}-{i}", ctx.run_id))
    })
    .await;
    let connect_time = t0.elapsed();
    let opened = conns.len();

    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let counters = Arc::new(IdleCounters::default());
    let holders: Vec<_> = conns
        .into_iter()
        .map(|(_, ws)| {
            tokio::spawn(idle_holder(
                Arc::clone(&ctx),
                ws,
                phase_rx.clone(),
                Arc::clone(&counters),
            ))
        })
        .collect();

    sleep_until((Instant::now() + args.settle).min(ctx.deadline)).await;
    let rss_after = server_pid.and_then(vm_rss_kib);
    let open_at_measure = opened - counters.closed_by_server.load(Ordering::Relaxed);

    // Liveness: one app-level ping per connection proves the server still serves all of them.
    let mut ping_check = Value::Null;
    if !args.skip_ping_check {
        let t = Instant::now();
        let _ = phase_tx.send(Phase::Ping);
        let until = (t + STEP_TIMEOUT).min(ctx.deadline);
        loop {
            let alive = counters.pongs.load(Ordering::Relaxed);
            let gone = counters.closed_by_server.load(Ordering::Relaxed);
            if alive + gone >= opened || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ping_check = json!({
            "pongs": counters.pongs.load(Ordering::Relaxed),
            "elapsed_s": round3(t.elapsed().as_secs_f64()),
        });
    }

    // Server CPU while every connection sits idle: what remains is the heartbeat (a
    // protocol ping per connection every WS_HEARTBEAT_INTERVAL, docs/protocol.md §10), so a
    // hold shorter than that interval may contain no tick at all.
    let hold_cpu = CpuWindow::start(server_pid);
    sleep_until((Instant::now() + args.hold).min(ctx.deadline)).await;
    let hold_cpu = hold_cpu.report();
    let _ = phase_tx.send(Phase::Close);
    let t_close = Instant::now();
    // Holders bound their own close handshake, so this join is bounded too.
    for h in holders {
        if let Err(e) = h.await {
            ctx.errors.record(format!("holder task: {e}"));
        }
    }
    let close_time = t_close.elapsed();
    // What the server keeps after every connection closed (allocator retention, maps that
    // do not shrink); read after a short settle so the server's close paths have run.
    sleep_until((Instant::now() + args.settle).min(ctx.deadline + CLOSE_TIMEOUT)).await;
    let rss_after_close = server_pid.and_then(vm_rss_kib);

    let rss = match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let delta = a as f64 - b as f64;
            json!({
                "before_kib": b,
                "after_kib": a,
                "after_close_kib": rss_after_close,
                "delta_kib": delta,
                "per_connection_kib": round3(delta / c.max(1) as f64),
                "per_open_connection_kib": round3(delta / open_at_measure.max(1) as f64),
            })
        }
        _ => Value::Null,
    };
    let closed_clean = counters.closed_clean.load(Ordering::Relaxed);
    let pongs = counters.pongs.load(Ordering::Relaxed);
    let ok = ctx.errors.count() == 0
        && opened == c
        && open_at_measure == c
        && (args.skip_ping_check || pongs == c);

    Ok(json!({
        "scenario": "idle",
        "params": {
            "connections": c,
            "subscribe": args.subscribe,
            "settle": human(args.settle),
            "hold": human(args.hold),
        },
        "opened": opened,
        "failed": c - opened,
        "connect_s": round3(connect_time.as_secs_f64()),
        "connects_per_s": per_sec(opened, connect_time),
        "open_at_measure": open_at_measure,
        "closed_by_server": counters.closed_by_server.load(Ordering::Relaxed),
        "ping_check": ping_check,
        "server_rss": rss,
        "hold_cpu": hold_cpu,
        "closed_clean": closed_clean,
        "close_s": round3(close_time.as_secs_f64()),
        "nofile": nofile,
        "ok": ok,
    }))
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

async fn run(cli: Cli) -> Result<Value> {
    if !cli.allow_non_loopback {
        check_loopback(&cli.url)?;
        if let Some(a) = cli.source_addrs.iter().find(|a| !a.is_loopback()) {
            bail!("refusing non-loopback --source-addrs {a}; pass --allow-non-loopback if you mean it");
        }
    }
    let origin = Instant::now();
    let run_id = format!("{}-{}", std::process::id(), epoch_ms());
    let ctx = Arc::new(Ctx {
        url: cli.url.clone(),
        run_id: run_id.clone(),
        origin,
        deadline: origin + cli.timeout,
        connect_concurrency: cli.connect_concurrency,
        errors: ErrorLog::default(),
        source_addrs: cli.source_addrs.clone(),
        next_source: AtomicUsize::new(0),
    });
    let pid = cli.server_pid;
    let run = async {
        match cli.scenario {
            Scenario::Fanout(a) => run_fanout(Arc::clone(&ctx), a, pid).await,
            Scenario::ManyDocs(a) => run_many_docs(Arc::clone(&ctx), a, pid).await,
            Scenario::Idle(a) => run_idle(Arc::clone(&ctx), a, pid).await,
        }
    };
    // Scenarios bound every wait by the deadline; this outer bound is a backstop that allows
    // for the close handshakes after it.
    let result = tokio::time::timeout_at(ctx.deadline + CLOSE_TIMEOUT * 3, run)
        .await
        .map_err(|_| anyhow!("run exceeded --timeout {}", human(cli.timeout)))?;
    let mut report = match result {
        Ok(v) => v,
        Err(e) => {
            ctx.errors.record(format!("{e:#}"));
            json!({ "ok": false })
        }
    };
    if let Value::Object(map) = &mut report {
        map.insert("url".into(), json!(cli.url));
        map.insert("run_id".into(), json!(run_id));
        map.insert("timeout".into(), json!(human(cli.timeout)));
        map.insert("connect_concurrency".into(), json!(cli.connect_concurrency));
        map.insert("source_addrs".into(), json!(cli.source_addrs));
        map.insert("server_pid".into(), json!(cli.server_pid));
        map.insert(
            "total_wall_s".into(),
            json!(round3(origin.elapsed().as_secs_f64())),
        );
        map.insert("errors".into(), ctx.errors.to_json());
    }
    Ok(report)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match run(cli).await {
        Ok(v) => v,
        Err(e) => {
            json!({ "ok": false, "errors": { "count": 1, "kinds": { format!("{e:#}"): 1 } } })
        }
    };
    println!("{report}");
    if report.get("ok").and_then(Value::as_bool) == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
