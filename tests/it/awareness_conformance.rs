//! One awareness-store conformance suite, run against the memory, PostgreSQL and Redis
//! stores.
//!
//! Each check is a plain `async fn(Arc<dyn AwarenessStore>)`; `conformance!` turns
//! every check into `memory::<check>` (`#[tokio::test]`, multi-threaded so the
//! concurrency checks really race), `postgres::<check>` (`#[sqlx::test]`, a fresh
//! migrated database per test, needs `DATABASE_URL`) and `redis::<check>` (needs
//! `REDIS_URL`; a fresh random key prefix per test, deleted afterwards, so tests share
//! one Redis without seeing each other). The memory store's unit tests are the
//! reference: whatever it does, the other stores must do too. A missing database or
//! Redis fails the tests; they never skip.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use synckit::testing::awareness::{AwarenessEntry, AwarenessStore, AwarenessUpdate, SetOutcome};
use tokio::sync::Barrier;

const TIMEOUT: Duration = Duration::from_secs(30);
const TIMEOUT_MS: i64 = 30_000;
/// A realistic wall clock (ms since the epoch), with a millisecond part, so the
/// PostgreSQL round trip through `timestamptz` is exercised at real magnitudes.
const T0: i64 = 1_700_000_000_123;
/// Writers per concurrency check.
const WRITERS: u64 = 20;

type Store = Arc<dyn AwarenessStore>;

fn update(
    doc: &str,
    client: &str,
    conn: &str,
    state: Option<Value>,
    clock: u64,
    now: i64,
) -> AwarenessUpdate {
    AwarenessUpdate {
        document_id: doc.into(),
        client_id: client.into(),
        connection_id: conn.into(),
        // One user for the clock checks; the ownership checks use `as_user`.
        user_id: "u".into(),
        state,
        clock,
        now_ms: now,
    }
}

async fn set(s: &Store, u: AwarenessUpdate) -> SetOutcome {
    s.set(u).await.expect("set")
}

async fn put(s: &Store, doc: &str, client: &str, conn: &str, clock: u64, now: i64) -> SetOutcome {
    set(
        s,
        update(doc, client, conn, Some(json!({"c": clock})), clock, now),
    )
    .await
}

async fn all(s: &Store, doc: &str, now: i64) -> Vec<AwarenessEntry> {
    s.get_all(doc, now).await.expect("get_all")
}

async fn count(s: &Store) -> usize {
    s.count().await.expect("count")
}

/// (document, client) pairs, sorted: the memory store lists in hash order.
fn keys(entries: &[AwarenessEntry]) -> Vec<(String, String)> {
    let mut k: Vec<_> = entries
        .iter()
        .map(|e| (e.document_id.clone(), e.client_id.clone()))
        .collect();
    k.sort();
    k
}

fn key(doc: &str, client: &str) -> (String, String) {
    (doc.to_owned(), client.to_owned())
}

// ---------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------

async fn first_update_is_accepted_and_round_trips(s: Store) {
    let state = json!({"user": {"name": "Zoë", "cursor": [1, 2]}, "typing": true, "n": null});
    let clock = (1u64 << 53) - 1; // the largest clock a JavaScript SDK can send
    assert_eq!(
        set(&s, update("d", "a", "c1", Some(state.clone()), clock, T0)).await,
        SetOutcome::Accepted
    );
    assert_eq!(
        all(&s, "d", T0).await,
        vec![AwarenessEntry {
            document_id: "d".into(),
            client_id: "a".into(),
            connection_id: "c1".into(),
            user_id: "u".into(),
            state,
            clock,
            last_seen_ms: T0,
        }]
    );
    assert_eq!(count(&s).await, 1);
}

async fn clock_zero_is_accepted_when_nothing_is_stored(s: Store) {
    assert_eq!(put(&s, "d", "a", "c1", 0, T0).await, SetOutcome::Accepted);
    assert_eq!(put(&s, "d", "a", "c1", 0, T0 + 1).await, SetOutcome::Stale);
    assert_eq!(
        put(&s, "d", "a", "c1", 1, T0 + 2).await,
        SetOutcome::Accepted
    );
}

async fn newer_clock_replaces_everything(s: Store) {
    put(&s, "d", "a", "c1", 1, T0).await;
    assert_eq!(
        put(&s, "d", "a", "c2", 5, T0 + 7).await,
        SetOutcome::Accepted
    );
    let got = all(&s, "d", T0 + 7).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].state, json!({"c": 5}));
    assert_eq!(got[0].clock, 5);
    assert_eq!(got[0].connection_id, "c2");
    assert_eq!(got[0].last_seen_ms, T0 + 7);
    assert_eq!(count(&s).await, 1);
}

async fn older_and_equal_clocks_are_stale_and_change_nothing(s: Store) {
    put(&s, "d", "a", "c1", 5, T0).await;
    let before = all(&s, "d", T0).await;
    for clock in [5, 4, 0] {
        let u = update(
            "d",
            "a",
            "c2",
            Some(json!({"stale": clock})),
            clock,
            T0 + 10,
        );
        assert_eq!(set(&s, u).await, SetOutcome::Stale, "clock {clock}");
    }
    // Neither the state, the connection nor the last-seen time moved: a stale update
    // does not keep an entry alive.
    assert_eq!(all(&s, "d", T0).await, before);
    assert_eq!(s.expired(T0 + TIMEOUT_MS).await.expect("expired").len(), 1);
}

async fn clocks_are_per_document_and_client(s: Store) {
    put(&s, "d1", "a", "c1", 9, T0).await;
    // Same client in another document, another client in the same document: both fresh.
    assert_eq!(put(&s, "d2", "a", "c1", 1, T0).await, SetOutcome::Accepted);
    assert_eq!(put(&s, "d1", "b", "c1", 1, T0).await, SetOutcome::Accepted);
    assert_eq!(count(&s).await, 3);
}

async fn leave_removes_whatever_its_clock(s: Store) {
    put(&s, "d", "a", "c1", 5, T0).await;
    put(&s, "d", "b", "c1", 5, T0).await;
    put(&s, "d2", "a", "c1", 5, T0).await;
    assert_eq!(
        set(&s, update("d", "a", "c9", None, 0, T0 + 1)).await,
        SetOutcome::Left
    );
    assert_eq!(keys(&all(&s, "d", T0 + 1).await), vec![key("d", "b")]);
    assert_eq!(keys(&all(&s, "d2", T0 + 1).await), vec![key("d2", "a")]);
    assert_eq!(count(&s).await, 2);
    // The leave forgot the clock: the client may come back with any clock.
    assert_eq!(
        put(&s, "d", "a", "c1", 1, T0 + 2).await,
        SetOutcome::Accepted
    );
}

async fn leave_without_an_entry_is_still_left(s: Store) {
    assert_eq!(
        set(&s, update("d", "ghost", "c1", None, 3, T0)).await,
        SetOutcome::Left
    );
    assert_eq!(count(&s).await, 0);
    assert!(all(&s, "d", T0).await.is_empty());
}

async fn get_all_excludes_expired_entries(s: Store) {
    put(&s, "d", "a", "c1", 1, T0).await;
    put(&s, "d", "b", "c1", 1, T0 + 10_000).await;
    assert_eq!(all(&s, "d", T0 + TIMEOUT_MS - 1).await.len(), 2);
    // Exactly `timeout` after the last update the entry is expired.
    assert_eq!(
        keys(&all(&s, "d", T0 + TIMEOUT_MS).await),
        vec![key("d", "b")]
    );
    assert!(all(&s, "d", T0 + 10_000 + TIMEOUT_MS).await.is_empty());
    // Hidden, not removed: only the sweep removes (and reports) them.
    assert_eq!(count(&s).await, 2);
}

async fn get_all_is_one_document_ordered_by_client_id(s: Store) {
    // Byte order of the ids (Rust `str` order), whatever the database collation says.
    for (i, client) in ["b", "é", "a", "C", "aa", "_", "B"].into_iter().enumerate() {
        put(&s, "d", client, "c1", 1, T0 + i as i64).await;
    }
    put(&s, "other", "0", "c1", 1, T0).await;
    let ids: Vec<_> = all(&s, "d", T0 + 10)
        .await
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(ids, ["B", "C", "_", "a", "aa", "b", "é"]);
    assert!(all(&s, "missing", T0).await.is_empty());
}

async fn expired_entry_clock_stays_binding_until_pruned(s: Store) {
    put(&s, "d", "a", "c1", 5, T0).await;
    let later = T0 + 2 * TIMEOUT_MS;
    assert!(all(&s, "d", later).await.is_empty());
    // Expired but not pruned: its clock still rules out older updates…
    assert_eq!(put(&s, "d", "a", "c1", 3, later).await, SetOutcome::Stale);
    assert!(all(&s, "d", later).await.is_empty());
    // …and a newer one revives it with a fresh last-seen time.
    assert_eq!(
        put(&s, "d", "a", "c1", 6, later).await,
        SetOutcome::Accepted
    );
    assert_eq!(all(&s, "d", later).await[0].clock, 6);
    // Once pruned, the clock is forgotten like after a leave.
    let pruned = s
        .prune_expired(later + TIMEOUT_MS)
        .await
        .expect("prune_expired");
    assert_eq!(keys(&pruned), vec![key("d", "a")]);
    assert_eq!(
        put(&s, "d", "a", "c1", 1, later + TIMEOUT_MS).await,
        SetOutcome::Accepted
    );
}

/// `update` from another user's connection.
fn as_user(mut u: AwarenessUpdate, user: &str) -> AwarenessUpdate {
    u.user_id = user.into();
    u
}

async fn another_users_connection_cannot_replace_or_remove_a_live_entry(s: Store) {
    let alice = |conn: &str, state: Option<Value>, clock: u64, now: i64| {
        as_user(
            update("d", "alice-client", conn, state, clock, now),
            "alice",
        )
    };
    let mallory = |state: Option<Value>, clock: u64, now: i64| {
        as_user(
            update("d", "alice-client", "m1", state, clock, now),
            "mallory",
        )
    };
    assert_eq!(
        set(&s, alice("a1", Some(json!({"x": 1})), 1, T0)).await,
        SetOutcome::Accepted
    );
    let before = all(&s, "d", T0).await;
    // Any clock, a state or a leave: refused, nothing changed.
    for (state, clock) in [
        (Some(json!({"spoof": true})), (1u64 << 53) - 1),
        (Some(json!({"spoof": true})), 0),
        (None, 0),
    ] {
        assert_eq!(
            set(&s, mallory(state, clock, T0 + 1)).await,
            SetOutcome::NotOwner
        );
    }
    assert_eq!(all(&s, "d", T0 + 1).await, before);
    // Alice's own updates still land.
    assert_eq!(
        set(&s, alice("a1", Some(json!({"x": 2})), 2, T0 + 2)).await,
        SetOutcome::Accepted
    );
    // The same user on another connection (a reconnect) takes it over, clock rule
    // still applying; the old connection of the same user may take it back.
    assert_eq!(
        set(&s, alice("a2", Some(json!({"x": 3})), 2, T0 + 3)).await,
        SetOutcome::Stale
    );
    assert_eq!(
        set(&s, alice("a2", Some(json!({"x": 3})), 3, T0 + 3)).await,
        SetOutcome::Accepted
    );
    assert_eq!(all(&s, "d", T0 + 3).await[0].connection_id, "a2");
    assert_eq!(all(&s, "d", T0 + 3).await[0].user_id, "alice");
    assert_eq!(
        set(&s, mallory(Some(json!({})), 9, T0 + 4)).await,
        SetOutcome::NotOwner
    );
    // Expired, it is free for anyone (the clock rule holds until it is pruned).
    let later = T0 + 3 + TIMEOUT_MS;
    assert_eq!(
        set(&s, mallory(Some(json!({"m": 1})), 9, later)).await,
        SetOutcome::Accepted
    );
    assert_eq!(all(&s, "d", later).await[0].user_id, "mallory");
    // And now it is mallory's: alice's live-user rule works both ways.
    assert_eq!(
        set(&s, alice("a2", None, 0, later + 1)).await,
        SetOutcome::NotOwner
    );
    assert_eq!(set(&s, mallory(None, 0, later + 1)).await, SetOutcome::Left);
    // After a leave the id is free again.
    assert_eq!(
        set(&s, alice("a3", Some(json!({})), 1, later + 2)).await,
        SetOutcome::Accepted
    );
    // A connection's close removes only its own entries.
    assert!(s.remove_connection("m1").await.expect("remove").is_empty());
    assert_eq!(
        keys(&s.remove_connection("a3").await.expect("remove")),
        vec![key("d", "alice-client")]
    );
}

async fn remove_connection_returns_exactly_its_entries(s: Store) {
    put(&s, "d1", "a", "c1", 1, T0).await;
    put(&s, "d2", "b", "c1", 1, T0).await;
    put(&s, "d1", "c", "c2", 1, T0).await;
    // Written first by c1, then by c2: it belongs to c2 now.
    put(&s, "d2", "m", "c1", 1, T0).await;
    put(&s, "d2", "m", "c2", 2, T0).await;
    // A stale write from c1 does not take it back.
    put(&s, "d2", "m", "c1", 2, T0).await;

    let removed = s.remove_connection("c1").await.expect("remove_connection");
    assert_eq!(keys(&removed), vec![key("d1", "a"), key("d2", "b")]);
    let a = removed
        .iter()
        .find(|e| e.client_id == "a")
        .expect("a removed");
    assert_eq!(
        (a.connection_id.as_str(), a.clock, &a.state, a.last_seen_ms),
        ("c1", 1, &json!({"c": 1}), T0)
    );
    assert_eq!(count(&s).await, 2);
    assert_eq!(keys(&all(&s, "d2", T0).await), vec![key("d2", "m")]);

    assert!(s.remove_connection("c1").await.expect("again").is_empty());
    assert!(s
        .remove_connection("nobody")
        .await
        .expect("none")
        .is_empty());
    let rest = s.remove_connection("c2").await.expect("c2");
    assert_eq!(keys(&rest), vec![key("d1", "c"), key("d2", "m")]);
    assert_eq!(count(&s).await, 0);
}

async fn expired_lists_without_removing_at_the_edge(s: Store) {
    put(&s, "d1", "a", "c1", 1, T0).await;
    put(&s, "d2", "b", "c2", 4, T0).await;
    put(&s, "d1", "c", "c1", 1, T0 + 1).await;
    assert!(s
        .expired(T0 + TIMEOUT_MS - 1)
        .await
        .expect("expired")
        .is_empty());
    let at_edge = s.expired(T0 + TIMEOUT_MS).await.expect("expired");
    assert_eq!(keys(&at_edge), vec![key("d1", "a"), key("d2", "b")]);
    let b = at_edge
        .iter()
        .find(|e| e.client_id == "b")
        .expect("b listed");
    assert_eq!((b.clock, b.last_seen_ms), (4, T0));
    assert_eq!(count(&s).await, 3);
    // Listing twice gives the same answer: `expired` never removes.
    assert_eq!(
        keys(&s.expired(T0 + TIMEOUT_MS).await.expect("expired")),
        keys(&at_edge)
    );
    assert_eq!(s.expired(T0 + TIMEOUT_MS + 1).await.expect("all").len(), 3);
}

async fn prune_expired_removes_exactly_the_expired(s: Store) {
    put(&s, "d1", "a", "c1", 1, T0).await;
    put(&s, "d2", "b", "c2", 1, T0).await;
    put(&s, "d1", "c", "c1", 1, T0 + 1).await;
    assert!(s
        .prune_expired(T0 + TIMEOUT_MS - 1)
        .await
        .expect("prune")
        .is_empty());
    assert_eq!(count(&s).await, 3);
    let pruned = s.prune_expired(T0 + TIMEOUT_MS).await.expect("prune");
    assert_eq!(keys(&pruned), vec![key("d1", "a"), key("d2", "b")]);
    assert_eq!(count(&s).await, 1);
    assert!(s
        .expired(T0 + TIMEOUT_MS)
        .await
        .expect("expired")
        .is_empty());
    assert!(s
        .prune_expired(T0 + TIMEOUT_MS)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(
        keys(&all(&s, "d1", T0 + TIMEOUT_MS).await),
        vec![key("d1", "c")]
    );
}

/// What test mode's clear relies on: pruning at the end of time removes every entry,
/// fresh ones included, and leaves the store usable.
async fn pruning_at_the_end_of_time_empties_the_store(s: Store) {
    put(&s, "d1", "a", "c1", 1, T0).await;
    put(&s, "d2", "b", "c2", 1, T0 + TIMEOUT_MS * 10).await;
    let pruned = s
        .prune_expired(synckit::testing::awareness::END_OF_TIME_MS)
        .await
        .expect("prune");
    assert_eq!(keys(&pruned), vec![key("d1", "a"), key("d2", "b")]);
    assert_eq!(count(&s).await, 0);
    assert!(all(&s, "d2", T0).await.is_empty());
    put(&s, "d1", "a", "c1", 1, T0).await;
    assert_eq!(count(&s).await, 1);
}

async fn count_tracks_sets_leaves_and_removals(s: Store) {
    assert_eq!(count(&s).await, 0);
    put(&s, "d", "a", "c1", 1, T0).await;
    put(&s, "d", "a", "c1", 2, T0).await; // update, not a new entry
    put(&s, "d", "a", "c1", 1, T0).await; // stale
    put(&s, "d", "b", "c2", 1, T0).await;
    put(&s, "e", "a", "c2", 1, T0 + TIMEOUT_MS).await;
    assert_eq!(count(&s).await, 3);
    set(&s, update("d", "b", "c2", None, 0, T0)).await;
    assert_eq!(count(&s).await, 2);
    s.prune_expired(T0 + TIMEOUT_MS).await.expect("prune");
    assert_eq!(count(&s).await, 1);
    s.remove_connection("c2").await.expect("remove");
    assert_eq!(count(&s).await, 0);
}

/// Run `WRITERS` updates of one (document, client) at once, released together by a
/// barrier; returns (clock, outcome) per writer.
async fn race(s: &Store, clocks: Vec<u64>, now: i64) -> Vec<(u64, SetOutcome)> {
    let barrier = Arc::new(Barrier::new(clocks.len()));
    let tasks: Vec<_> = clocks
        .into_iter()
        .map(|clock| {
            let (s, barrier) = (s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let u = update(
                    "d",
                    "a",
                    &format!("c{clock}"),
                    Some(json!({"c": clock})),
                    clock,
                    now,
                );
                (clock, s.set(u).await.expect("concurrent set"))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("writer task"));
    }
    out
}

async fn concurrent_writers_keep_the_highest_clock(s: Store) {
    for round in 0..5u64 {
        let base = round * 100;
        // 1..=WRITERS in a scrambled order (7 is coprime with 20).
        let clocks: Vec<u64> = (0..WRITERS).map(|i| base + (i * 7) % WRITERS + 1).collect();
        let outcomes = race(&s, clocks, T0 + round as i64).await;
        let max = base + WRITERS;
        let accepted: Vec<u64> = outcomes
            .iter()
            .filter(|(_, o)| *o == SetOutcome::Accepted)
            .map(|(c, _)| *c)
            .collect();
        // The highest clock beats whatever was stored when it ran, so it is always
        // accepted; every other write was accepted or stale, never an error.
        assert!(accepted.contains(&max), "round {round}: {outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|(_, o)| matches!(o, SetOutcome::Accepted | SetOutcome::Stale)));
        let got = all(&s, "d", T0 + round as i64).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].clock, &got[0].state, got[0].connection_id.as_str()),
            (max, &json!({"c": max}), format!("c{max}").as_str()),
            "round {round}"
        );
        // Clocks from the previous round are all below this round's: all stale now.
        let late = race(&s, (base + 1..=base + WRITERS).collect(), T0).await;
        assert!(
            late.iter().all(|(_, o)| *o == SetOutcome::Stale),
            "{late:?}"
        );
    }
    assert_eq!(count(&s).await, 1);
}

async fn concurrent_equal_clocks_accept_exactly_one(s: Store) {
    // All writers race to create the same entry with the same clock: one insert wins,
    // the rest see an equal stored clock and are stale (no duplicate-key error).
    let outcomes = race(&s, vec![7; WRITERS as usize], T0).await;
    let accepted = outcomes
        .iter()
        .filter(|(_, o)| *o == SetOutcome::Accepted)
        .count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert_eq!(count(&s).await, 1);
    assert_eq!(all(&s, "d", T0).await[0].clock, 7);
}

async fn concurrent_writers_on_distinct_clients_all_land(s: Store) {
    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let client = format!("client-{i:02}");
                s.set(update("d", &client, "c1", Some(json!({})), 1, T0))
                    .await
                    .expect("concurrent set")
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("writer task"), SetOutcome::Accepted);
    }
    assert_eq!(all(&s, "d", T0).await.len(), WRITERS as usize);
    assert_eq!(count(&s).await, WRITERS as usize);
}

// ---------------------------------------------------------------------------------
// All stores
// ---------------------------------------------------------------------------------

/// `REDIS_URL`, or a panic telling how to provide it: a Redis test must never pass by
/// not running.
fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set: start Redis (redis-server) and export \
             REDIS_URL=redis://127.0.0.1:6379 to run the Redis awareness tests"
        )
    })
}

/// Delete every key under a test's prefix. The hashes, sorted sets and connection
/// indexes would expire by themselves, but the document set has no TTL.
async fn delete_redis_prefix(url: &str, prefix: &str) {
    let client = ::redis::Client::open(url).expect("REDIS_URL parses");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis for cleanup");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("list the test's keys");
    if !keys.is_empty() {
        ::redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("delete the test's keys");
    }
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            use synckit::testing::awareness::MemoryAwarenessStore;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store: Store = Arc::new(MemoryAwarenessStore::new(TIMEOUT));
                    assert_eq!(store.kind(), "memory");
                    super::$check(store).await;
                }
            )*
        }

        mod postgres {
            use super::*;
            use sqlx::postgres::{PgPool, PgPoolOptions};
            use synckit::testing::awareness::PostgresAwarenessStore;
            $(
                #[sqlx::test(migrations = "./migrations")]
                async fn $check(pool: PgPool) {
                    // The test pool allows 5 connections; give every concurrent
                    // writer its own so the races happen inside PostgreSQL.
                    let wide = PgPoolOptions::new()
                        .max_connections(WRITERS as u32)
                        .connect_with((*pool.connect_options()).clone())
                        .await
                        .expect("connect to the test database");
                    let store: Store = Arc::new(PostgresAwarenessStore::new(wide.clone(), TIMEOUT));
                    assert_eq!(store.kind(), "postgres");
                    super::$check(store).await;
                    // Let sqlx drop the test database: no connection may remain.
                    wide.close().await;
                }
            )*
        }

        mod redis {
            use super::*;
            use synckit::testing::awareness::RedisAwarenessStore;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let url = redis_url();
                    // `{…}` would be a cluster hash tag; plain characters keep the
                    // keys exactly as in production apart from the prefix.
                    let prefix = format!("synckit-test:{}:", uuid::Uuid::new_v4());
                    let store = RedisAwarenessStore::new(&url, TIMEOUT)
                        .expect("build the Redis awareness store")
                        .with_key_prefix(prefix.clone());
                    if let Err(e) = store.ping().await {
                        panic!("Redis is unreachable at {url} ({e}): start redis-server");
                    }
                    let store: Store = Arc::new(store);
                    assert_eq!(store.kind(), "redis");
                    super::$check(store).await;
                    delete_redis_prefix(&url, &prefix).await;
                }
            )*
        }
    };
}

conformance!(
    first_update_is_accepted_and_round_trips,
    clock_zero_is_accepted_when_nothing_is_stored,
    newer_clock_replaces_everything,
    older_and_equal_clocks_are_stale_and_change_nothing,
    clocks_are_per_document_and_client,
    leave_removes_whatever_its_clock,
    leave_without_an_entry_is_still_left,
    get_all_excludes_expired_entries,
    get_all_is_one_document_ordered_by_client_id,
    expired_entry_clock_stays_binding_until_pruned,
    another_users_connection_cannot_replace_or_remove_a_live_entry,
    remove_connection_returns_exactly_its_entries,
    expired_lists_without_removing_at_the_edge,
    prune_expired_removes_exactly_the_expired,
    pruning_at_the_end_of_time_empties_the_store,
    count_tracks_sets_leaves_and_removals,
    concurrent_writers_keep_the_highest_clock,
    concurrent_equal_clocks_accept_exactly_one,
    concurrent_writers_on_distinct_clients_all_land,
);

// ---------------------------------------------------------------------------------
// Redis only: the C# key layout, foreign entries, several instances, Redis down
// ---------------------------------------------------------------------------------

mod redis_layout {
    use super::*;
    use ::redis::aio::MultiplexedConnection;
    use synckit::testing::awareness::{AwarenessError, RedisAwarenessStore};

    /// A store on `REDIS_URL` under a fresh prefix, checked to be reachable, plus a
    /// raw connection to look at the keys it writes.
    async fn store() -> (RedisAwarenessStore, MultiplexedConnection, String, String) {
        let url = redis_url();
        let prefix = format!("synckit-test:{}:", uuid::Uuid::new_v4());
        let store = RedisAwarenessStore::new(&url, TIMEOUT)
            .expect("build the Redis awareness store")
            .with_key_prefix(prefix.clone());
        if let Err(e) = store.ping().await {
            panic!("Redis is unreachable at {url} ({e}): start redis-server");
        }
        let raw = ::redis::Client::open(url.as_str())
            .expect("REDIS_URL parses")
            .get_multiplexed_async_connection()
            .await
            .expect("raw Redis connection");
        (store, raw, url, prefix)
    }

    async fn query<T: ::redis::FromRedisValue>(
        raw: &mut MultiplexedConnection,
        cmd: &mut ::redis::Cmd,
    ) -> T {
        cmd.query_async(raw).await.expect("raw Redis command")
    }

    #[tokio::test]
    async fn writes_the_csharp_key_layout_with_ttls() {
        let (store, mut raw, url, p) = store().await;
        let state = json!({"user": "Zoë", "cursor": {"x": 1}});
        let u = update("room:1", "a", "conn-7", Some(state.clone()), 42, T0);
        assert_eq!(store.set(u).await.expect("set"), SetOutcome::Accepted);

        let hash = format!("{p}awareness:room:1");
        let value: String = query(&mut raw, ::redis::cmd("HGET").arg(&hash).arg("a")).await;
        let value: Value = serde_json::from_str(&value).expect("entry is JSON");
        let expires_at = T0 + TIMEOUT_MS;
        assert_eq!(
            value,
            json!({
                "documentId": "room:1",
                "clientId": "a",
                "state": {"clientId": "a", "state": state, "clock": 42, "lastUpdated": T0},
                "clock": 42,
                "expiresAt": expires_at,
                "connectionId": "conn-7",
                "userId": "u",
            })
        );
        let zset = format!("{p}awareness:expires:room:1");
        let score: f64 = query(&mut raw, ::redis::cmd("ZSCORE").arg(&zset).arg("a")).await;
        assert_eq!(score, expires_at as f64);
        let docs: Vec<String> = query(
            &mut raw,
            ::redis::cmd("SMEMBERS").arg(format!("{p}awareness:docs")),
        )
        .await;
        assert_eq!(docs, ["room:1"]);
        let index = format!("{p}awareness-conn:conn-7");
        let members: Vec<String> = query(&mut raw, ::redis::cmd("SMEMBERS").arg(&index)).await;
        assert_eq!(members, [r#"["room:1","a"]"#]);
        // timeout × 2 on everything but the document set (C# gives it no TTL).
        for key in [&hash, &zset, &index] {
            let ttl: i64 = query(&mut raw, ::redis::cmd("PTTL").arg(key)).await;
            assert!(
                ttl > 2 * TIMEOUT_MS - 10_000 && ttl <= 2 * TIMEOUT_MS,
                "{key}: {ttl}"
            );
        }

        // The last leave empties the document: every key of it goes, the set forgets it.
        let leave = update("room:1", "a", "conn-7", None, 0, T0);
        assert_eq!(store.set(leave).await.expect("leave"), SetOutcome::Left);
        let left: Vec<String> = query(&mut raw, ::redis::cmd("KEYS").arg(format!("{p}*"))).await;
        assert!(left.is_empty(), "{left:?}");
        delete_redis_prefix(&url, &p).await;
    }

    #[tokio::test]
    async fn reads_and_sweeps_entries_written_by_csharp() {
        let (store, mut raw, url, p) = store().await;
        // What the C# store writes: no `connectionId`; a leave kept as a null state.
        let entry = |client: &str, state: Value, clock: u64| {
            json!({
                "documentId": "d", "clientId": client,
                "state": {"clientId": client, "state": state, "clock": clock, "lastUpdated": T0},
                "clock": clock, "expiresAt": T0 + TIMEOUT_MS,
            })
            .to_string()
        };
        let _: () = query(
            &mut raw,
            ::redis::cmd("HSET")
                .arg(format!("{p}awareness:d"))
                .arg("cs")
                .arg(entry("cs", json!({"name": "C#"}), 9))
                .arg("gone")
                .arg(entry("gone", Value::Null, 3)),
        )
        .await;
        let _: () = query(
            &mut raw,
            ::redis::cmd("ZADD")
                .arg(format!("{p}awareness:expires:d"))
                .arg(T0 + TIMEOUT_MS)
                .arg("cs")
                .arg(T0 + TIMEOUT_MS)
                .arg("gone"),
        )
        .await;
        let _: () = query(
            &mut raw,
            ::redis::cmd("SADD")
                .arg(format!("{p}awareness:docs"))
                .arg("d"),
        )
        .await;

        let live = store.get_all("d", T0).await.expect("get_all");
        assert_eq!(
            live,
            vec![AwarenessEntry {
                document_id: "d".into(),
                client_id: "cs".into(),
                connection_id: String::new(),
                user_id: String::new(),
                state: json!({"name": "C#"}),
                clock: 9,
                last_seen_ms: T0,
            }]
        );
        // The C# clock is binding, and C#'s entries belong to no connection of ours.
        let stale = update("d", "cs", "", Some(json!({})), 9, T0);
        assert_eq!(store.set(stale).await.expect("set"), SetOutcome::Stale);
        assert!(store
            .remove_connection("")
            .await
            .expect("remove")
            .is_empty());
        assert_eq!(store.count().await.expect("count"), 2);
        let pruned = store.prune_expired(T0 + TIMEOUT_MS).await.expect("prune");
        assert_eq!(keys(&pruned), vec![key("d", "cs"), key("d", "gone")]);
        assert_eq!(store.count().await.expect("count"), 0);
        delete_redis_prefix(&url, &p).await;
    }

    #[tokio::test]
    async fn prune_forgets_documents_whose_keys_expired() {
        let (store, mut raw, url, p) = store().await;
        put_raw(&store, "d1").await;
        put_raw(&store, "d2").await;
        // What PEXPIRE does to an abandoned document.
        let _: () = query(
            &mut raw,
            ::redis::cmd("DEL")
                .arg(format!("{p}awareness:d1"))
                .arg(format!("{p}awareness:expires:d1")),
        )
        .await;
        assert!(store.prune_expired(T0).await.expect("prune").is_empty());
        let docs: Vec<String> = query(
            &mut raw,
            ::redis::cmd("SMEMBERS").arg(format!("{p}awareness:docs")),
        )
        .await;
        assert_eq!(docs, ["d2"]);
        assert_eq!(store.count().await.expect("count"), 1);
        delete_redis_prefix(&url, &p).await;
    }

    async fn put_raw(store: &RedisAwarenessStore, doc: &str) {
        let u = update(doc, "a", "c1", Some(json!({})), 1, T0);
        assert_eq!(store.set(u).await.expect("set"), SetOutcome::Accepted);
    }

    /// Two instances (two stores, two connections) on one Redis and one prefix: the
    /// clock rule holds across them, not just within one connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_sharing_a_redis_race_safely() {
        let (a, _raw, url, p) = store().await;
        let b = RedisAwarenessStore::new(&url, TIMEOUT)
            .expect("second store")
            .with_key_prefix(p.clone());
        let stores: [Store; 2] = [Arc::new(a), Arc::new(b)];
        let barrier = Arc::new(Barrier::new(2 * WRITERS as usize));
        let tasks: Vec<_> = (0..2 * WRITERS)
            .map(|i| {
                let (s, barrier) = (stores[(i % 2) as usize].clone(), barrier.clone());
                // Every clock twice, once per instance: one of each pair must be stale.
                let clock = i / 2 + 1;
                tokio::spawn(async move {
                    barrier.wait().await;
                    let u = update(
                        "d",
                        "a",
                        &format!("c{i}"),
                        Some(json!({"c": clock})),
                        clock,
                        T0,
                    );
                    (clock, s.set(u).await.expect("concurrent set"))
                })
            })
            .collect();
        let mut accepted = Vec::new();
        for t in tasks {
            let (clock, outcome) = t.await.expect("writer task");
            if outcome == SetOutcome::Accepted {
                accepted.push(clock);
            }
        }
        accepted.sort_unstable();
        let before = accepted.len();
        accepted.dedup();
        assert_eq!(accepted.len(), before, "a clock was accepted twice");
        assert!(accepted.contains(&WRITERS), "{accepted:?}");
        for s in &stores {
            let got = s.get_all("d", T0).await.expect("get_all");
            assert_eq!((got.len(), got[0].clock), (1, WRITERS));
        }
        delete_redis_prefix(&url, &p).await;
    }

    #[tokio::test]
    async fn unreachable_redis_does_not_stop_construction_and_fails_fast() {
        // Port 1: nothing listens there, so connections are refused at once.
        let store = RedisAwarenessStore::new("redis://127.0.0.1:1", TIMEOUT)
            .expect("construction never needs Redis");
        assert_eq!(store.key_prefix(), "synckit:");
        let started = std::time::Instant::now();
        let err = store
            .set(update("d", "a", "c1", Some(json!({})), 1, T0))
            .await
            .expect_err("Redis is down");
        let AwarenessError::Unavailable(msg) = err;
        assert!(msg.contains("Redis awareness set failed"), "{msg}");
        assert!(msg.contains("is Redis running"), "{msg}");
        assert!(store.count().await.is_err());
        assert!(store.ping().await.is_err());
        // Bounded retries, not the connection manager's default six-step backoff.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    /// A `redis-server` this test owns, on a free port, killed when dropped.
    fn own_redis(port: u16) -> tokio::process::Child {
        tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (is it installed?)")
    }

    /// Retry a write until Redis answers (10 s at most), as the sync path would with
    /// the next client message.
    async fn set_until_up(store: &RedisAwarenessStore, clock: u64) -> SetOutcome {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let u = update("d", "a", "c1", Some(json!({"c": clock})), clock, T0);
            match store.set(u).await {
                Ok(outcome) => return outcome,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("the store never reconnected: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Down at start, up later, then restarted (losing its data and loaded scripts):
    /// the same store object keeps working without being rebuilt.
    #[tokio::test]
    async fn connects_when_redis_comes_up_and_reconnects_after_a_restart() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let store = RedisAwarenessStore::new(&format!("redis://127.0.0.1:{port}"), TIMEOUT)
            .expect("construction never needs Redis");
        assert!(store.get_all("d", T0).await.is_err(), "nothing listens yet");

        let mut server = own_redis(port);
        assert_eq!(set_until_up(&store, 1).await, SetOutcome::Accepted);
        assert_eq!(store.get_all("d", T0).await.expect("get_all")[0].clock, 1);

        server.kill().await.expect("stop redis-server");
        assert!(store.get_all("d", T0).await.is_err(), "Redis is gone");

        let _server = own_redis(port);
        // A fresh server: the entry is gone, so clock 1 is new again, and the script
        // cache is empty, so the store must reload its scripts.
        assert_eq!(set_until_up(&store, 1).await, SetOutcome::Accepted);
        assert_eq!(store.get_all("d", T0).await.expect("get_all").len(), 1);
    }

    #[test]
    fn construction_outside_a_runtime_is_an_error_not_a_panic() {
        let Err(AwarenessError::Unavailable(msg)) =
            RedisAwarenessStore::new("redis://127.0.0.1:6379", TIMEOUT)
        else {
            panic!("a store was built without a Tokio runtime");
        };
        assert!(msg.contains("Tokio runtime"), "{msg}");
        assert!(RedisAwarenessStore::new("not a url", TIMEOUT).is_err());
    }
}
