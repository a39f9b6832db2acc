//! `minimal_server` — the least work any SyncKit server must do for `loadgen`'s `fanout` and
//! `idle` scenarios, as the baseline the benchmarks measure synckit against (BENCHMARKS.md).
//!
//! It is not a SyncKit server: no auth, no CRDT, no clock, no storage, no limits, no
//! heartbeat, no coalescing of repeated fields. It speaks the binary frames of
//! docs/protocol.md §2.1 (13-byte header + JSON object) and answers only what loadgen waits
//! for, in the shapes synckit sends:
//!
//! * `subscribe` → `sync_response` of an empty document (§7.4: `requestId`, `documentId`,
//!   `state: {}`, `deltas: []`, `clock: {}`) and the connection joins the document;
//! * `delta` (§7.6) → `ack` (`messageId`) to the writer, and one SDK-shape broadcast `delta`
//!   (§7.7: `documentId`, `field`, `value`, `clock`, `clientId: "server"`) to every
//!   subscriber of the document, the writer included (the echo loadgen counts). The frame is
//!   built once and shared by every subscriber. With a batching window (`--window-ms`, 50 by
//!   default like `SYNC_BATCH_DELAY`) the frames of one window go to each subscriber as one
//!   outbox item when the window ends (§8.6); `0` sends every delta at once. The broadcast
//!   clock is the writer's own clock, passed through;
//! * `ping` → `pong`.
//!
//! One task per connection: it reads the socket and drains the connection's outbox (feeding
//! everything queued, then one flush), like synckit's writer does.
//!
//! ```text
//! cargo run --release --example minimal_server -- --port 18241 --window-ms 50
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/wire.rs"]
mod wire;
use wire::*;

/// The allocator synckit ships with (src/main.rs), so the comparison measures the servers'
/// work, not the allocators.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "minimal_server",
    about = "Minimal broadcast server: the baseline of bench/server.sh (not a SyncKit server)"
)]
struct Cli {
    /// Port to listen on (127.0.0.1).
    #[arg(long, env = "PORT", default_value_t = 18241)]
    port: u16,
    /// Batching window in milliseconds; 0 sends each delta to the subscribers at once.
    #[arg(long, env = "SYNC_BATCH_DELAY", default_value_t = 50)]
    window_ms: u64,
    /// tungstenite read buffer per connection, in bytes (its default of 128 KiB would make
    /// idle connections measure the buffer).
    #[arg(long, default_value_t = 4096)]
    read_buffer_bytes: usize,
}

/// One outbox item: a single frame, or one window's frames shared by every subscriber.
enum Item {
    One(Bytes),
    Window(Arc<[Bytes]>),
}

type Outbox = mpsc::UnboundedSender<Item>;

#[derive(Default)]
struct Doc {
    subscribers: Vec<(u64, Outbox)>,
    /// Frames of the window in progress; a flush is scheduled while this is non-empty.
    pending: Vec<Bytes>,
}

struct Server {
    docs: Mutex<HashMap<String, Arc<Mutex<Doc>>>>,
    window: Duration,
    next_conn: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    fn doc(&self, id: &str) -> Arc<Mutex<Doc>> {
        let mut docs = lock(&self.docs);
        match docs.get(id) {
            Some(doc) => Arc::clone(doc),
            None => {
                let doc = Arc::new(Mutex::new(Doc::default()));
                docs.insert(id.to_owned(), Arc::clone(&doc));
                doc
            }
        }
    }

    /// A message id of synckit's form, `<epoch ms>-<9 base36 chars>`.
    fn message_id(&self, now_ms: i64) -> String {
        let mut n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut digits = [b'0'; 9];
        for slot in digits.iter_mut().rev() {
            let d = (n % 36) as u8;
            *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n /= 36;
        }
        format!("{now_ms}-{}", String::from_utf8_lossy(&digits))
    }

    /// Queues one broadcast frame for the document's subscribers.
    fn broadcast(self: &Arc<Self>, doc: &Arc<Mutex<Doc>>, frame: Bytes) {
        let mut d = lock(doc);
        if self.window.is_zero() {
            for (_, tx) in &d.subscribers {
                let _ = tx.send(Item::One(frame.clone()));
            }
            return;
        }
        let first = d.pending.is_empty();
        d.pending.push(frame);
        if first {
            let doc = Arc::clone(doc);
            let window = self.window;
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let mut d = lock(&doc);
                let frames: Arc<[Bytes]> = std::mem::take(&mut d.pending).into();
                for (_, tx) in &d.subscribers {
                    let _ = tx.send(Item::Window(Arc::clone(&frames)));
                }
            });
        }
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A binary frame (§2.1) whose payload is `{"id":<id>,` followed by `rest` (which holds
/// the remaining members and the closing brace).
fn frame(code: u8, id: &str, rest: &[u8]) -> Bytes {
    let mut payload = Vec::with_capacity(id.len() + rest.len() + 8);
    payload.extend_from_slice(b"{\"id\":");
    push_json(&mut payload, id);
    payload.push(b',');
    payload.extend_from_slice(rest);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(code);
    out.extend_from_slice(&epoch_ms().to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeIn {
    document_id: String,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaIn {
    document_id: String,
    field: String,
    value: Value,
    #[serde(default)]
    clock: Value,
    message_id: String,
}

/// Splits a binary frame into (type code, payload).
fn decode(data: &[u8]) -> Option<(u8, &[u8])> {
    let code = *data.first()?;
    let len_bytes: [u8; 4] = data.get(9..HEADER_LEN)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    Some((code, data.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?))
}

/// The connection's subscriptions, left when it closes.
struct Joined {
    conn: u64,
    docs: Vec<Arc<Mutex<Doc>>>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        for doc in &self.docs {
            lock(doc).subscribers.retain(|(c, _)| *c != self.conn);
        }
    }
}

/// Handles one binary frame; replies go to the connection's own outbox.
fn on_frame(
    server: &Arc<Server>,
    joined: &mut Joined,
    own: &Outbox,
    doc_cache: &mut Option<(String, Arc<Mutex<Doc>>)>,
    data: &[u8],
) {
    let Some((code, payload)) = decode(data) else {
        return;
    };
    let now = epoch_ms();
    match code {
        T_SUBSCRIBE => {
            let Ok(sub) = serde_json::from_slice::<SubscribeIn>(payload) else {
                return;
            };
            let doc = server.doc(&sub.document_id);
            lock(&doc).subscribers.push((joined.conn, own.clone()));
            joined.docs.push(doc);
            let request_id = sub.id.unwrap_or_else(|| server.message_id(now));
            let mut rest = Vec::with_capacity(96);
            rest.extend_from_slice(b"\"clock\":{},\"deltas\":[],\"documentId\":");
            push_json(&mut rest, &sub.document_id);
            rest.extend_from_slice(b",\"requestId\":");
            push_json(&mut rest, &request_id);
            rest.extend_from_slice(b",\"state\":{}}");
            let _ = own.send(Item::One(frame(T_SYNC_RESPONSE, &request_id, &rest)));
        }
        T_DELTA => {
            let Ok(delta) = serde_json::from_slice::<DeltaIn>(payload) else {
                return;
            };
            let mut rest = Vec::with_capacity(32 + delta.message_id.len());
            rest.extend_from_slice(b"\"messageId\":");
            push_json(&mut rest, &delta.message_id);
            rest.push(b'}');
            let _ = own.send(Item::One(frame(T_ACK, &server.message_id(now), &rest)));

            let mut rest = Vec::with_capacity(96 + delta.document_id.len() + delta.field.len());
            rest.extend_from_slice(b"\"documentId\":");
            push_json(&mut rest, &delta.document_id);
            rest.extend_from_slice(b",\"field\":");
            push_json(&mut rest, &delta.field);
            rest.extend_from_slice(b",\"value\":");
            push_json(&mut rest, &delta.value);
            rest.extend_from_slice(b",\"clock\":");
            push_json(&mut rest, &delta.clock);
            rest.extend_from_slice(b",\"clientId\":\"server\"}");
            let broadcast = frame(T_DELTA, &server.message_id(now), &rest);
            let doc = match doc_cache {
                Some((id, doc)) if *id == delta.document_id => Arc::clone(doc),
                _ => {
                    let doc = server.doc(&delta.document_id);
                    *doc_cache = Some((delta.document_id, Arc::clone(&doc)));
                    doc
                }
            };
            server.broadcast(&doc, broadcast);
        }
        T_PING => {
            let _ = own.send(Item::One(frame(T_PONG, &server.message_id(now), b"}")));
        }
        _ => {}
    }
}

/// Upgrades only `/ws`, the path loadgen connects to (404 otherwise). The error type is
/// tungstenite's callback signature, large or not.
#[allow(clippy::result_large_err)]
fn only_ws(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/ws" {
        Ok(resp)
    } else {
        let mut refused = ErrorResponse::new(None);
        *refused.status_mut() = StatusCode::NOT_FOUND;
        Err(refused)
    }
}

async fn serve(server: Arc<Server>, stream: TcpStream, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, only_ws, Some(config)).await
    else {
        return;
    };
    let (own, mut outbox) = mpsc::unbounded_channel();
    let mut joined = Joined {
        conn: server.next_conn.fetch_add(1, Ordering::Relaxed),
        docs: Vec::new(),
    };
    let mut doc_cache = None;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    on_frame(&server, &mut joined, &own, &mut doc_cache, &data);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            item = outbox.recv() => {
                let Some(mut item) = item else { break };
                // Feed everything queued, then flush once.
                loop {
                    let fed = match item {
                        Item::One(f) => ws.feed(Message::Binary(f)).await,
                        Item::Window(frames) => {
                            let mut r = Ok(());
                            for f in frames.iter() {
                                r = ws.feed(Message::Binary(f.clone())).await;
                                if r.is_err() {
                                    break;
                                }
                            }
                            r
                        }
                    };
                    if fed.is_err() {
                        return;
                    }
                    match outbox.try_recv() {
                        Ok(next) => item = next,
                        Err(_) => break,
                    }
                }
                if ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    drop(joined);
    let _ = ws.close(None).await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = Arc::new(Server {
        docs: Mutex::new(HashMap::new()),
        window: Duration::from_millis(cli.window_ms),
        next_conn: AtomicU64::new(0),
        next_id: AtomicU64::new(0),
    });
    let config = WebSocketConfig::default().read_buffer_size(cli.read_buffer_bytes);
    let addr = SocketAddr::from(([127, 0, 0, 1], cli.port));
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "minimal_server on ws://{addr}/ws, window {} ms",
        cli.window_ms
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(Arc::clone(&server), stream, config));
    }
}
