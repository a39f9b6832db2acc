//! One awareness-store conformance suite, run against the memory and PostgreSQL stores.
//!
//! Each check is a plain `async fn(Arc<dyn AwarenessStore>)`; `conformance!` turns
//! every check into `memory::<check>` (`#[tokio::test]`, multi-threaded so the
//! concurrency checks really race) and `postgres::<check>` (`#[sqlx::test]`, a fresh
//! migrated database per test, needs `DATABASE_URL`). The memory store's unit tests
//! are the reference: whatever it does, the PostgreSQL store must do too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use synckit::awareness::{AwarenessEntry, AwarenessStore, AwarenessUpdate, SetOutcome};
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
// Both stores
// ---------------------------------------------------------------------------------

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            use synckit::awareness::MemoryAwarenessStore;
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
            use synckit::awareness::PostgresAwarenessStore;
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
    remove_connection_returns_exactly_its_entries,
    expired_lists_without_removing_at_the_edge,
    prune_expired_removes_exactly_the_expired,
    count_tracks_sets_leaves_and_removals,
    concurrent_writers_keep_the_highest_clock,
    concurrent_equal_clocks_accept_exactly_one,
    concurrent_writers_on_distinct_clients_all_land,
);
