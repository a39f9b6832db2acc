//! The two background tasks of [`super::RedisPubSub`]: the supervisor (connect,
//! subscribe, receive, ping, reconnect) and the publisher (drain the queue into
//! pipelined `PUBLISH`es).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use redis::AsyncConnectionConfig;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{RedisSettings, Shared};
use crate::pubsub::{Connection, Incoming};

/// Messages sent in one pipeline: large enough to amortise round trips under load,
/// small enough that one failed pipeline loses little.
const MAX_PIPELINE: usize = 512;

/// Channels per `SUBSCRIBE`/`UNSUBSCRIBE` command when many change at once (a
/// reconnection with thousands of live documents).
const CHANNELS_PER_COMMAND: usize = 1_000;

pub(super) struct Supervisor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: redis::Client,
    pub(crate) settings: RedisSettings,
    pub(crate) incoming: mpsc::Sender<Incoming>,
    pub(crate) events: watch::Sender<Connection>,
    pub(crate) stop: CancellationToken,
}

struct Link {
    conn: MultiplexedConnection,
    pubsub: PubSub,
}

enum End {
    Stopped,
    Lost(String),
}

/// Keep a connection up until stopped.
pub(super) async fn supervise(sup: Supervisor) {
    let target = sup.settings.target.display();
    let mut failures: u32 = 0;
    // Whether messages may have been missed before the next connection: a lost
    // connection, or failed attempts while the server was already serving.
    let mut missed = false;
    let mut epoch = 0u64;
    let mut down_since: Option<Instant> = None;
    loop {
        let attempt = tokio::select! {
            _ = sup.stop.cancelled() => return,
            r = connect(&sup.client, &sup.settings) => r,
        };
        match attempt {
            Ok(link) => {
                failures = 0;
                if epoch > 0 {
                    sup.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                epoch += 1;
                let end = session(
                    &sup,
                    link,
                    Connection {
                        epoch,
                        after_outage: missed,
                    },
                    down_since.take(),
                )
                .await;
                match end {
                    // The publisher may still be draining on this connection: leave it.
                    End::Stopped => return,
                    End::Lost(error) => {
                        sup.shared.set_connected(None);
                        tracing::warn!(redis = %target, error = %error, "Redis connection lost: serving locally, publishes are dropped until it is back");
                        sup.shared.set_error(error);
                    }
                }
                missed = true;
                down_since = Some(Instant::now());
            }
            Err(error) => {
                if failures == 0 && epoch == 0 {
                    tracing::warn!(redis = %target, error = %error, "Redis unreachable: serving as a single instance and retrying in the background");
                } else {
                    tracing::debug!(redis = %target, error = %error, failures, "Redis reconnection attempt failed");
                }
                sup.shared.set_error(error);
                failures = failures.saturating_add(1);
                missed = true;
                down_since.get_or_insert_with(Instant::now);
            }
        }
        let delay = backoff(failures, &sup.settings);
        tokio::select! {
            _ = sup.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// `backoff_min × 2^(failures−1)`, capped, with ±20% jitter so a fleet that lost
/// Redis together does not reconnect in lockstep.
fn backoff(failures: u32, settings: &RedisSettings) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = settings
        .backoff_min
        .saturating_mul(1 << exp)
        .min(settings.backoff_max);
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

async fn connect(client: &redis::Client, settings: &RedisSettings) -> Result<Link, String> {
    let connect_timeout = settings.target.connect_timeout.unwrap_or(settings.timeout);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(settings.timeout));
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| format!("no subscriber connection within {connect_timeout:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(Link { conn, pubsub })
}

/// One connected period: subscribe everything wanted, announce, then serve until
/// the connection fails or the backend stops.
async fn session(
    sup: &Supervisor,
    link: Link,
    announce: Connection,
    down_since: Option<Instant>,
) -> End {
    let Link { mut conn, pubsub } = link;
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed = HashSet::new();
    // Everything is new on a fresh connection; changes made meanwhile are covered.
    clear_dirty(&sup.shared);
    let all = sup.shared.wanted();
    if let Err(e) = apply(
        &mut sink,
        &mut subscribed,
        all,
        Vec::new(),
        sup.settings.timeout,
    )
    .await
    {
        return End::Lost(e);
    }
    sup.shared.set_connected(Some(conn.clone()));
    tracing::info!(
        redis = %sup.settings.target.display(),
        channels = subscribed.len(),
        outage_ms = down_since.map(|t| t.elapsed().as_millis() as u64),
        "Redis connected"
    );
    sup.events.send_replace(announce);
    let mut ping = tokio::time::interval(sup.settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sup.stop.cancelled() => return End::Stopped,
            _ = sup.shared.changed.notified() => {
                let (add, remove) = pending_changes(&sup.shared, &subscribed);
                if let Err(e) = apply(&mut sink, &mut subscribed, add, remove, sup.settings.timeout).await {
                    return End::Lost(e);
                }
            }
            msg = stream.next() => match msg {
                Some(msg) => forward(sup, &msg),
                None => return End::Lost("subscriber connection closed".into()),
            },
            _ = ping.tick() => {
                if let Err(e) = health_ping(sup, &mut conn, &mut sink).await {
                    return End::Lost(e);
                }
            }
        }
    }
}

/// Forget queued changes: the caller is about to apply the whole wanted set.
fn clear_dirty(shared: &Shared) {
    super::lock(&shared.dirty).clear();
}

/// Channels to subscribe and unsubscribe so that `subscribed` matches the interest.
fn pending_changes(shared: &Shared, subscribed: &HashSet<String>) -> (Vec<String>, Vec<String>) {
    let dirty: Vec<String> = super::lock(&shared.dirty).drain().collect();
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for channel in dirty {
        match (shared.wants(&channel), subscribed.contains(&channel)) {
            (true, false) => add.push(channel),
            (false, true) => remove.push(channel),
            _ => {}
        }
    }
    (add, remove)
}

async fn apply(
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<String>,
    add: Vec<String>,
    remove: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    for chunk in add.chunks(CHANNELS_PER_COMMAND) {
        within(timeout, "SUBSCRIBE", sink.subscribe(chunk)).await?;
        subscribed.extend(chunk.iter().cloned());
    }
    for chunk in remove.chunks(CHANNELS_PER_COMMAND) {
        within(timeout, "UNSUBSCRIBE", sink.unsubscribe(chunk)).await?;
        for c in chunk {
            subscribed.remove(c);
        }
    }
    Ok(())
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| format!("{what} got no reply within {timeout:?}"))?
        .map_err(|e| format!("{what} failed: {e}"))
}

fn forward(sup: &Supervisor, msg: &redis::Msg) {
    let incoming = Incoming {
        channel: msg.get_channel_name().to_owned(),
        payload: Bytes::copy_from_slice(msg.get_payload_bytes()),
    };
    // Never wait here: pings and subscription changes run on this task. A relay
    // that far behind loses messages (counted); resynchronisation cannot see them,
    // but the next update of each field repairs it.
    if let Err(mpsc::error::TrySendError::Full(_)) = sup.incoming.try_send(incoming) {
        Shared::count(&sup.shared.receive_dropped, 1);
    }
}

/// PING both connections (the subscriber may die alone); record the publisher's
/// round trip.
async fn health_ping(
    sup: &Supervisor,
    conn: &mut MultiplexedConnection,
    sink: &mut PubSubSink,
) -> Result<(), String> {
    let timeout = sup.settings.timeout;
    let started = Instant::now();
    within(
        timeout,
        "PING",
        redis::cmd("PING").query_async::<String>(conn),
    )
    .await?;
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
    sup.shared.ping_us.store(us, Ordering::Relaxed);
    within(timeout, "subscriber PING", sink.ping::<redis::Value>()).await?;
    Ok(())
}

/// Send queued messages until stopped; then send what is still queued, once.
pub(super) async fn publish_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(String, Bytes)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_PIPELINE) => {
                if n == 0 {
                    return;
                }
                send(&shared, &mut batch).await;
            }
            _ = stop.cancelled() => break,
        }
    }
    while let Ok(msg) = rx.try_recv() {
        batch.push(msg);
        if batch.len() == MAX_PIPELINE {
            send(&shared, &mut batch).await;
        }
    }
    send(&shared, &mut batch).await;
}

async fn send(shared: &Shared, batch: &mut Vec<(String, Bytes)>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    let Some(mut conn) = shared.connection() else {
        Shared::count(&shared.dropped, n);
        batch.clear();
        return;
    };
    let mut pipe = redis::pipe();
    for (channel, payload) in batch.drain(..) {
        pipe.cmd("PUBLISH").arg(channel).arg(&payload[..]).ignore();
    }
    match pipe.query_async::<()>(&mut conn).await {
        Ok(()) => Shared::count(&shared.published, n),
        Err(e) => {
            // The supervisor's next PING notices a dead connection and reconnects.
            tracing::debug!(error = %e, messages = n, "Redis publish failed; messages dropped");
            Shared::count(&shared.dropped, n);
        }
    }
}
