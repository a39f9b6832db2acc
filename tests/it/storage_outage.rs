//! PostgreSQL unreachable (cut by a TCP proxy the test owns): nothing on a
//! connection's path waits for it. `auth_success`, the first `sync_response`, the
//! close handshake and `/health/ready` answer within milliseconds, readiness says
//! `degraded` within seconds of the cut (from the background prober, before any write
//! fails), and the session rows written behind are reconciled once it returns.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{http, open_config, start_on, user_token, Client, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use synckit::awareness::MemoryAwarenessStore;
use synckit::pubsub::LocalPubSub;
use synckit::server::{Backends, ServerConfig};
use synckit::storage::PostgresStorage;

const TRIES: usize = 100;
const P99_BUDGET: Duration = Duration::from_millis(100);

/// A server on PostgreSQL through `proxy`, with the serve default pool timeout (5 s:
/// what a connection used to wait for).
fn backends(config: &ServerConfig, pool: &PgPool, proxy: &Proxy) -> Backends {
    let direct: PgConnectOptions = (*pool.connect_options()).clone();
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(direct.port(proxy.port));
    Backends {
        storage: Arc::new(PostgresStorage::from_pool(proxied, true)),
        awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
        pubsub: Arc::new(LocalPubSub::single_instance()),
    }
}

fn p99(mut samples: Vec<Duration>, what: &str) -> Duration {
    assert_eq!(samples.len(), TRIES);
    samples.sort();
    let p99 = samples[TRIES * 99 / 100 - 1];
    assert!(
        p99 < P99_BUDGET,
        "{what}: p99 {p99:?} (max {:?}) with PostgreSQL unreachable",
        samples[TRIES - 1]
    );
    p99
}

async fn ready_status(server: &TestServer) -> String {
    let r = http(server.addr, "GET", "/health/ready", &[], None).await;
    r.json()["status"].as_str().unwrap_or_default().to_owned()
}

async fn session_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("sessions")
}

/// Client close frame → server close frame.
async fn close_handshake(mut c: Client) -> Duration {
    let started = Instant::now();
    c.ws.close(None).await.expect("close");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) => break,
            Err(_) => panic!("no close frame within 10 s"),
        }
    }
    started.elapsed()
}

#[sqlx::test(migrations = "./migrations")]
async fn with_postgres_unreachable_connections_and_probes_answer_at_once(pool: PgPool) {
    let proxy = Proxy::for_pool(&pool).await;
    let mut open = open_config();
    open.public_stats = true;
    let server = start_on(open.clone(), backends(&open, &pool, &proxy)).await;
    let authed = ServerConfig::for_tests(true);
    let auth_server = start_on(authed.clone(), backends(&authed, &pool, &proxy)).await;

    // Healthy first: a write is acknowledged, a session row is written.
    let mut first = Client::connect(&server, false).await;
    first
        .send(json!({"type": "subscribe", "documentId": "out-0"}))
        .await;
    first.expect("sync_response").await;
    first
        .send(
            json!({"type": "delta", "documentId": "out-0", "field": "f", "value": 1,
                     "clock": {"c": 1}, "clientId": "c", "messageId": "m0"}),
        )
        .await;
    first.expect("ack").await;
    assert_eq!(ready_status(&server).await, "healthy");

    proxy.cut();
    let cut_at = Instant::now();
    // The prober notices without any write failing.
    loop {
        if ready_status(&server).await == "degraded" {
            break;
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(3),
            "readiness not degraded 3 s after PostgreSQL went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = http(server.addr, "GET", "/stats", &[], None).await.json();
    assert_eq!(stats["persistence"]["degraded"], true, "{stats}");
    let metrics = http(server.addr, "GET", "/metrics", &[], None).await.body;
    assert!(
        metrics.contains("synckit_storage_degraded 1\n"),
        "{metrics}"
    );

    let mut ready = Vec::new();
    let mut first_sync = Vec::new();
    let mut closes = Vec::new();
    let mut auths = Vec::new();
    let mut kept = Vec::new();
    for i in 0..TRIES {
        let started = Instant::now();
        assert_eq!(ready_status(&server).await, "degraded");
        ready.push(started.elapsed());

        let mut c = Client::connect(&server, false).await;
        let started = Instant::now();
        c.send(json!({"type": "sync_request", "documentId": format!("out-{i}")}))
            .await;
        c.expect("sync_response").await;
        first_sync.push(started.elapsed());
        if i % 10 == 0 {
            // Some stay open through the outage: their rows must exist afterwards.
            kept.push(c);
        } else {
            closes.push(close_handshake(c).await);
        }

        let mut a = Client::connect(&auth_server, false).await;
        let started = Instant::now();
        a.send(json!({"type": "auth", "token": user_token("u", &["*"], &["*"], false)}))
            .await;
        a.expect("auth_success").await;
        auths.push(started.elapsed());
        closes.push(close_handshake(a).await);
    }
    p99(ready, "GET /health/ready");
    p99(first_sync, "first sync_response (auth disabled)");
    p99(auths, "auth_success");
    closes.sort();
    let close_p99 = closes[closes.len() * 99 / 100 - 1];
    assert!(
        close_p99 < P99_BUDGET,
        "close handshake: p99 {close_p99:?} with PostgreSQL unreachable"
    );

    // Back: the rows are reconciled with what is open now (the first client and
    // the kept ones on one server, nothing on the other).
    proxy.restore();
    let expected = kept.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = session_ids(&pool).await;
        if ids.len() == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session rows not reconciled: {} rows, {expected} sessions open: {ids:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready_status(&server).await != "healthy" {
        assert!(Instant::now() < deadline, "readiness not healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(kept);
    for s in [server, auth_server] {
        s.shutdown.cancel();
        let _ = s.done.await;
    }
}
