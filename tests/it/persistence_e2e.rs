//! End to end on the real PostgreSQL: writes made over the WebSocket survive a server
//! restart, a database outage (cut by a TCP proxy the test owns) loses no
//! acknowledged write and delays acks until the write is durable, and `synckit
//! serve` flushes everything on SIGTERM.

use crate::common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{open_config, pg_storage, spawn_serve, start_on, Client, TestServer};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use synckit::server::{Backends, ServerConfig};

fn backends(config: &ServerConfig, pool: PgPool) -> Backends {
    Backends::with_storage(config, pg_storage(&pool))
}

async fn stop(server: TestServer) -> bool {
    server.shutdown.cancel();
    server.done.await.expect("server task")
}

fn delta(doc: &str, field: &str, value: Value, id: &str) -> Value {
    json!({"type": "delta", "documentId": doc, "field": field, "value": value,
           "clock": {"c1": 1}, "clientId": "c1", "timestamp": 1, "messageId": id})
}

/// Subscribe and return the `sync_response` state.
async fn state_of(server: &TestServer, doc: &str) -> Value {
    let mut c = Client::connect(server, false).await;
    c.send(json!({"type": "subscribe", "documentId": doc}))
        .await;
    c.expect("sync_response").await["state"].clone()
}

async fn wait_ack(c: &mut Client, id: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await {
            Some(m) if m["type"] == "ack" && m["messageId"] == id => return true,
            Some(m) if m["type"] == "error" => panic!("error instead of ack: {m}"),
            Some(_) => continue,
            None => return false,
        }
    }
}

#[sqlx::test(migrations = false)]
async fn writes_survive_a_restart_and_deletes_stay_deleted(pool: PgPool) {
    let config = open_config();
    let server = start_on(config.clone(), backends(&config, pool.clone())).await;
    let mut a = Client::connect(&server, false).await;
    a.send(json!({"type": "subscribe", "documentId": "doc-r"}))
        .await;
    a.expect("sync_response").await;
    a.send(delta("doc-r", "title", json!("hello"), "m1")).await;
    a.send(delta("doc-r", "n", json!(0), "m2")).await;
    a.send(delta("doc-r", "gone", json!(true), "m3")).await;
    a.send(json!({"type": "delta", "documentId": "doc-r", "field": "gone", "value": {"__deleted": true},
                  "clock": {"c1": 2}, "clientId": "c1", "timestamp": 2, "messageId": "m4"}))
        .await;
    for id in ["m1", "m2", "m3", "m4"] {
        assert!(
            wait_ack(&mut a, id, Duration::from_secs(5)).await,
            "ack {id}"
        );
    }
    assert!(stop(server).await, "drained");

    // The row is what the TS server reads: {"id", "fields"}.
    let stored: Value = sqlx::query_scalar("SELECT state FROM documents WHERE id = 'doc-r'")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(
        stored,
        json!({"id": "doc-r", "fields": {"title": "hello", "n": 0}})
    );
    let deltas: i64 = sqlx::query_scalar("SELECT count(*) FROM deltas WHERE document_id = 'doc-r'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(deltas, 4);

    let server = start_on(config.clone(), backends(&config, pool.clone())).await;
    assert_eq!(
        state_of(&server, "doc-r").await,
        json!({"title": "hello", "n": 0})
    );
    stop(server).await;
}

#[sqlx::test(migrations = false)]
async fn an_outage_delays_acks_and_loses_no_acknowledged_write(pool: PgPool) {
    let direct: PgConnectOptions = (*pool.connect_options()).clone();
    let proxy = Proxy::start(format!("{}:{}", direct.get_host(), direct.get_port())).await;
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(direct.clone().port(proxy.port));
    let mut config = open_config();
    config.persistence.retry_min = Duration::from_millis(20);
    config.persistence.retry_max = Duration::from_millis(200);
    config.persistence.max_backlog = 1;
    config.public_stats = true;
    let server = start_on(config.clone(), backends(&config, proxied)).await;

    let mut a = Client::connect(&server, false).await;
    let mut b = Client::connect(&server, false).await;
    for c in [&mut a, &mut b] {
        c.send(json!({"type": "subscribe", "documentId": "doc-o"}))
            .await;
        c.expect("sync_response").await;
    }
    a.send(delta("doc-o", "before", json!(1), "m1")).await;
    assert!(wait_ack(&mut a, "m1", Duration::from_secs(5)).await);

    proxy.cut();
    a.send(delta("doc-o", "during", json!(2), "m2")).await;
    // A full queue refuses the next write outright (error reply, nothing applied).
    a.send(delta("doc-o", "refused", json!(3), "m3")).await;
    let refused = a.expect("error").await;
    assert_eq!(refused["details"]["documentId"], "doc-o", "{refused}");
    // Applied and broadcast while the database is away...
    let mut d = b.expect("delta").await;
    if d["field"] == "before" {
        d = b.expect("delta").await;
    }
    assert_eq!(d["field"], "during");
    // ...but not acknowledged: the write is not durable yet.
    assert!(
        !wait_ack(&mut a, "m2", Duration::from_millis(800)).await,
        "ack sent before the write was durable"
    );
    // Operators see it: readiness degraded, the backlog in /stats.
    let ready = common::http(server.addr, "GET", "/health/ready", &[], None).await;
    assert_eq!(ready.json()["status"], "degraded");
    let stats = common::http(server.addr, "GET", "/stats", &[], None).await;
    let persistence = &stats.json()["persistence"];
    assert_eq!(persistence["backlog"], 1, "{persistence}");
    assert_eq!(persistence["degraded"], true);
    assert!(persistence["lastError"].is_string());

    proxy.restore();
    assert!(
        wait_ack(&mut a, "m2", Duration::from_secs(10)).await,
        "ack after the database returned"
    );
    assert!(stop(server).await, "drained");

    let server = start_on(config.clone(), backends(&config, pool.clone())).await;
    assert_eq!(
        state_of(&server, "doc-o").await,
        json!({"before": 1, "during": 2})
    );
    stop(server).await;
}

/// A server on PostgreSQL through a proxy, a client whose write m0 is acknowledged;
/// then the database is cut, and the client sends m1 (a delta: its ack waits for
/// the commit) and m2 (a CRDT op only relayed, nothing to store: decided at once).
async fn m1_pending_then_m2_decided(pool: &PgPool, doc: &str) -> (Proxy, TestServer, Client) {
    let proxy = Proxy::for_pool(pool).await;
    let direct: PgConnectOptions = (*pool.connect_options()).clone();
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(direct.port(proxy.port));
    let mut config = open_config();
    config.persistence.retry_min = Duration::from_millis(20);
    config.persistence.retry_max = Duration::from_millis(200);
    let server = start_on(config.clone(), backends(&config, proxied)).await;
    let mut a = Client::connect(&server, false).await;
    a.send(json!({"type": "subscribe", "documentId": doc}))
        .await;
    a.expect("sync_response").await;
    a.send(delta(doc, "before", json!(0), "m0")).await;
    assert!(wait_ack(&mut a, "m0", Duration::from_secs(5)).await);
    proxy.cut();
    a.send(delta(doc, "pending", json!(1), "m1")).await;
    a.send(
        json!({"type": "delta_batch", "documentId": doc, "messageId": "m2",
                  "deltas": [{"type": "increment", "amount": 1}]}),
    )
    .await;
    (proxy, server, a)
}

/// Acks leave in the order the writes arrived (docs/protocol.md §7.11): the ack of a
/// batch with nothing to persist, decided at once, waits behind the ack of an earlier
/// write still waiting for its commit.
#[sqlx::test(migrations = false)]
async fn an_ack_decided_at_once_waits_behind_an_earlier_pending_one(pool: PgPool) {
    let (proxy, server, mut a) = m1_pending_then_m2_decided(&pool, "doc-q").await;
    let before_pong = a.messages_before_pong().await;
    assert!(
        before_pong.iter().all(|m| m["type"] != "ack"),
        "an ack overtook the pending ack of m1: {before_pong:?}"
    );
    proxy.restore();
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let m = a
            .recv_timeout(Duration::from_secs(10))
            .await
            .expect("acks after the database returned");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "ack" {
            acks.push(m["messageId"].clone());
        }
    }
    assert_eq!(acks, [json!("m1"), json!("m2")]);
    assert!(stop(server).await, "drained");
}

/// At shutdown the acks of applied writes still leave in arrival order, before the
/// close frame (docs/protocol.md §7.11): the one decided at once waits for the one
/// whose commit waits for the database.
#[sqlx::test(migrations = false)]
async fn at_shutdown_acks_leave_in_arrival_order_before_the_close_frame(pool: PgPool) {
    let (proxy, server, mut a) = m1_pending_then_m2_decided(&pool, "doc-z").await;
    a.messages_before_pong().await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let mut seen = Vec::new();
    loop {
        let m = a
            .recv_timeout(Duration::from_secs(10))
            .await
            .expect("acks, then the close frame");
        match m["type"].as_str() {
            Some("ack") => seen.push(m["messageId"].clone()),
            Some("__close") => {
                assert_eq!(m["code"], 1001, "{m}");
                break;
            }
            Some("error") => panic!("{m}"),
            _ => {}
        }
    }
    assert_eq!(seen, [json!("m1"), json!("m2")]);
    assert!(server.done.await.expect("server task"), "drained");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_session_row_lives_as_long_as_its_connection(pool: PgPool) {
    let config = open_config();
    let server = start_on(config.clone(), backends(&config, pool.clone())).await;
    let mut a = Client::connect(&server, false).await;
    a.assert_alive().await;
    // Session rows are written behind (within a short batch window).
    let mut rows: Vec<(String, Value)> = Vec::new();
    for _ in 0..100 {
        rows = sqlx::query_as("SELECT user_id, metadata FROM sessions")
            .fetch_all(&pool)
            .await
            .expect("sessions");
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "anonymous-127.0.0.1");
    assert_eq!(rows[0].1["ip"], "127.0.0.1");
    assert!(rows[0].1["serverId"].is_string());
    a.close_and_wait().await;
    let mut left = 1;
    for _ in 0..100 {
        left = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sessions")
            .fetch_one(&pool)
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the row is deleted on close");
    stop(server).await;
}

#[sqlx::test(migrations = false)]
async fn a_database_down_at_start_serves_from_memory_then_catches_up(pool: PgPool) {
    let direct: PgConnectOptions = (*pool.connect_options()).clone();
    let proxy = Proxy::start(format!("{}:{}", direct.get_host(), direct.get_port())).await;
    proxy.cut();
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(direct.clone().port(proxy.port));
    let mut config = open_config();
    config.persistence.retry_min = Duration::from_millis(20);
    config.persistence.retry_max = Duration::from_millis(200);
    let server = start_on(config.clone(), backends(&config, proxied)).await;

    let mut a = Client::connect(&server, false).await;
    a.send(json!({"type": "subscribe", "documentId": "doc-s"}))
        .await;
    a.expect("sync_response").await;
    a.send(delta("doc-s", "x", json!("early"), "m1")).await;
    let d = a.expect("delta").await;
    assert_eq!(d["value"], "early");
    assert!(!wait_ack(&mut a, "m1", Duration::from_millis(500)).await);

    proxy.restore();
    assert!(wait_ack(&mut a, "m1", Duration::from_secs(10)).await);
    assert!(stop(server).await);
    // The schema was created once the database came back, and the write is there.
    let stored: Value = sqlx::query_scalar("SELECT state FROM documents WHERE id = 'doc-s'")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(stored["fields"], json!({"x": "early"}));
}

#[sqlx::test(migrations = "./migrations")]
async fn sigterm_flushes_every_acknowledged_write(pool: PgPool) {
    let url = common::database_url(&pool);
    let (mut child, server) = spawn_serve(&[("DATABASE_URL", &url)]).await;
    let mut a = Client::connect(&server, false).await;
    a.send(json!({"type": "subscribe", "documentId": "doc-t"}))
        .await;
    a.expect("sync_response").await;
    for i in 0..100 {
        a.send(delta("doc-t", &format!("f{i}"), json!(i), &format!("m{i}")))
            .await;
    }
    assert!(wait_ack(&mut a, "m99", Duration::from_secs(10)).await);
    // A burst still in flight when the signal arrives.
    for i in 100..300 {
        a.send(delta("doc-t", &format!("f{i}"), json!(i), &format!("m{i}")))
            .await;
    }
    common::send_signal(child.id().expect("pid"), "TERM");
    let mut acked: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    while let Some(m) = a.recv_timeout(Duration::from_secs(10)).await {
        match m["type"].as_str() {
            Some("ack") => acked.push(m["messageId"].as_str().expect("id").to_owned()),
            Some("__close") => {
                assert_eq!(m["code"], 1001);
                break;
            }
            _ => {}
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exited")
        .expect("status");
    assert!(exit.success(), "exit status {exit:?}");

    let fields: Value =
        sqlx::query_scalar("SELECT state -> 'fields' FROM documents WHERE id = 'doc-t'")
            .fetch_one(&pool)
            .await
            .expect("row");
    for id in &acked {
        let i: usize = id[1..].parse().expect("index");
        assert_eq!(
            fields[format!("f{i}")],
            json!(i),
            "acknowledged {id} missing"
        );
    }
}

/// A delta from writer `client` with its own clock entry `tick`.
fn delta_from(client: &str, tick: u64, doc: &str, field: &str, value: Value, id: &str) -> Value {
    json!({"type": "delta", "documentId": doc, "field": field, "value": value,
           "clock": {client: tick}, "clientId": client, "timestamp": tick, "messageId": id})
}

/// Send `(messageId, delta)` writes, then wait for their acks, in send order (other
/// messages, such as the other writers' broadcasts, are skipped).
async fn burst(c: &mut Client, writes: Vec<(String, Value)>) {
    let ids: Vec<String> = writes.iter().map(|(id, _)| id.clone()).collect();
    for (_, w) in writes {
        c.send(w).await;
    }
    let mut acked = 0;
    while acked < ids.len() {
        let m = c
            .recv_timeout(Duration::from_secs(20))
            .await
            .expect("acks within 20 s");
        assert_ne!(m["type"], "error", "error instead of ack: {m}");
        if m["type"] == "ack" {
            assert_eq!(m["messageId"], ids[acked].as_str(), "acks in send order");
            acked += 1;
        }
    }
}

/// Four writers, so several groups are in flight at once, and still one document's
/// writes commit in apply order (docs/storage.md §3.6): three clients race on one
/// field of a hot document while twenty others keep every writer busy with their
/// own documents. PostgreSQL ends holding what the server applied last, and the hot
/// document's delta rows are in each client's send order.
#[sqlx::test(migrations = false)]
async fn several_writers_commit_each_documents_writes_in_order(pool: PgPool) {
    const HOT: &str = "doc-hot";
    const BURSTS: usize = 8;
    const PER_BURST: usize = 25;
    let mut config = open_config();
    config.persistence.writers = 4;
    config.sync.max_messages_per_minute = 0;
    let server = start_on(config.clone(), backends(&config, pool.clone())).await;

    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..3 {
        let mut c = Client::connect(&server, false).await;
        tasks.spawn(async move {
            let me = format!("hot-{k}");
            c.send(json!({"type": "subscribe", "documentId": HOT}))
                .await;
            c.expect("sync_response").await;
            for b in 0..BURSTS {
                let writes = (b * PER_BURST..(b + 1) * PER_BURST)
                    .map(|i| {
                        let id = format!("{me}-{i}");
                        let value = json!(format!("{me}-{i:04}"));
                        (
                            id.clone(),
                            delta_from(&me, i as u64 + 1, HOT, "x", value, &id),
                        )
                    })
                    .collect();
                burst(&mut c, writes).await;
            }
        });
    }
    for j in 0..20 {
        let mut c = Client::connect(&server, false).await;
        tasks.spawn(async move {
            let me = format!("load-{j}");
            let doc = format!("doc-load-{j}");
            c.send(json!({"type": "subscribe", "documentId": doc}))
                .await;
            c.expect("sync_response").await;
            for b in 0..BURSTS {
                let writes = (b * PER_BURST..(b + 1) * PER_BURST)
                    .map(|i| {
                        let id = format!("{me}-{i}");
                        let field = format!("f{}", i % 7);
                        (
                            id.clone(),
                            delta_from(&me, i as u64 + 1, &doc, &field, json!(i), &id),
                        )
                    })
                    .collect();
                burst(&mut c, writes).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }

    let applied = state_of(&server, HOT).await["x"].clone();
    let stored: Value =
        sqlx::query_scalar("SELECT state -> 'fields' -> 'x' FROM documents WHERE id = $1")
            .bind(HOT)
            .fetch_one(&pool)
            .await
            .expect("hot row");
    assert_eq!(stored, applied, "PostgreSQL holds the last applied value");
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT client_id, value FROM deltas WHERE document_id = $1 ORDER BY timestamp, id",
    )
    .bind(HOT)
    .fetch_all(&pool)
    .await
    .expect("hot deltas");
    assert_eq!(rows.len(), 3 * BURSTS * PER_BURST);
    assert_eq!(
        rows.last().map(|r| &r.1),
        Some(&stored),
        "the last row is the value"
    );
    for k in 0..3 {
        let me = format!("hot-{k}");
        let mine: Vec<String> = rows
            .iter()
            .filter(|(c, _)| *c == me)
            .map(|(_, v)| v.as_str().expect("string").to_owned())
            .collect();
        let expected: Vec<String> = (0..BURSTS * PER_BURST)
            .map(|i| format!("{me}-{i:04}"))
            .collect();
        assert_eq!(mine, expected, "{me}'s rows in send order");
    }
    for j in 0..20 {
        let fields: Value =
            sqlx::query_scalar("SELECT state -> 'fields' FROM documents WHERE id = $1")
                .bind(format!("doc-load-{j}"))
                .fetch_one(&pool)
                .await
                .expect("load row");
        let last = BURSTS * PER_BURST - 1;
        for f in 0..7 {
            let i = last - (last + 7 - f) % 7;
            assert_eq!(fields[format!("f{f}")], json!(i), "doc-load-{j} f{f}");
        }
    }
    assert!(stop(server).await, "drained");
}

/// SIGKILL while writes are in flight on several writers: whatever was acknowledged
/// is in PostgreSQL (an ack leaves only after the commit that holds its write).
#[sqlx::test(migrations = "./migrations")]
async fn sigkill_loses_no_acknowledged_write(pool: PgPool) {
    let url = common::database_url(&pool);
    let (mut child, server) =
        spawn_serve(&[("DATABASE_URL", &url), ("SYNCKIT_PERSIST_WRITERS", "4")]).await;
    let mut clients = Vec::new();
    for j in 0..8 {
        let mut c = Client::connect(&server, false).await;
        c.send(json!({"type": "subscribe", "documentId": format!("doc-k{j}")}))
            .await;
        c.expect("sync_response").await;
        clients.push(c);
    }
    let mut acked: Vec<Vec<usize>> = vec![Vec::new(); clients.len()];
    for (j, c) in clients.iter_mut().enumerate() {
        let doc = format!("doc-k{j}");
        let writes = (0..50)
            .map(|i| {
                let id = format!("m{i}");
                (id.clone(), delta(&doc, &format!("f{i}"), json!(i), &id))
            })
            .collect();
        burst(c, writes).await;
        acked[j].extend(0..50);
    }
    // A burst on every document, then the kill while it is being committed.
    for (j, c) in clients.iter_mut().enumerate() {
        let doc = format!("doc-k{j}");
        for i in 50..250 {
            c.send(delta(&doc, &format!("f{i}"), json!(i), &format!("m{i}")))
                .await;
        }
    }
    common::send_signal(child.id().expect("pid"), "KILL");
    for (j, c) in clients.iter_mut().enumerate() {
        while let Some(m) = c.recv_timeout(Duration::from_secs(5)).await {
            if m["type"] == "ack" {
                let id = m["messageId"].as_str().expect("id");
                acked[j].push(id[1..].parse().expect("index"));
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let mut in_burst = 0;
    for (j, ids) in acked.iter().enumerate() {
        in_burst += ids.iter().filter(|&&i| i >= 50).count();
        let fields: Value =
            sqlx::query_scalar("SELECT state -> 'fields' FROM documents WHERE id = $1")
                .bind(format!("doc-k{j}"))
                .fetch_one(&pool)
                .await
                .expect("row");
        for i in ids {
            assert_eq!(
                fields[format!("f{i}")],
                json!(i),
                "acknowledged doc-k{j} m{i} missing"
            );
        }
    }
    eprintln!("acknowledged before the kill: {in_burst} of the 1,600-write burst");
}
