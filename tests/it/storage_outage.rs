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
use synckit::server::{Backends, ServerConfig};
use synckit::testing::awareness::MemoryAwarenessStore;
use synckit::testing::pubsub::LocalPubSub;
use synckit::testing::storage::PostgresStorage;

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
    Backends::with_postgres(config, Arc::new(PostgresStorage::from_pool(proxied, true)))
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

/// `awareness_subscribe`'s answer (its state, or an error) and how long it took.
async fn awareness_reply(c: &mut Client, doc: String) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    c.send(json!({"type": "awareness_subscribe", "documentId": doc}))
        .await;
    loop {
        let m = c.recv().await;
        if m["type"] == "awareness_state" || m["type"] == "error" {
            return (m, started.elapsed());
        }
    }
}

/// Presence on PostgreSQL (`--awareness-store postgres`, bounded as `serve` builds
/// it) with PostgreSQL cut: awareness calls answer with an error at once instead of
/// waiting for the pool, the close handshake does not wait for the leave, and
/// presence works again once PostgreSQL is back.
#[sqlx::test(migrations = "./migrations")]
async fn with_a_shared_awareness_store_unreachable_presence_fails_fast_and_closes_do_not_wait(
    pool: PgPool,
) {
    use synckit::testing::awareness::{BoundedAwarenessStore, PostgresAwarenessStore};

    let proxy = Proxy::for_pool(&pool).await;
    let config = open_config();
    let mut shared = backends(&config, &pool, &proxy);
    let proxied = shared.postgres.clone().expect("a PostgreSQL pool");
    shared.awareness = Arc::new(BoundedAwarenessStore::new(
        Arc::new(PostgresAwarenessStore::new(
            proxied,
            config.sync.awareness_timeout,
        )),
        Duration::from_millis(500),
    ));
    let server = start_on(config, shared).await;

    let mut watcher = Client::connect(&server, false).await;
    let (m, _) = awareness_reply(&mut watcher, "aw".into()).await;
    assert_eq!(m["type"], "awareness_state", "{m}");

    proxy.cut();
    let mut subscribes = Vec::new();
    let mut updates = Vec::new();
    let mut closes = Vec::new();
    for i in 0..TRIES {
        let mut c = Client::connect(&server, false).await;
        let (m, took) = awareness_reply(&mut c, format!("aw-{i}")).await;
        assert_eq!(m["type"], "error", "{m}");
        subscribes.push(took);
        let started = Instant::now();
        c.send(
            json!({"type": "awareness_update", "documentId": "aw", "clientId": format!("c{i}"),
                      "state": {"cursor": i}, "clock": 1}),
        )
        .await;
        let m = c.expect("error").await;
        assert_eq!(m["error"], "Failed to update awareness", "{m}");
        updates.push(started.elapsed());
        closes.push(close_handshake(c).await);
    }
    // The first call finds the outage and waits its 500 ms: one outlier in 100.
    p99(subscribes, "awareness_subscribe reply");
    p99(updates, "awareness_update error");
    p99(closes, "close handshake");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(&server, false).await;
        let (m, _) = awareness_reply(&mut c, "aw".into()).await;
        if m["type"] == "awareness_state" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence not back 10 s after PostgreSQL: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(watcher);
    server.shutdown.cancel();
    let _ = server.done.await;
}

/// A document first opened while PostgreSQL is away is served from memory without
/// what storage holds. When PostgreSQL returns, it is read back: its subscribers get
/// the stored field and text, and what they wrote meanwhile is kept on both sides.
#[sqlx::test(migrations = "./migrations")]
async fn a_document_opened_during_an_outage_gets_its_stored_state_when_postgres_returns(
    pool: PgPool,
) {
    use common::{fugue, subscribe, text_of};
    let doc = "opened-in-outage";
    let config = open_config();

    // Stored by an earlier server: a field and a text.
    let earlier = start_on(
        config.clone(),
        Backends {
            storage: common::pg_storage(&pool),
            awareness: Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
            pubsub: Arc::new(LocalPubSub::single_instance()),
            postgres: None,
        },
    )
    .await;
    let mut w = Client::connect(&earlier, false).await;
    subscribe(&mut w, doc).await;
    w.send(
        json!({"type": "delta", "documentId": doc, "field": "stored", "value": "before",
                  "clock": {"w": 1}, "clientId": "w", "messageId": "m1"}),
    )
    .await;
    w.expect("ack").await;
    w.send(json!({"type":"delta_batch","documentId":doc,"messageId":"t1","deltas":[
        {"type":"text-state","documentId":doc,"state":fugue("w","Hello"),"clientId":"w","timestamp":1000}
    ]}))
    .await;
    w.expect("ack").await;
    drop(w);
    earlier.shutdown.cancel();
    let _ = earlier.done.await;

    let proxy = Proxy::for_pool(&pool).await;
    let server = start_on(config.clone(), backends(&config, &pool, &proxy)).await;
    proxy.cut();
    let cut_at = Instant::now();
    while ready_status(&server).await != "degraded" {
        assert!(cut_at.elapsed() < Duration::from_secs(3), "not degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Opened from memory: nothing of what is stored.
    let mut c = Client::connect(&server, false).await;
    let sr = subscribe(&mut c, doc).await;
    assert_eq!(sr["state"], json!({}), "{sr}");
    c.send(
        json!({"type": "delta", "documentId": doc, "field": "during", "value": "outage",
                  "clock": {"c": 1}, "clientId": "c", "messageId": "m2"}),
    )
    .await;

    proxy.restore();
    // The write made during the outage is acknowledged once committed; the stored
    // field and text reach the subscriber from the read-back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut acked, mut field, mut text) = (false, false, false);
    while !(acked && field && text) {
        assert!(
            Instant::now() < deadline,
            "after PostgreSQL returned: ack {acked}, stored field {field}, stored text {text}"
        );
        let Some(m) = c.recv_timeout(Duration::from_millis(500)).await else {
            continue;
        };
        match m["type"].as_str() {
            Some("ack") => acked = true,
            Some("delta") if m["delta"]["stored"] == "before" || m["field"] == "stored" => {
                field = true
            }
            Some("delta_batch") => {
                for op in m["deltas"].as_array().into_iter().flatten() {
                    if op["type"] == "text-state" && text_of(&op["state"]) == "Hello" {
                        text = true;
                    } else if op["delta"]["stored"] == "before" || op["field"] == "stored" {
                        field = true;
                    }
                }
            }
            _ => {}
        }
    }

    // A late joiner and storage agree on both sides.
    let mut late = Client::connect(&server, false).await;
    let sr = subscribe(&mut late, doc).await;
    assert_eq!(sr["state"]["stored"], "before", "{sr}");
    assert_eq!(sr["state"]["during"], "outage", "{sr}");
    assert_eq!(text_of(&sr["textState"]), "Hello");
    drop((c, late));
    server.shutdown.cancel();
    let _ = server.done.await;
}
