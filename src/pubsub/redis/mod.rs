//! Redis pub/sub between instances (docs/storage.md §6.4, §6.6).
//!
//! Two connections, like every Redis pub/sub client: a multiplexed one for
//! `PUBLISH` and `PING`, and a RESP2 subscriber. One supervisor task owns them
//! (`link.rs`): it connects in the background (a server starts whether Redis is up or
//! not), subscribes exactly the channels somebody here is interested in, forwards
//! messages to the relay, pings, and on any loss reconnects with exponential backoff
//! and subscribes every channel again. Each (re)connection is announced on a watch
//! so the server can resynchronise documents and tell its peers.
//!
//! Publishing never waits for Redis: [`PubSub::publish`] puts the message on a
//! bounded queue read by a publisher task that pipelines whatever has accumulated.
//! While disconnected, or when the queue is full, the message is dropped and counted
//! — the documents' resynchronisation after the reconnection repairs what peers
//! missed.

mod link;
pub(crate) mod url;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use url::RedisTarget;
pub(crate) use url::RedisUrlError;

use super::{Connection, Incoming, PubSub, PubSubHealth, PubSubState};

/// Tunables of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub(crate) target: RedisTarget,
    /// Messages waiting for the publisher before new ones are dropped.
    publish_queue: usize,
    /// Received messages waiting for the relay before new ones are dropped.
    receive_queue: usize,
    /// Health `PING` period; also how fast a silently dead connection is noticed.
    pub ping_interval: Duration,
    /// Connect and reply timeout (a `connectTimeout` option in the URL wins for
    /// connecting).
    pub timeout: Duration,
    /// First reconnection delay, doubled per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RedisSettings {
    pub fn new(target: RedisTarget) -> RedisSettings {
        RedisSettings {
            target,
            publish_queue: 10_000,
            receive_queue: 16_384,
            ping_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// State shared by the handle, the supervisor and the publisher.
#[derive(Default)]
struct Shared {
    /// Channel → subscribe calls not yet undone.
    interest: Mutex<HashMap<String, usize>>,
    /// Channels whose interest crossed zero since the supervisor last looked.
    dirty: Mutex<HashSet<String>>,
    changed: Notify,
    /// The publishing connection while connected.
    conn: Mutex<Option<MultiplexedConnection>>,
    connected: AtomicBool,
    published: AtomicU64,
    dropped: AtomicU64,
    receive_dropped: AtomicU64,
    reconnects: AtomicU64,
    /// Last PING round trip in µs; `u64::MAX` = none yet.
    ping_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data whole: a panic elsewhere cannot
    // leave a half-written map, so keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn set_connected(&self, conn: Option<MultiplexedConnection>) {
        self.connected.store(conn.is_some(), Ordering::SeqCst);
        if conn.is_none() {
            self.ping_us.store(u64::MAX, Ordering::Relaxed);
        }
        *lock(&self.conn) = conn;
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.conn).clone()
    }

    fn set_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    fn count(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Record a subscribe (+1) or unsubscribe (−1); a count crossing zero marks the
    /// channel for the supervisor.
    fn change_interest(&self, channel: &str, subscribe: bool) {
        let crossed = {
            let mut interest = lock(&self.interest);
            if subscribe {
                let n = interest.entry(channel.to_owned()).or_insert(0);
                *n += 1;
                *n == 1
            } else {
                match interest.get_mut(channel) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    Some(_) => {
                        interest.remove(channel);
                        true
                    }
                    None => false,
                }
            }
        };
        if crossed {
            lock(&self.dirty).insert(channel.to_owned());
            self.changed.notify_one();
        }
    }

    fn wants(&self, channel: &str) -> bool {
        lock(&self.interest).contains_key(channel)
    }

    fn wanted(&self) -> Vec<String> {
        lock(&self.interest).keys().cloned().collect()
    }
}

/// The Redis pub/sub backend. Dropping it stops its tasks.
pub struct RedisPubSub {
    shared: Arc<Shared>,
    publish_tx: mpsc::Sender<(String, Bytes)>,
    incoming: Mutex<Option<mpsc::Receiver<Incoming>>>,
    connections: watch::Receiver<Connection>,
    stop: CancellationToken,
    publisher: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

impl RedisPubSub {
    /// Start connecting in the background; needs a tokio runtime.
    pub fn start(settings: RedisSettings) -> Result<RedisPubSub, redis::RedisError> {
        let client = redis::Client::open(settings.target.info.clone())?;
        let shared = Arc::new(Shared {
            ping_us: AtomicU64::new(u64::MAX),
            ..Shared::default()
        });
        let (publish_tx, publish_rx) = mpsc::channel(settings.publish_queue.max(1));
        let (incoming_tx, incoming_rx) = mpsc::channel(settings.receive_queue.max(1));
        let (events_tx, events_rx) = watch::channel(Connection::default());
        let stop = CancellationToken::new();
        tokio::spawn(link::supervise(link::Supervisor {
            shared: shared.clone(),
            client,
            settings: settings.clone(),
            incoming: incoming_tx,
            events: events_tx,
            stop: stop.clone(),
        }));
        let publisher = tokio::spawn(link::publish_loop(shared.clone(), publish_rx, stop.clone()));
        Ok(RedisPubSub {
            shared,
            publish_tx,
            incoming: Mutex::new(Some(incoming_rx)),
            connections: events_rx,
            stop,
            publisher: Mutex::new(Some(publisher)),
            timeout: settings.timeout,
        })
    }
}

impl Drop for RedisPubSub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, channel: &str, payload: Bytes) {
        if !self.shared.connected.load(Ordering::SeqCst)
            || self
                .publish_tx
                .try_send((channel.to_owned(), payload))
                .is_err()
        {
            Shared::count(&self.shared.dropped, 1);
        }
    }

    fn subscribe(&self, channel: &str) {
        self.shared.change_interest(channel, true);
    }

    fn unsubscribe(&self, channel: &str) {
        self.shared.change_interest(channel, false);
    }

    fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        lock(&self.incoming).take()
    }

    fn state(&self) -> PubSubState {
        if self.shared.connected.load(Ordering::SeqCst) {
            PubSubState::Connected
        } else {
            PubSubState::Disconnected
        }
    }

    fn health(&self) -> PubSubHealth {
        let s = &self.shared;
        let ping_us = s.ping_us.load(Ordering::Relaxed);
        PubSubHealth {
            dropped: s.dropped.load(Ordering::Relaxed),
            receive_dropped: s.receive_dropped.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            ping_ms: (ping_us != u64::MAX && s.connected.load(Ordering::SeqCst))
                .then(|| ping_us as f64 / 1000.0),
            last_error: lock(&s.last_error).clone(),
        }
    }

    fn connections(&self) -> Option<watch::Receiver<Connection>> {
        Some(self.connections.clone())
    }

    /// `SET key 1 NX PX ttl`: the first instance to set it wins; the key expires on
    /// its own, so a crashed winner never blocks later occurrences.
    async fn try_claim(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let mut conn = self
            .shared
            .connection()
            .ok_or_else(|| "Redis is not connected".to_string())?;
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(set.is_some())
    }

    /// Stop, after the publisher has sent what is queued (within one reply timeout).
    async fn close(&self) {
        self.stop.cancel();
        let publisher = lock(&self.publisher).take();
        if let Some(task) = publisher {
            let _ = tokio::time::timeout(self.timeout, task).await;
        }
    }
}
