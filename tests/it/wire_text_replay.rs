//! Two clients replay text states that the SDK's core (`synckit-core`, what the
//! SDK runs as WASM) produced for concurrent typing, through `synckit serve` — on
//! memory, on PostgreSQL (and after a restart, from `documents.state`), and across
//! two instances on one Redis. Both clients end with the core's own merge of their
//! final states, and so does a late joiner.

use crate::common;

use std::time::Duration;

use common::redis::{redis_url, test_prefix, wait_numsub};
use common::{database_url, spawn_serve, subscribe, text_of, Client, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;
use synckit_core::crdt::FugueText;

const DOC: &str = "replayed";

fn json_of(t: &FugueText) -> String {
    serde_json::to_string(t).expect("serialize")
}

fn load(json: &str) -> FugueText {
    serde_json::from_str(json).expect("a state")
}

/// A replica read back from its own state: the in-memory text follows the
/// document order (the client id travels with the state).
fn reload(t: &FugueText) -> FugueText {
    load(&json_of(t))
}

/// Rounds of concurrent typing: each round both replicas type without seeing
/// the other, send their whole state, then merge each other's. (Typing only: the
/// core's merge of a whole deleted block against pieces another replica split
/// depends on the order of merges, so with concurrent deletes two servers merging
/// in different orders may rightly differ; the differential tests compare deletes
/// merge for merge.) Returns every state each replica sent, and the text the core
/// reaches from the last two.
fn concurrent_typing(seed: u64, rounds: usize) -> (Vec<String>, Vec<String>, String) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut a = FugueText::new("alice".into());
    a.insert(0, "Hello world").expect("insert");
    // Bob is his own replica (a loaded state keeps its writer's client id).
    let mut b = FugueText::new("bob".into());
    b.merge(&load(&json_of(&a))).expect("merge");
    let (mut sent_a, mut sent_b) = (vec![json_of(&a)], vec![json_of(&b)]);
    for _ in 0..rounds {
        for (r, sent) in [(&mut a, &mut sent_a), (&mut b, &mut sent_b)] {
            for _ in 0..rng.gen_range(1..=3) {
                let pos = rng.gen_range(0..=r.len());
                let c = ["a", "b", "c", " ", "xy"][rng.gen_range(0..5)];
                r.insert(pos, c).expect("insert");
            }
            sent.push(json_of(r));
        }
        // Each merges the other's state (the relay carries the server's merge).
        let (ja, jb) = (json_of(&a), json_of(&b));
        a.merge(&load(&jb)).expect("merge");
        b.merge(&load(&ja)).expect("merge");
        a = reload(&a);
        b = reload(&b);
    }
    let mut expected = load(sent_a.last().expect("a state"));
    expected
        .merge(&load(sent_b.last().expect("b state")))
        .expect("merge");
    let expected = load(&json_of(&expected)).to_string();
    (sent_a, sent_b, expected)
}

async fn send_state(c: &mut Client, who: &str, n: usize, state: &str) {
    let id = format!("{who}-{n}");
    c.send(
        json!({"type":"delta_batch","documentId":DOC,"messageId":id,"deltas":[
            {"type":"text-state","documentId":DOC,"state":state,"clientId":who,"timestamp":n}
        ]}),
    )
    .await;
    loop {
        let m = c.recv().await;
        assert_ne!(m["type"], "error", "{who} {n}: {m}");
        if m["type"] == "ack" && m["messageId"] == id {
            return;
        }
    }
}

/// The text a client reads from the server, polled until it is `expected` (a
/// relay between instances may still be on its way).
async fn converges(c: &mut Client, expected: &str, what: &str) {
    let mut last = String::new();
    for n in 0..100 {
        let id = format!("check-{n}");
        c.send(json!({"type":"sync_request","id":id,"documentId":DOC}))
            .await;
        let sr = loop {
            let m = c.expect("sync_response").await;
            if m["requestId"] == id {
                break m;
            }
        };
        last = sr.get("textState").map(text_of).unwrap_or_default();
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {last:?}, the core's merge is {expected:?}");
}

/// Replay both histories, alternating, with `a` on `on_a` and `b` on `on_b`; then
/// both and a late joiner on `b`'s server read the core's text. With `redis`
/// (its URL and the document's channel), both instances must listen first.
async fn replay(
    on_a: &TestServer,
    on_b: &TestServer,
    seed: u64,
    redis: Option<(&str, &str)>,
) -> String {
    let (sent_a, sent_b, expected) = concurrent_typing(seed, 12);
    let mut a = Client::connect(on_a, false).await;
    let mut b = Client::connect(on_b, true).await;
    subscribe(&mut a, DOC).await;
    subscribe(&mut b, DOC).await;
    if let Some((url, channel)) = redis {
        wait_numsub(url, channel, 2).await;
    }
    for (n, (sa, sb)) in sent_a.iter().zip(&sent_b).enumerate() {
        send_state(&mut a, "alice", n, sa).await;
        send_state(&mut b, "bob", n, sb).await;
    }
    converges(&mut a, &expected, "client a").await;
    converges(&mut b, &expected, "client b").await;
    let mut late = Client::connect(on_b, true).await;
    subscribe(&mut late, DOC).await;
    converges(&mut late, &expected, "late joiner").await;
    expected
}

#[tokio::test]
async fn concurrent_typing_replayed_through_serve_on_memory() {
    let (_child, server) = spawn_serve(&[]).await;
    replay(&server, &server, 1, None).await;
}

#[sqlx::test(migrations = false)]
async fn concurrent_typing_replayed_through_serve_on_postgres(pool: PgPool) {
    let url = database_url(&pool);
    let env = [("DATABASE_URL", url.as_str())];
    let (child, server) = spawn_serve(&env).await;
    let expected = replay(&server, &server, 2, None).await;
    // The merged state is what PostgreSQL holds: a restarted server serves it.
    drop(child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_child, server) = spawn_serve(&env).await;
    let mut late = Client::connect(&server, false).await;
    let sr = subscribe(&mut late, DOC).await;
    let stored: Value = sr["textState"].clone();
    assert_eq!(text_of(&stored), expected, "after a restart");
}

#[tokio::test]
async fn concurrent_typing_replayed_across_two_instances_on_redis() {
    let url = redis_url();
    let prefix = test_prefix();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_CHANNEL_PREFIX", prefix.as_str()),
    ];
    let (_one, first) = spawn_serve(&env).await;
    let (_two, second) = spawn_serve(&env).await;
    let channel = format!("{prefix}delta:{DOC}");
    replay(&first, &second, 3, Some((&url, &channel))).await;
}
