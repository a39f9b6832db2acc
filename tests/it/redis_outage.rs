//! Two instances on one PostgreSQL and one Redis the test owns: Redis is killed and
//! restarted while both instances take writes. Every acknowledged write must end up
//! in storage and in every client's view — including the writes that could not
//! cross while Redis was down, which the resynchronisation after the reconnection
//! brings over. And a document an instance kept cached while nobody there listened
//! (so it heard nothing) catches up when somebody listens again.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::{
    eventually, fleet_config, poll, start_instance, test_prefix, wait_connected, wait_numsub,
    OwnedRedis,
};
use common::{http, pg_storage, subscribe, Client};
use serde_json::{json, Value};
use sqlx::PgPool;
use synckit::testing::pubsub::{PubSub, PubSubState};

type Fields = Arc<Mutex<BTreeMap<String, Value>>>;

/// What the client tasks share with the test.
#[derive(Default)]
struct Traffic {
    stop_writing: AtomicBool,
    stop: AtomicBool,
    /// Writes sent and not yet acknowledged.
    in_flight: AtomicUsize,
    /// Every acknowledged write: field → value.
    acked: Fields,
}

/// A connected client that applies every `delta` it receives to its view until
/// stopped and, if it is a writer, writes a new field every few milliseconds (one
/// at a time, waiting for each ack) until told to stop writing.
async fn run_client(mut c: Client, view: Fields, writer: Option<&'static str>, t: Arc<Traffic>) {
    let doc = "outage-pg";
    let mut i = 0u64;
    let mut waiting: Option<(String, String)> = None;
    while !t.stop.load(Ordering::SeqCst) {
        if let (None, Some(name), false) = (&waiting, writer, t.stop_writing.load(Ordering::SeqCst))
        {
            i += 1;
            let (field, id) = (format!("{name}{i:04}"), format!("{name}-m{i}"));
            t.in_flight.fetch_add(1, Ordering::SeqCst);
            c.send(
                json!({"type":"delta","documentId":doc,"field":field,"value":i,
                          "clock":{name: i},"clientId":name,"timestamp":i,"messageId":id}),
            )
            .await;
            waiting = Some((field, id));
        }
        let Some(m) = c.recv_timeout(Duration::from_millis(10)).await else {
            continue;
        };
        match m["type"].as_str() {
            Some("delta") => {
                let field = m["field"].as_str().expect("field").to_owned();
                let mut v = view.lock().expect("view");
                if m["value"] == json!({"__deleted": true}) {
                    v.remove(&field);
                } else {
                    v.insert(field, m["value"].clone());
                }
            }
            Some("ack") => {
                let Some((field, id)) = waiting.take() else {
                    panic!("unexpected ack {m}");
                };
                assert_eq!(m["messageId"], id.as_str());
                t.acked.lock().expect("acked").insert(field, json!(i));
                t.in_flight.fetch_sub(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
            Some("error") | Some("__close") => panic!("client failed: {m}"),
            _ => {}
        }
    }
}

#[sqlx::test(migrations = false)]
async fn a_redis_restart_mid_traffic_ends_converged_with_no_acknowledged_write_lost(pool: PgPool) {
    let mut redis = OwnedRedis::start().await;
    let url = redis.url();
    let prefix = test_prefix();
    let a = start_instance(fleet_config(&prefix), &url, pg_storage(&pool)).await;
    let b = start_instance(fleet_config(&prefix), &url, pg_storage(&pool)).await;
    let doc = "outage-pg";

    // On each instance: a writer and a reader, in both encodings.
    let mut clients = Vec::new();
    for (server, binary, writer) in [
        (&a.server, false, Some("a")),
        (&a.server, true, None),
        (&b.server, true, Some("b")),
        (&b.server, false, None),
    ] {
        let mut c = Client::connect(server, binary).await;
        subscribe(&mut c, doc).await;
        clients.push((c, writer));
    }
    wait_numsub(&url, &format!("{prefix}delta:{doc}"), 2).await;

    let traffic = Arc::new(Traffic::default());
    let mut views = Vec::new();
    let mut tasks = Vec::new();
    for (c, writer) in clients {
        let view = Fields::default();
        views.push(view.clone());
        tasks.push(tokio::spawn(run_client(c, view, writer, traffic.clone())));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    eventually(Duration::from_secs(5), "both instances to notice", || {
        a.pubsub.state() == PubSubState::Disconnected
            && b.pubsub.state() == PubSubState::Disconnected
    })
    .await;
    let dropped_before = a.pubsub.health().dropped;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        a.pubsub.health().dropped > dropped_before,
        "writes during the outage are published to nobody: dropped and counted"
    );
    redis.restart().await;
    wait_connected(&a.pubsub).await;
    wait_connected(&b.pubsub).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    traffic.stop_writing.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(5),
        "the last writes to be acknowledged",
        || traffic.in_flight.load(Ordering::SeqCst) == 0,
    )
    .await;
    let expected = traffic.acked.lock().expect("acked").clone();
    // A sanity check that traffic ran through every phase, not a rate: a loaded
    // machine (2 cores, other builds) managed 16-33 writes where a quiet one does
    // well over 100.
    assert!(
        expected.len() > 10,
        "traffic ran: {} writes",
        expected.len()
    );

    // No acknowledged write is missing from storage.
    let stored: Value = sqlx::query_scalar("SELECT state FROM documents WHERE id = $1")
        .bind(doc)
        .fetch_one(&pool)
        .await
        .expect("row");
    let stored: BTreeMap<String, Value> =
        serde_json::from_value(stored["fields"].clone()).expect("fields");
    assert_eq!(stored, expected, "storage holds every acknowledged write");

    // Every client converges on it (the outage's writes arrive by resync).
    poll(
        Duration::from_secs(10),
        "every client to converge",
        || async {
            let differing: Vec<String> = views
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let v = v.lock().expect("view");
                    let missing: Vec<&String> = expected
                        .keys()
                        .filter(|k| v.get(*k) != expected.get(*k))
                        .collect();
                    (*v != expected).then(|| {
                        format!(
                            "client {i}: {} fields, wrong or missing {missing:?}",
                            v.len()
                        )
                    })
                })
                .collect();
            if differing.is_empty() {
                Ok(())
            } else {
                Err(differing.join("; "))
            }
        },
    )
    .await;
    // So do late joiners on either instance.
    for inst in [&a, &b] {
        let mut late = Client::connect(&inst.server, false).await;
        let state = subscribe(&mut late, doc).await["state"].clone();
        let state: BTreeMap<String, Value> = serde_json::from_value(state).expect("state");
        assert_eq!(state, expected);
    }
    let resynced: u64 = {
        let mut n = 0;
        for inst in [&a, &b] {
            // A round is counted when it ends, and it may still be waiting (SETTLE,
            // then retries while our own writes commit) after the clients converged.
            let stats = poll(Duration::from_secs(10), "a resync round", || async {
                let stats = http(inst.admin, "GET", "/stats", &[], None).await.json();
                if stats["pubsub"]["resyncs"].as_u64() >= Some(1) {
                    Ok(stats)
                } else {
                    Err(stats["pubsub"].to_string())
                }
            })
            .await;
            assert_eq!(stats["pubsub"]["reconnects"], 1);
            n += stats["pubsub"]["resyncedFields"].as_u64().unwrap_or(0);
        }
        n
    };
    assert!(resynced > 0, "the outage's writes came over by resync");
    // Each instance's events tell the outage.
    for inst in [&a, &b] {
        poll(
            Duration::from_secs(5),
            "the outage in the events",
            || async {
                let page = http(inst.admin, "GET", "/admin/events", &[], None)
                    .await
                    .json();
                let kinds: Vec<String> = page["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                    .collect();
                if kinds.contains(&"pubsub_lost".to_owned())
                    && kinds.contains(&"pubsub_back".to_owned())
                {
                    Ok(())
                } else {
                    let stats = http(inst.admin, "GET", "/stats", &[], None).await.json();
                    Err(format!("{kinds:?} {}", stats["pubsub"]))
                }
            },
        )
        .await;
    }
    traffic.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client task");
    }
    assert!(a.stop().await && b.stop().await, "drained");
}

#[sqlx::test(migrations = false)]
async fn a_document_cached_without_listeners_catches_up_when_listened_to_again(pool: PgPool) {
    let redis = OwnedRedis::start().await;
    let url = redis.url();
    let prefix = test_prefix();
    let a = start_instance(fleet_config(&prefix), &url, pg_storage(&pool)).await;
    let b = start_instance(fleet_config(&prefix), &url, pg_storage(&pool)).await;
    let doc = "cached-doc";
    let write = |value: u64, id: &str| {
        json!({"type":"delta","documentId":doc,"field":"x","value":value,
               "clock":{"w":value},"clientId":"w","timestamp":value,"messageId":id})
    };
    let mut writer = Client::connect(&a.server, false).await;
    subscribe(&mut writer, doc).await;
    writer.send(write(1, "m1")).await;
    writer.collect_until(&["ack", "delta"]).await;

    // B loads the document, then nobody on B listens any more: B stops hearing it
    // but keeps it cached.
    let mut reader = Client::connect(&b.server, true).await;
    assert_eq!(subscribe(&mut reader, doc).await["state"]["x"], 1);
    reader
        .send(json!({"type":"unsubscribe","documentId":doc}))
        .await;
    reader.assert_alive().await;
    wait_numsub(&url, &format!("{prefix}delta:{doc}"), 1).await;
    writer.send(write(2, "m2")).await;
    // Its own broadcast comes from the flush that also publishes it.
    writer.collect_until(&["ack", "delta"]).await;

    // Listening again: whatever the first answer, the value catches up.
    let mut x = subscribe(&mut reader, doc).await["state"]["x"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while x != 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = reader
            .recv_timeout(left)
            .await
            .expect("the cached copy was never brought up to date");
        if m["type"] == "delta" && m["field"] == "x" {
            x = m["value"].clone();
        }
    }
    let mut late = Client::connect(&b.server, false).await;
    assert_eq!(subscribe(&mut late, doc).await["state"]["x"], 2);
    assert!(a.stop().await && b.stop().await, "drained");
}
