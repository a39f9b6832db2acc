//! `POST /_test/clear` with `SYNCKIT_TEST_MODE=true` (docs/operations.md §1): after a
//! clear a new client finds no document, no presence and storage holds no document
//! and no session — on the memory backends and on PostgreSQL (with the PostgreSQL
//! awareness store). A connection still subscribed keeps its subscription to the
//! emptied document. (Without test mode the route does not exist: `http.rs`.)

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{http, open_config, pg_backend, start_on, Client, TestServer};
use serde_json::{json, Value};
use sqlx::PgPool;
use synckit::server::Backends;
use synckit::testing::awareness::{AwarenessStore, MemoryAwarenessStore, PostgresAwarenessStore};
use synckit::testing::pubsub::LocalPubSub;
use synckit::testing::storage::{
    CompatStore, MemoryStorage, SessionRecord, StorageAdapter, SyncStore,
};

const KEPT: &str = "clear:kept";
const GONE: &str = "clear:gone";

fn delta(doc: &str, field: &str, value: Value, id: &str) -> Value {
    json!({"type": "delta", "documentId": doc, "field": field, "value": value,
           "clock": {"c1": 1}, "clientId": "c1", "timestamp": 1, "messageId": id})
}

async fn write_acked(c: &mut Client, doc: &str, field: &str, value: Value, id: &str) {
    c.send(json!({"type": "subscribe", "documentId": doc}))
        .await;
    c.expect("sync_response").await;
    c.send(delta(doc, field, value, id)).await;
    loop {
        let m = c.recv().await;
        match m["type"].as_str() {
            Some("ack") if m["messageId"] == id => return,
            Some("error") => panic!("error instead of ack: {m}"),
            _ => {}
        }
    }
}

async fn sync_state(c: &mut Client, doc: &str) -> Value {
    c.send(json!({"type": "sync_request", "id": "r", "documentId": doc}))
        .await;
    loop {
        let m = c.expect("sync_response").await;
        if m["documentId"] == doc {
            return m["state"].clone();
        }
    }
}

async fn presence(c: &mut Client, doc: &str) -> Vec<Value> {
    c.send(json!({"type": "awareness_subscribe", "documentId": doc}))
        .await;
    let m = c.expect("awareness_state").await;
    m["states"].as_array().expect("states").clone()
}

async fn clear_empties_every_store<S: StorageAdapter + CompatStore>(
    storage: Arc<S>,
    awareness: Arc<dyn AwarenessStore>,
) {
    let mut config = open_config();
    config.test_mode = true;
    let backends = Backends {
        storage: storage.clone(),
        awareness,
        pubsub: Arc::new(LocalPubSub::single_instance()),
        postgres: None,
    };
    let server = start_on(config, backends).await;

    // A stays connected, subscribed and present; W writes another document and
    // leaves; a stale session row and a document only storage knows stand for what
    // earlier tests (or another process) left behind.
    let mut a = Client::connect(&server, false).await;
    write_acked(&mut a, KEPT, "test", json!("value"), "m1").await;
    a.send(
        json!({"type": "awareness_update", "documentId": KEPT, "clientId": "client-a",
                  "state": {"name": "A"}, "clock": 1}),
    )
    .await;
    let mut w = Client::connect(&server, false).await;
    write_acked(&mut w, GONE, "test", json!("value"), "m2").await;
    w.close_and_wait().await;
    storage
        .save_session(&SessionRecord {
            id: "stale-session".into(),
            user_id: "someone".into(),
            client_id: None,
            metadata: json!({}).into(),
        })
        .await
        .expect("save session");
    storage
        .save_document("clear:stored-only", &json!({"fields": {"x": 1}}))
        .await
        .expect("save document");
    let mut probe = Client::connect(&server, false).await;
    // A's update is stored while W writes; a shared store may take a moment more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while presence(&mut probe, KEPT).await.len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "A never present");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sync_state(&mut probe, GONE).await, json!({"test": "value"}));
    probe.close_and_wait().await;
    assert_eq!(storage.list_documents(10, 0).await.expect("list").len(), 3);

    let r = http(server.addr, "POST", "/_test/clear", &[], Some("{}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"success": true}));

    let documents = storage.list_documents(10, 0).await.expect("list documents");
    assert!(documents.is_empty(), "storage holds {documents:?}");
    let sessions = storage.list_sessions(100, 0).await.expect("list sessions");
    assert!(
        sessions.iter().all(|s| s.id != "stale-session"),
        "{sessions:?}"
    );

    let mut b = Client::connect(&server, false).await;
    assert_eq!(sync_state(&mut b, KEPT).await, json!({}));
    assert_eq!(sync_state(&mut b, GONE).await, json!({}));
    assert_eq!(sync_state(&mut b, "clear:stored-only").await, json!({}));
    assert_eq!(presence(&mut b, KEPT).await, Vec::<Value>::new());

    // A is still subscribed to the emptied document: it gets B's write, and what
    // storage holds afterwards is that write alone.
    b.send(json!({"type": "subscribe", "documentId": KEPT}))
        .await;
    b.expect("sync_response").await;
    b.send(delta(KEPT, "after", json!(1), "m3")).await;
    b.expect("ack").await;
    // (A may still have the echo of its own earlier write to read first.)
    while a.expect("delta").await["field"] != "after" {}
    let stored = storage
        .load_document(KEPT)
        .await
        .expect("load")
        .expect("stored again");
    assert_eq!(
        stored.fields.into_iter().collect::<Vec<_>>(),
        vec![("after".to_owned(), json!(1))]
    );
    stop(server).await;
}

async fn stop(server: TestServer) {
    server.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server.done).await;
}

#[tokio::test]
async fn test_clear_empties_memory_stores() {
    let config = open_config();
    clear_empties_every_store(
        Arc::new(MemoryStorage::new()),
        Arc::new(MemoryAwarenessStore::new(config.sync.awareness_timeout)),
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn test_clear_empties_postgres_stores(pool: PgPool) {
    let storage = pg_backend(&pool);
    // Migrated before the server starts: the awareness store needs its table.
    storage.connect().await.expect("connect and migrate");
    let awareness = PostgresAwarenessStore::new(pool, open_config().sync.awareness_timeout);
    clear_empties_every_store(storage, Arc::new(awareness)).await;
}
