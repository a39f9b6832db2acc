//! One storage conformance suite (docs/storage.md §1–§4), run against both backends.
//!
//! Each check is a plain `async fn check(s: &impl Backend)`; `conformance!` turns
//! every check into `memory::<check>` (`#[tokio::test]` on a fresh
//! `MemoryStorage`) and `postgres::<check>` (`#[sqlx::test]`: a fresh database per
//! test with the migrations applied; needs `DATABASE_URL`, which
//! `.cargo/config.toml` points at the local server). Expected values are written
//! out literally, so passing on both backends means both behave identically —
//! including the exact JSON shape of `documents.state` the sync path writes.
//!
//! Retention and ordering checks need old rows; [`Backend::age`] moves timestamps
//! back (an `UPDATE` on PostgreSQL with triggers suppressed, `age_for_tests` in
//! memory) instead of sleeping.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};
use synckit::testing::storage::{
    CleanupCounts, CleanupOptions, CompatStore, DeltaOperation, DeltaRow, DocumentWrite,
    FieldChange, MemoryStorage, NewDelta, NewSnapshot, PostgresStorage, SessionRecord, SnapshotRow,
    StorageAdapter, StorageError,
};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// A backend under test: everything `serve` uses, the row-level operations the
/// checks seed and inspect rows with, plus the one thing the traits cannot do: age
/// rows.
#[async_trait]
trait Backend: StorageAdapter + CompatStore {
    /// Move the timestamps of `table` rows back by `by` (`documents`: created_at
    /// and updated_at; `deltas`: timestamp; `sessions`: last_seen; `snapshots`:
    /// created_at) — one row by id (uuids as text) or all when `id` is `None`.
    async fn age(&self, table: &str, id: Option<&str>, by: Duration) -> u64;
}

#[async_trait]
impl Backend for MemoryStorage {
    async fn age(&self, table: &str, id: Option<&str>, by: Duration) -> u64 {
        self.age_for_tests(table, id, by) as u64
    }
}

#[async_trait]
impl Backend for PostgresStorage {
    async fn age(&self, table: &str, id: Option<&str>, by: Duration) -> u64 {
        let (set, key) = match table {
            "documents" => (
                "created_at = created_at - make_interval(secs => $2), \
                 updated_at = updated_at - make_interval(secs => $2)",
                "id",
            ),
            "deltas" => (
                "timestamp = timestamp - make_interval(secs => $2)",
                "id::text",
            ),
            "sessions" => ("last_seen = last_seen - make_interval(secs => $2)", "id"),
            "snapshots" => (
                "created_at = created_at - make_interval(secs => $2)",
                "id::text",
            ),
            other => panic!("no such table {other}"),
        };
        let mut tx = self.pool().begin().await.expect("begin");
        // The documents triggers would reset updated_at and bump version.
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .expect("disable triggers");
        let moved = sqlx::query(&format!(
            "UPDATE {table} SET {set} WHERE $1::text IS NULL OR {key} = $1"
        ))
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(&mut *tx)
        .await
        .expect("age rows")
        .rows_affected();
        tx.commit().await.expect("commit");
        moved
    }
}

/// One `#[tokio::test]` and one `#[sqlx::test]` per check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    let s = synckit::testing::storage::MemoryStorage::new();
                    synckit::testing::storage::SyncStore::connect(&s).await.expect("connect");
                    super::$check(&s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[sqlx::test(migrations = "./migrations")]
                async fn $check(pool: sqlx::PgPool) {
                    let s = synckit::testing::storage::PostgresStorage::from_pool(pool, true);
                    synckit::testing::storage::SyncStore::connect(&s).await.expect("connect");
                    super::$check(&s).await;
                }
            )*
        }
    };
}

conformance!(
    connection,
    document_versions_and_timestamps,
    update_and_delete_documents,
    delete_cascades,
    clear_all_empties_documents_and_sessions,
    list_documents_order_limit_offset,
    clock_overwrite_versus_merge,
    clock_writes_create_the_document,
    delta_values_json_null_versus_sql_null,
    deltas_newest_first_and_since,
    deltas_need_their_document,
    sessions_save_refresh_update_delete,
    sessions_touch_and_listing,
    snapshots_save_get_latest_list_delete,
    compaction_drops_covered_deltas,
    cleanup_dry_run_counts_what_a_real_run_deletes,
    cleanup_retention_edges,
    cleanup_batch_boundaries,
    cleanup_snapshot_rank_rule,
    cleanup_none_disables_a_step,
    write_batch_round_trip,
    write_batch_patches_existing_state,
    write_batch_of_nothing_writes_nothing,
    load_rebuilds_fields_from_deltas,
    load_reads_ts_text_documents,
);

// -- helpers -------------------------------------------------------------------

fn delta(doc: &str, field: &str, value: Option<Value>, clock: u64) -> NewDelta {
    NewDelta {
        document_id: doc.into(),
        client_id: "conn-1".into(),
        operation: if value.is_some() {
            DeltaOperation::Set
        } else {
            DeltaOperation::Delete
        },
        field_path: field.into(),
        value,
        clock_value: clock,
        max_clock_value: None,
    }
}

fn session(id: &str, user: &str, metadata: Value) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        user_id: user.into(),
        client_id: None,
        metadata: metadata.into(),
    }
}

fn snapshot(doc: &str, state: Value) -> NewSnapshot {
    NewSnapshot {
        document_id: doc.into(),
        state,
        version: BTreeMap::from([("conn-1".to_string(), 3), ("c".to_string(), 7)]),
        compressed: false,
    }
}

fn change(field: &str, value: Option<Value>, writer: &str, tick: u64) -> FieldChange {
    FieldChange {
        field: field.into(),
        value,
        writer: writer.into(),
        clock_value: tick,
    }
}

fn write(
    doc: &str,
    changes: Vec<FieldChange>,
    clock: &[(&str, u64)],
    text: Option<(&str, f64)>,
) -> DocumentWrite {
    DocumentWrite {
        document_id: Arc::from(doc),
        changes,
        clock: clock.iter().map(|(w, v)| (w.to_string(), *v)).collect(),
        text: text.map(|(t, c)| (synckit::text::StateJson::new(t.to_string()), c)),
    }
}

fn clock(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Delta rows as comparable tuples (ids and timestamps differ per backend).
fn delta_tuples(rows: &[DeltaRow]) -> Vec<(String, String, String, Option<Value>, u64)> {
    rows.iter()
        .map(|d| {
            (
                d.client_id.clone(),
                d.operation_type.clone(),
                d.field_path.clone(),
                d.value.clone(),
                d.clock_value,
            )
        })
        .collect()
}

/// Cleanup options with every step disabled: each check enables what it tests.
fn nothing() -> CleanupOptions {
    CleanupOptions {
        sessions_older_than: None,
        deltas_older_than: None,
        snapshots_older_than: None,
        max_snapshots_per_document: None,
        dry_run: false,
        batch_size: 10_000,
    }
}

async fn session_ids(s: &impl Backend) -> Vec<String> {
    let mut ids: Vec<String> = s
        .list_sessions(u32::MAX, 0)
        .await
        .expect("list sessions")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

// -- connection ----------------------------------------------------------------

async fn connection(s: &impl Backend) {
    assert!(["memory", "postgres"].contains(&s.kind()));
    // Connecting again (a reconnect after an outage) is harmless.
    s.connect().await.expect("connect again");
    assert!(s.is_connected());
    s.health_check().await.expect("healthy");
    assert!(s.is_connected());
}

// -- documents -----------------------------------------------------------------

async fn document_versions_and_timestamps(s: &impl Backend) {
    assert_eq!(s.get_document("doc").await.expect("get"), None);
    let first = s
        .save_document("doc", &json!({"id": "doc", "fields": {"a": 1}}))
        .await
        .expect("insert");
    assert_eq!(first.id, "doc");
    assert_eq!(first.version, 1);
    assert_eq!(first.state, json!({"id": "doc", "fields": {"a": 1}}));
    assert_eq!(first.created_at, first.updated_at);
    assert_eq!(
        s.get_document("doc").await.expect("get"),
        Some(first.clone())
    );

    // Age the row so "updated_at moved" is visible at any clock resolution.
    assert_eq!(s.age("documents", Some("doc"), HOUR).await, 1);
    let aged = s.get_document("doc").await.expect("get").expect("row");
    assert_eq!(aged.version, 1, "aging is not an update");

    let second = s
        .save_document("doc", &json!({"id": "doc", "fields": {"a": 2}}))
        .await
        .expect("upsert");
    assert_eq!(second.version, 2, "the upsert bumps version by exactly 1");
    assert_eq!(second.created_at, aged.created_at, "created_at is kept");
    assert!(second.updated_at > aged.updated_at + chrono::Duration::minutes(59));
    assert_eq!(second.state, json!({"id": "doc", "fields": {"a": 2}}));
}

async fn update_and_delete_documents(s: &impl Backend) {
    match s.update_document("nope", &json!({})).await {
        Err(StorageError::NotFound { kind, id }) => {
            assert_eq!(kind, "Document");
            assert_eq!(id, "nope");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    s.save_document("doc", &json!({})).await.expect("insert");
    let updated = s
        .update_document("doc", &json!({"x": [1, 2]}))
        .await
        .expect("update");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.state, json!({"x": [1, 2]}));
    let again = s
        .update_document("doc", &json!("not an object"))
        .await
        .expect("update");
    assert_eq!(again.version, 3);
    assert_eq!(again.state, json!("not an object"));

    assert!(s.delete_document("doc").await.expect("delete"));
    assert!(!s.delete_document("doc").await.expect("delete again"));
    assert_eq!(s.get_document("doc").await.expect("get"), None);
}

/// Documents "doc" and "other" with `fields`, a clock entry and a delta each, and a
/// snapshot of "doc" (returned).
async fn seed_two_documents(s: &impl Backend, fields: Value) -> SnapshotRow {
    for doc in ["doc", "other"] {
        s.save_document(doc, &json!({"id": doc, "fields": fields}))
            .await
            .expect("doc");
        s.update_vector_clock(doc, "conn-1", 4)
            .await
            .expect("clock");
        s.save_delta(&delta(doc, "a", Some(json!(1)), 4))
            .await
            .expect("delta");
    }
    s.save_snapshot(&snapshot("doc", json!({"id": "doc"})))
        .await
        .expect("snapshot")
}

async fn delete_cascades(s: &impl Backend) {
    let snap = seed_two_documents(s, json!({})).await;

    assert!(s.delete_document("doc").await.expect("delete"));
    assert!(s.get_vector_clock("doc").await.expect("clock").is_empty());
    assert!(s.get_deltas("doc", 100).await.expect("deltas").is_empty());
    assert_eq!(s.get_snapshot(snap.id).await.expect("snapshot"), None);
    assert_eq!(s.latest_snapshot("doc").await.expect("latest"), None);
    // Nothing leaks into a new document with the same id, or out of another one.
    s.save_document("doc", &json!({})).await.expect("recreate");
    assert!(s.get_vector_clock("doc").await.expect("clock").is_empty());
    assert!(s.get_deltas("doc", 100).await.expect("deltas").is_empty());
    assert_eq!(
        s.get_vector_clock("other").await.expect("clock"),
        clock(&[("conn-1", 4)])
    );
    assert_eq!(s.get_deltas("other", 100).await.expect("deltas").len(), 1);
}

/// Test mode's clear: every document with its clocks, deltas and snapshots, and
/// every session, go; the maintenance run log stays; the storage stays usable.
async fn clear_all_empties_documents_and_sessions(s: &impl Backend) {
    let snap = seed_two_documents(s, json!({"a": 1})).await;
    s.save_session(&session("s1", "u1", json!({})))
        .await
        .expect("session");
    let run = s
        .claim_run("cleanup", Utc::now(), "instance-1")
        .await
        .expect("claim")
        .expect("claimed");

    assert_eq!(s.clear_all().await.expect("clear"), 2);
    assert!(s.list_documents(10, 0).await.expect("list").is_empty());
    assert!(s.list_sessions(10, 0).await.expect("sessions").is_empty());
    for doc in ["doc", "other"] {
        assert_eq!(s.load_document(doc).await.expect("load"), None);
        assert!(s.get_vector_clock(doc).await.expect("clock").is_empty());
        assert!(s.get_deltas(doc, 100).await.expect("deltas").is_empty());
    }
    assert_eq!(s.get_snapshot(snap.id).await.expect("snapshot"), None);
    let runs = s.recent_runs(10).await.expect("runs");
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
    // Nothing to clear is not an error, and writing afterwards works.
    assert_eq!(s.clear_all().await.expect("clear again"), 0);
    s.write_batch(&[write(
        "doc",
        vec![change("b", Some(json!(2)), "w", 1)],
        &[("w", 1)],
        None,
    )])
    .await
    .expect("write after clear");
    let loaded = s.load_document("doc").await.expect("load").expect("doc");
    assert_eq!(
        loaded.fields,
        json!({"b": 2}).as_object().cloned().expect("obj")
    );
}

async fn list_documents_order_limit_offset(s: &impl Backend) {
    assert!(s.list_documents(100, 0).await.expect("list").is_empty());
    for (i, doc) in ["d1", "d2", "d3", "d4", "d5"].iter().enumerate() {
        s.save_document(doc, &json!({"n": i})).await.expect("save");
        // d1 is the oldest, d5 the newest.
        s.age("documents", Some(doc), HOUR * (10 - i as u32)).await;
    }
    // Updating d2 makes it the most recent.
    s.save_document("d2", &json!({"n": "again"}))
        .await
        .expect("update");
    let ids = |rows: Vec<synckit::testing::storage::DocumentRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(
        ids(s.list_documents(100, 0).await.expect("list")),
        ["d2", "d5", "d4", "d3", "d1"]
    );
    assert_eq!(
        ids(s.list_documents(2, 0).await.expect("list")),
        ["d2", "d5"]
    );
    assert_eq!(
        ids(s.list_documents(2, 2).await.expect("list")),
        ["d4", "d3"]
    );
    assert_eq!(ids(s.list_documents(2, 4).await.expect("list")), ["d1"]);
    assert!(s.list_documents(2, 5).await.expect("list").is_empty());
    assert!(s.list_documents(0, 0).await.expect("list").is_empty());
}

// -- vector clocks -------------------------------------------------------------

async fn clock_overwrite_versus_merge(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    assert!(s.get_vector_clock("doc").await.expect("clock").is_empty());
    s.update_vector_clock("doc", "a", 5).await.expect("update");
    s.update_vector_clock("doc", "a", 3).await.expect("update");
    assert_eq!(
        s.get_vector_clock("doc").await.expect("clock"),
        clock(&[("a", 3)]),
        "update overwrites, even backwards (TS semantics)"
    );
    s.merge_vector_clock("doc", &clock(&[("a", 2), ("b", 7)]))
        .await
        .expect("merge");
    assert_eq!(
        s.get_vector_clock("doc").await.expect("clock"),
        clock(&[("a", 3), ("b", 7)]),
        "merge keeps the greater value"
    );
    s.merge_vector_clock("doc", &clock(&[("a", 9), ("b", 7)]))
        .await
        .expect("merge");
    assert_eq!(
        s.get_vector_clock("doc").await.expect("clock"),
        clock(&[("a", 9), ("b", 7)])
    );
    s.merge_vector_clock("doc", &BTreeMap::new())
        .await
        .expect("empty merge");
    // Values beyond BIGINT saturate instead of failing or wrapping.
    s.update_vector_clock("doc", "huge", u64::MAX)
        .await
        .expect("update");
    assert_eq!(
        s.get_vector_clock("doc").await.expect("clock")["huge"],
        i64::MAX as u64
    );
    // Clock writes never touch the document row.
    assert_eq!(
        s.get_document("doc")
            .await
            .expect("get")
            .expect("row")
            .version,
        1
    );
}

async fn clock_writes_create_the_document(s: &impl Backend) {
    s.merge_vector_clock("m", &clock(&[("a", 1)]))
        .await
        .expect("merge on a new document");
    s.update_vector_clock("u", "a", 1)
        .await
        .expect("update on a new document");
    for doc in ["m", "u"] {
        let row = s.get_document(doc).await.expect("get").expect("created");
        assert_eq!(row.state, json!({"id": doc, "fields": {}}));
        assert_eq!(row.version, 1);
        assert_eq!(
            s.get_vector_clock(doc).await.expect("clock"),
            clock(&[("a", 1)])
        );
    }
    assert_eq!(s.get_document("empty").await.expect("get"), None);
    s.merge_vector_clock("empty", &BTreeMap::new())
        .await
        .expect("empty merge");
    assert_eq!(
        s.get_document("empty").await.expect("get"),
        None,
        "an empty merge writes nothing"
    );
}

// -- deltas --------------------------------------------------------------------

async fn delta_values_json_null_versus_sql_null(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    let values = [
        Some(json!(null)),
        Some(json!(0)),
        Some(json!(false)),
        Some(json!("")),
        Some(json!({"nested": [1, null]})),
        None,
    ];
    for (i, value) in values.iter().enumerate() {
        let row = s
            .save_delta(&delta("doc", &format!("f{i}"), value.clone(), i as u64 + 1))
            .await
            .expect("save");
        assert_eq!(&row.value, value, "returned row keeps the value");
        assert_eq!(row.document_id, "doc");
        assert_eq!(row.client_id, "conn-1");
        assert_eq!(row.clock_value, i as u64 + 1);
        assert_eq!(row.max_clock_value, Some(i as u64 + 1), "defaults to clock");
    }
    let mut stored = s.get_deltas("doc", 100).await.expect("deltas");
    stored.reverse();
    let got: Vec<(String, Option<Value>)> = stored
        .iter()
        .map(|d| (d.operation_type.clone(), d.value.clone()))
        .collect();
    let want: Vec<(String, Option<Value>)> = values
        .iter()
        .map(|v| {
            let op = if v.is_some() { "set" } else { "delete" };
            (op.to_string(), v.clone())
        })
        .collect();
    assert_eq!(
        got, want,
        "JSON null stays JSON null; only a delete is NULL"
    );
}

async fn deltas_newest_first_and_since(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    s.save_document("other", &json!({})).await.expect("doc");
    s.save_delta(&delta("other", "x", Some(json!(0)), 100))
        .await
        .expect("save");
    for i in 1..=5u64 {
        let mut d = delta("doc", &format!("f{i}"), Some(json!(i)), i);
        // An explicit document max (another writer was ahead).
        d.max_clock_value = Some(i * 10);
        let row = s.save_delta(&d).await.expect("save");
        assert_eq!(row.max_clock_value, Some(i * 10));
    }
    let fields =
        |rows: Vec<DeltaRow>| -> Vec<String> { rows.into_iter().map(|d| d.field_path).collect() };
    assert_eq!(
        fields(s.get_deltas("doc", 3).await.expect("deltas")),
        ["f5", "f4", "f3"]
    );
    assert_eq!(s.get_deltas("doc", 100).await.expect("deltas").len(), 5);
    assert_eq!(
        fields(s.get_deltas_since("doc", 20, 100).await.expect("since")),
        ["f3", "f4", "f5"],
        "strictly above `since`, oldest first"
    );
    assert_eq!(
        fields(s.get_deltas_since("doc", 19, 2).await.expect("since")),
        ["f2", "f3"]
    );
    assert!(s
        .get_deltas_since("doc", 50, 100)
        .await
        .expect("since")
        .is_empty());
    assert_eq!(
        fields(s.get_deltas_since("doc", 0, 100).await.expect("since")),
        ["f1", "f2", "f3", "f4", "f5"]
    );
    assert!(s
        .get_deltas("missing", 10)
        .await
        .expect("deltas")
        .is_empty());
}

async fn deltas_need_their_document(s: &impl Backend) {
    let err = s
        .save_delta(&delta("missing", "a", Some(json!(1)), 1))
        .await
        .expect_err("foreign key");
    assert!(matches!(err, StorageError::Query(_)), "{err:?}");
    assert!(!err.is_transient(), "retrying cannot help: {err:?}");
    let err = s
        .save_snapshot(&snapshot("missing", json!({})))
        .await
        .expect_err("foreign key");
    assert!(matches!(err, StorageError::Query(_)), "{err:?}");
    assert_eq!(s.get_document("missing").await.expect("get"), None);
}

// -- sessions ------------------------------------------------------------------

async fn sessions_save_refresh_update_delete(s: &impl Backend) {
    let before = Utc::now() - chrono::Duration::seconds(5);
    s.save_session(&SessionRecord {
        id: "c1".into(),
        user_id: "alice".into(),
        client_id: Some("client-a".into()),
        metadata: json!({"ip": "1.2.3.4", "userAgent": null, "serverId": "srv"}).into(),
    })
    .await
    .expect("save");
    let rows = s.get_sessions("alice").await.expect("get");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, "c1");
    assert_eq!(row.client_id.as_deref(), Some("client-a"));
    assert_eq!(row.connected_at, row.last_seen);
    assert!(row.connected_at > before);
    assert_eq!(
        row.metadata,
        Some(json!({"ip": "1.2.3.4", "userAgent": null, "serverId": "srv"}))
    );

    // Saving again refreshes last_seen and metadata only.
    s.age("sessions", Some("c1"), HOUR).await;
    s.save_session(&SessionRecord {
        id: "c1".into(),
        user_id: "bob".into(),
        client_id: None,
        metadata: json!({"v": 2}).into(),
    })
    .await
    .expect("refresh");
    let row = s.get_sessions("alice").await.expect("get").remove(0);
    assert_eq!(row.user_id, "alice");
    assert_eq!(row.client_id.as_deref(), Some("client-a"));
    assert_eq!(row.metadata, Some(json!({"v": 2})));
    assert!(row.last_seen >= row.connected_at);
    assert!(row.last_seen > Utc::now() - chrono::Duration::minutes(1));
    assert!(s.get_sessions("bob").await.expect("get").is_empty());

    // update_session: explicit last_seen; metadata kept when not given.
    let at = Utc::now() - chrono::Duration::hours(3);
    assert!(s.update_session("c1", at, None).await.expect("update"));
    let row = s.get_sessions("alice").await.expect("get").remove(0);
    assert!((row.last_seen - at).num_milliseconds().abs() < 1);
    assert_eq!(row.metadata, Some(json!({"v": 2})));
    assert!(s
        .update_session("c1", at, Some(&json!({"v": 3})))
        .await
        .expect("update"));
    let row = s.get_sessions("alice").await.expect("get").remove(0);
    assert_eq!(row.metadata, Some(json!({"v": 3})));
    assert!(!s
        .update_session("nope", at, None)
        .await
        .expect("update missing"));

    assert!(s.delete_session("c1").await.expect("delete"));
    assert!(!s.delete_session("c1").await.expect("delete again"));
    assert!(s.get_sessions("alice").await.expect("get").is_empty());
}

async fn sessions_touch_and_listing(s: &impl Backend) {
    for (id, user) in [("s1", "u1"), ("s2", "u1"), ("s3", "u2"), ("s4", "u1")] {
        s.save_session(&session(id, user, json!({})))
            .await
            .expect("save");
    }
    // s1 oldest … s4 newest.
    for (i, id) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        s.age("sessions", Some(id), HOUR * (10 - i as u32)).await;
    }
    let ids = |rows: Vec<synckit::testing::storage::SessionRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(
        ids(s.get_sessions("u1").await.expect("get")),
        ["s4", "s2", "s1"]
    );
    assert_eq!(
        ids(s.list_sessions(100, 0).await.expect("list")),
        ["s4", "s3", "s2", "s1"]
    );
    assert_eq!(
        ids(s.list_sessions(2, 1).await.expect("list")),
        ["s3", "s2"]
    );

    let cutoff = Utc::now() - chrono::Duration::minutes(1);
    s.touch_sessions(&["s1".into(), "s3".into(), "gone".into()])
        .await
        .expect("touch");
    s.touch_sessions(&[]).await.expect("touch nothing");
    let rows = s.list_sessions(100, 0).await.expect("list");
    for row in &rows {
        let fresh = row.last_seen > cutoff;
        assert_eq!(fresh, ["s1", "s3"].contains(&row.id.as_str()), "{row:?}");
    }
    let mut first_two = ids(rows)[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["s1", "s3"]);
}

// -- snapshots -----------------------------------------------------------------

async fn snapshots_save_get_latest_list_delete(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    let state = json!({"id": "doc", "fields": {"title": "héllo", "n": [1, 2]}});
    let first = s
        .save_snapshot(&snapshot("doc", state.clone()))
        .await
        .expect("save");
    assert_eq!(first.document_id, "doc");
    assert_eq!(first.state, state);
    assert_eq!(first.version, json!({"conn-1": 3, "c": 7}), "JSON numbers");
    assert!(first.version["c"].is_u64());
    assert_eq!(
        first.size_bytes as usize,
        serde_json::to_string(&state).expect("json").len(),
        "byte length of the JSON text"
    );
    assert!(!first.compressed);
    assert_eq!(
        s.get_snapshot(first.id).await.expect("get"),
        Some(first.clone())
    );

    let mut ids = vec![first.id];
    for i in 1..4 {
        let row = s
            .save_snapshot(&snapshot("doc", json!({"i": i})))
            .await
            .expect("save");
        ids.push(row.id);
    }
    // ids[0] oldest … ids[3] newest, whatever the clock resolution.
    for (i, id) in ids.iter().enumerate() {
        s.age("snapshots", Some(&id.to_string()), HOUR * (10 - i as u32))
            .await;
    }
    let latest = s
        .latest_snapshot("doc")
        .await
        .expect("latest")
        .expect("one");
    assert_eq!(latest.id, ids[3]);
    let listed: Vec<uuid::Uuid> = s
        .list_snapshots("doc", 3)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [ids[3], ids[2], ids[1]]);
    assert_eq!(s.list_snapshots("doc", 100).await.expect("list").len(), 4);
    assert!(s
        .list_snapshots("other", 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(s.latest_snapshot("other").await.expect("latest"), None);

    assert!(s.delete_snapshot(ids[3]).await.expect("delete"));
    assert!(!s.delete_snapshot(ids[3]).await.expect("delete again"));
    assert_eq!(s.get_snapshot(ids[3]).await.expect("get"), None);
    assert_eq!(
        s.latest_snapshot("doc")
            .await
            .expect("latest")
            .map(|r| r.id),
        Some(ids[2])
    );
    assert_eq!(
        s.get_snapshot(uuid::Uuid::new_v4()).await.expect("get"),
        None
    );
}

async fn compaction_drops_covered_deltas(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    s.save_document("other", &json!({})).await.expect("doc");
    for i in 0..3 {
        s.save_delta(&delta("doc", "a", Some(json!(i)), i))
            .await
            .expect("delta");
    }
    s.save_delta(&delta("other", "a", Some(json!(0)), 1))
        .await
        .expect("delta");
    assert_eq!(s.compact("doc").await.expect("compact"), 0, "no snapshot");
    s.age("deltas", None, HOUR * 2).await;
    let snap = s
        .save_snapshot(&snapshot("doc", json!({})))
        .await
        .expect("snapshot");
    s.age("snapshots", Some(&snap.id.to_string()), HOUR).await;
    s.save_delta(&delta("doc", "a", Some(json!("after")), 9))
        .await
        .expect("delta");

    assert_eq!(s.compact("doc").await.expect("compact"), 3);
    let left = s.get_deltas("doc", 100).await.expect("deltas");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].value, Some(json!("after")));
    assert_eq!(s.compact("doc").await.expect("compact again"), 0);
    assert_eq!(
        s.get_deltas("other", 100).await.expect("deltas").len(),
        1,
        "other documents are untouched"
    );
}

// -- cleanup -------------------------------------------------------------------

/// Expired and fresh rows of every kind, for the cleanup checks. Returns what a
/// cleanup with `options_all()` must remove.
async fn seed_for_cleanup(s: &impl Backend) -> CleanupCounts {
    // Sessions: 3 expired (> 24 h), 2 fresh.
    for i in 0..5 {
        s.save_session(&session(&format!("s{i}"), "u", json!({})))
            .await
            .expect("session");
        if i < 3 {
            s.age("sessions", Some(&format!("s{i}")), HOUR * 25).await;
        }
    }
    // Deltas: 4 expired (> 30 days), 1 fresh.
    s.save_document("doc", &json!({})).await.expect("doc");
    for i in 0..4 {
        s.save_delta(&delta("doc", "a", Some(json!(i)), i))
            .await
            .expect("delta");
    }
    s.age("deltas", None, HOUR * 24 * 31).await;
    s.save_delta(&delta("doc", "a", Some(json!("new")), 9))
        .await
        .expect("delta");
    // Snapshots: 12 fresh ones (2 beyond the rank of 10) and 1 old one.
    for i in 0..12 {
        let row = s
            .save_snapshot(&snapshot("doc", json!({"i": i})))
            .await
            .expect("snapshot");
        s.age("snapshots", Some(&row.id.to_string()), MINUTE * (100 - i))
            .await;
    }
    s.save_document("old", &json!({})).await.expect("doc");
    let old = s
        .save_snapshot(&snapshot("old", json!({})))
        .await
        .expect("snapshot");
    s.age("snapshots", Some(&old.id.to_string()), HOUR * 24 * 8)
        .await;
    CleanupCounts {
        sessions_deleted: 3,
        deltas_deleted: 4,
        snapshots_deleted: 3,
    }
}

async fn cleanup_dry_run_counts_what_a_real_run_deletes(s: &impl Backend) {
    let expected = seed_for_cleanup(s).await;
    let dry = s
        .cleanup(&CleanupOptions {
            dry_run: true,
            ..CleanupOptions::default()
        })
        .await
        .expect("dry run");
    assert_eq!(dry, expected);
    // Nothing was removed.
    assert_eq!(s.list_sessions(100, 0).await.expect("sessions").len(), 5);
    assert_eq!(s.get_deltas("doc", 100).await.expect("deltas").len(), 5);
    assert_eq!(s.list_snapshots("doc", 100).await.expect("snaps").len(), 12);
    assert_eq!(s.list_snapshots("old", 100).await.expect("snaps").len(), 1);

    let real = s
        .cleanup(&CleanupOptions::default())
        .await
        .expect("cleanup");
    assert_eq!(real, dry, "dry-run counts equal real counts");
    assert_eq!(session_ids(s).await, ["s3", "s4"]);
    let deltas = s.get_deltas("doc", 100).await.expect("deltas");
    assert_eq!(deltas.len(), 1);
    assert_eq!(deltas[0].value, Some(json!("new")));
    assert_eq!(s.list_snapshots("doc", 100).await.expect("snaps").len(), 10);
    assert!(s
        .list_snapshots("old", 100)
        .await
        .expect("snaps")
        .is_empty());

    let again = s
        .cleanup(&CleanupOptions::default())
        .await
        .expect("cleanup");
    assert_eq!(again, CleanupCounts::default(), "idempotent");
}

async fn cleanup_retention_edges(s: &impl Backend) {
    s.save_document("doc", &json!({})).await.expect("doc");
    for (id, age) in [
        ("inside", HOUR * 24 - MINUTE),
        ("outside", HOUR * 24 + MINUTE),
    ] {
        s.save_session(&session(id, "u", json!({})))
            .await
            .expect("session");
        s.age("sessions", Some(id), age).await;
        let row = s
            .save_delta(&delta("doc", id, Some(json!(id)), 1))
            .await
            .expect("delta");
        s.age("deltas", Some(&row.id.to_string()), age * 30).await;
        let snap = s
            .save_snapshot(&snapshot("doc", json!({"id": id})))
            .await
            .expect("snapshot");
        s.age("snapshots", Some(&snap.id.to_string()), age * 7)
            .await;
    }
    let options = CleanupOptions {
        max_snapshots_per_document: None,
        ..CleanupOptions::default()
    };
    let dry = s
        .cleanup(&CleanupOptions {
            dry_run: true,
            ..options
        })
        .await
        .expect("dry run");
    let counts = s.cleanup(&options).await.expect("cleanup");
    let one = CleanupCounts {
        sessions_deleted: 1,
        deltas_deleted: 1,
        snapshots_deleted: 1,
    };
    assert_eq!(dry, one);
    assert_eq!(counts, one);
    assert_eq!(session_ids(s).await, ["inside"]);
    let deltas = s.get_deltas("doc", 100).await.expect("deltas");
    assert_eq!(delta_tuples(&deltas)[0].2, "inside");
    assert_eq!(deltas.len(), 1);
    let snaps = s.list_snapshots("doc", 100).await.expect("snapshots");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].state, json!({"id": "inside"}));
}

async fn cleanup_batch_boundaries(s: &impl Backend) {
    // 25 sessions, 20 deltas, 23 snapshots past the rank, batch size 10: several
    // full batches, a partial one, and (deltas) an exact multiple.
    for i in 0..27 {
        s.save_session(&session(&format!("s{i:02}"), "u", json!({})))
            .await
            .expect("session");
    }
    s.age("sessions", None, HOUR * 48).await;
    s.touch_sessions(&["s00".into(), "s01".into()])
        .await
        .expect("touch");
    s.save_document("doc", &json!({})).await.expect("doc");
    for i in 0..20 {
        s.save_delta(&delta("doc", "a", Some(json!(i)), i))
            .await
            .expect("delta");
    }
    s.age("deltas", None, HOUR * 24 * 40).await;
    for i in 0..25 {
        let row = s
            .save_snapshot(&snapshot("doc", json!({"i": i})))
            .await
            .expect("snapshot");
        s.age("snapshots", Some(&row.id.to_string()), MINUTE * (100 - i))
            .await;
    }
    let options = CleanupOptions {
        sessions_older_than: Some(HOUR * 24),
        deltas_older_than: Some(HOUR * 24 * 30),
        snapshots_older_than: None,
        max_snapshots_per_document: Some(2),
        dry_run: false,
        batch_size: 10,
    };
    let expected = CleanupCounts {
        sessions_deleted: 25,
        deltas_deleted: 20,
        snapshots_deleted: 23,
    };
    let dry = s
        .cleanup(&CleanupOptions {
            dry_run: true,
            ..options
        })
        .await
        .expect("dry run");
    assert_eq!(dry, expected);
    assert_eq!(s.cleanup(&options).await.expect("cleanup"), expected);
    assert_eq!(session_ids(s).await, ["s00", "s01"]);
    assert!(s.get_deltas("doc", 100).await.expect("deltas").is_empty());
    let kept: Vec<Value> = s
        .list_snapshots("doc", 100)
        .await
        .expect("snapshots")
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(kept, [json!({"i": 24}), json!({"i": 23})], "the newest two");

    // A batch size of 1 still terminates and counts right.
    for i in 0..3 {
        s.save_session(&session(&format!("t{i}"), "u", json!({})))
            .await
            .expect("session");
        s.age("sessions", Some(&format!("t{i}")), HOUR * 48).await;
    }
    let counts = s
        .cleanup(&CleanupOptions {
            batch_size: 1,
            ..nothing()
        })
        .await
        .expect("cleanup");
    assert_eq!(counts, CleanupCounts::default(), "all steps disabled");
    let counts = s
        .cleanup(&CleanupOptions {
            sessions_older_than: Some(HOUR),
            batch_size: 1,
            ..nothing()
        })
        .await
        .expect("cleanup");
    assert_eq!(counts.sessions_deleted, 3);
}

async fn cleanup_snapshot_rank_rule(s: &impl Backend) {
    // doc a: 5 snapshots aged 1..5 h; doc b: 2 snapshots aged 10 and 11 days.
    s.save_document("a", &json!({})).await.expect("doc");
    s.save_document("b", &json!({})).await.expect("doc");
    for i in 1..=5u32 {
        let row = s
            .save_snapshot(&snapshot("a", json!({"age_h": i})))
            .await
            .expect("snapshot");
        s.age("snapshots", Some(&row.id.to_string()), HOUR * i)
            .await;
    }
    for d in [10u32, 11] {
        let row = s
            .save_snapshot(&snapshot("b", json!({"age_d": d})))
            .await
            .expect("snapshot");
        s.age("snapshots", Some(&row.id.to_string()), HOUR * 24 * d)
            .await;
    }
    let states = |rows: Vec<synckit::testing::storage::SnapshotRow>| -> Vec<Value> {
        rows.into_iter().map(|r| r.state).collect()
    };

    // Rank only: the rule is per document.
    let rank_only = CleanupOptions {
        max_snapshots_per_document: Some(3),
        ..nothing()
    };
    let dry = s
        .cleanup(&CleanupOptions {
            dry_run: true,
            ..rank_only
        })
        .await
        .expect("dry");
    assert_eq!(dry.snapshots_deleted, 2);
    assert_eq!(s.cleanup(&rank_only).await.expect("cleanup"), dry);
    assert_eq!(
        states(s.list_snapshots("a", 100).await.expect("list")),
        [
            json!({"age_h": 1}),
            json!({"age_h": 2}),
            json!({"age_h": 3})
        ]
    );
    assert_eq!(s.list_snapshots("b", 100).await.expect("list").len(), 2);

    // Rank OR age: b's two are older than 7 days though within the rank.
    let rank_or_age = CleanupOptions {
        max_snapshots_per_document: Some(2),
        snapshots_older_than: Some(HOUR * 24 * 7),
        ..nothing()
    };
    let dry = s
        .cleanup(&CleanupOptions {
            dry_run: true,
            ..rank_or_age
        })
        .await
        .expect("dry");
    assert_eq!(dry.snapshots_deleted, 3);
    assert_eq!(s.cleanup(&rank_or_age).await.expect("cleanup"), dry);
    assert_eq!(
        states(s.list_snapshots("a", 100).await.expect("list")),
        [json!({"age_h": 1}), json!({"age_h": 2})]
    );
    assert!(s.list_snapshots("b", 100).await.expect("list").is_empty());

    // Age only.
    let age_only = CleanupOptions {
        snapshots_older_than: Some(HOUR + MINUTE * 30),
        ..nothing()
    };
    assert_eq!(
        s.cleanup(&age_only)
            .await
            .expect("cleanup")
            .snapshots_deleted,
        1
    );
    assert_eq!(
        states(s.list_snapshots("a", 100).await.expect("list")),
        [json!({"age_h": 1})]
    );
}

async fn cleanup_none_disables_a_step(s: &impl Backend) {
    seed_for_cleanup(s).await;
    let all_off = s.cleanup(&nothing()).await.expect("cleanup");
    assert_eq!(all_off, CleanupCounts::default());
    assert_eq!(s.list_sessions(100, 0).await.expect("sessions").len(), 5);

    let sessions_off = s
        .cleanup(&CleanupOptions {
            sessions_older_than: None,
            ..CleanupOptions::default()
        })
        .await
        .expect("cleanup");
    assert_eq!(
        sessions_off,
        CleanupCounts {
            sessions_deleted: 0,
            deltas_deleted: 4,
            snapshots_deleted: 3,
        }
    );
    assert_eq!(s.list_sessions(100, 0).await.expect("sessions").len(), 5);
    // A retention longer than any representable time removes nothing.
    let forever = s
        .cleanup(&CleanupOptions {
            sessions_older_than: Some(Duration::MAX),
            ..nothing()
        })
        .await
        .expect("cleanup");
    assert_eq!(forever, CleanupCounts::default());
    let sessions_only = s
        .cleanup(&CleanupOptions {
            sessions_older_than: Some(HOUR * 24),
            ..nothing()
        })
        .await
        .expect("cleanup");
    assert_eq!(sessions_only.sessions_deleted, 3);
}

// -- the sync path -------------------------------------------------------------

async fn write_batch_round_trip(s: &impl Backend) {
    assert_eq!(s.load_document("d").await.expect("load"), None);
    s.write_batch(&[
        write(
            "d",
            vec![
                change("a", Some(json!(1)), "w1", 1),
                change("b", Some(json!("x")), "w1", 1),
                change("n", Some(json!(null)), "w1", 2),
            ],
            &[("w1", 2)],
            None,
        ),
        write(
            "d",
            vec![change("b", None, "w2", 5)],
            &[("w2", 5), ("w1", 1)],
            Some(("[\"fugue\"]", 3.0)),
        ),
    ])
    .await
    .expect("batch 1");

    let doc = s.load_document("d").await.expect("load").expect("stored");
    assert_eq!(Value::Object(doc.fields), json!({"a": 1, "n": null}));
    assert_eq!(
        doc.clock,
        vec![("w1".to_string(), 2), ("w2".to_string(), 5)]
    );
    assert_eq!(doc.text, Some(("[\"fugue\"]".to_string(), 3.0)));
    let row = s.get_document("d").await.expect("get").expect("row");
    // The TS-readable combined object (docs/storage.md §2.1), identical in both backends.
    assert_eq!(
        row.state,
        json!({
            "id": "d",
            "fields": {"a": 1, "n": null},
            "type": "text",
            "content": "",
            "crdt": "[\"fugue\"]",
            "clock": 3.0
        })
    );
    assert_eq!(row.version, 1);

    // One delta row per field change: `set` with the value (JSON null kept),
    // `delete` with SQL NULL; max_clock_value is the write's highest tick.
    let deltas = s.get_deltas_since("d", 0, 100).await.expect("deltas");
    assert_eq!(
        delta_tuples(&deltas),
        vec![
            ("w1".into(), "set".into(), "a".into(), Some(json!(1)), 1),
            ("w1".into(), "set".into(), "b".into(), Some(json!("x")), 1),
            ("w1".into(), "set".into(), "n".into(), Some(json!(null)), 2),
            ("w2".into(), "delete".into(), "b".into(), None, 5),
        ]
    );
    let max: Vec<Option<u64>> = deltas.iter().map(|d| d.max_clock_value).collect();
    assert_eq!(max, [Some(2), Some(2), Some(2), Some(5)]);
    assert_eq!(
        s.get_deltas_since("d", 2, 100).await.expect("since").len(),
        1
    );

    // A second group: lower clock values never move the clock back; a document
    // without text keeps its text keys; a second document in the same group.
    s.write_batch(&[
        write(
            "d",
            vec![
                change("b", Some(json!(2)), "w1", 1),
                change("a", None, "w1", 1),
            ],
            &[("w1", 1)],
            None,
        ),
        write(
            "e",
            vec![change("x", Some(json!([1])), "w3", 1)],
            &[("w3", 1)],
            None,
        ),
    ])
    .await
    .expect("batch 2");
    let doc = s.load_document("d").await.expect("load").expect("stored");
    assert_eq!(Value::Object(doc.fields), json!({"b": 2, "n": null}));
    assert_eq!(
        doc.clock,
        vec![("w1".to_string(), 2), ("w2".to_string(), 5)]
    );
    assert_eq!(doc.text, Some(("[\"fugue\"]".to_string(), 3.0)));
    let row = s.get_document("d").await.expect("get").expect("row");
    assert_eq!(row.version, 2, "one update per document per group");
    assert_eq!(row.state["fields"], json!({"b": 2, "n": null}));
    let e = s.get_document("e").await.expect("get").expect("row");
    assert_eq!(e.state, json!({"id": "e", "fields": {"x": [1]}}));
    assert_eq!(e.version, 1);
    assert_eq!(s.get_deltas("d", 100).await.expect("deltas").len(), 6);

    // A text-only write replaces the text state and writes no delta.
    s.write_batch(&[write("d", vec![], &[], Some(("[2]", 4.5)))])
        .await
        .expect("batch 3");
    let doc = s.load_document("d").await.expect("load").expect("stored");
    assert_eq!(doc.text, Some(("[2]".to_string(), 4.5)));
    assert_eq!(Value::Object(doc.fields), json!({"b": 2, "n": null}));
    assert_eq!(s.get_deltas("d", 100).await.expect("deltas").len(), 6);
    let row = s.get_document("d").await.expect("get").expect("row");
    assert_eq!(row.version, 3);
    assert_eq!(row.state["crdt"], json!("[2]"));
    assert_eq!(row.state["clock"], json!(4.5));
}

async fn write_batch_patches_existing_state(s: &impl Backend) {
    // Rows written by others: extra keys survive; `fields` is patched, not replaced.
    s.save_document(
        "k",
        &json!({"id": "k", "fields": {"keep": true, "drop": 1}, "extra": "x"}),
    )
    .await
    .expect("save");
    s.write_batch(&[write(
        "k",
        vec![
            change("drop", None, "w", 1),
            change("new", Some(json!({"deep": 1})), "w", 1),
        ],
        &[("w", 1)],
        None,
    )])
    .await
    .expect("batch");
    let row = s.get_document("k").await.expect("get").expect("row");
    assert_eq!(
        row.state,
        json!({"id": "k", "fields": {"keep": true, "new": {"deep": 1}}, "extra": "x"})
    );
    assert_eq!(row.version, 2);
    let doc = s.load_document("k").await.expect("load").expect("stored");
    assert_eq!(
        Value::Object(doc.fields),
        json!({"keep": true, "new": {"deep": 1}})
    );
}

async fn write_batch_of_nothing_writes_nothing(s: &impl Backend) {
    s.write_batch(&[]).await.expect("empty");
    s.write_batch(&[write("d", vec![], &[], None)])
        .await
        .expect("empty write");
    assert_eq!(s.get_document("d").await.expect("get"), None);
    assert_eq!(s.load_document("d").await.expect("load"), None);
}

async fn load_rebuilds_fields_from_deltas(s: &impl Backend) {
    // A C#-written row: state `{}`, fields only in the deltas (docs/storage.md §2.1).
    s.save_document("c", &json!({})).await.expect("save");
    for (op, path, value) in [
        (DeltaOperation::Set, "a", Some(json!(1))),
        (DeltaOperation::Set, "z", Some(json!("gone soon"))),
        (
            DeltaOperation::Set,
            "",
            Some(json!({"b": 2, "a": {"__deleted": true}})),
        ),
        (DeltaOperation::Delete, "z", None),
    ] {
        s.save_delta(&NewDelta {
            document_id: "c".into(),
            client_id: "csharp".into(),
            operation: op,
            field_path: path.into(),
            value,
            clock_value: 1,
            max_clock_value: None,
        })
        .await
        .expect("delta");
    }
    let doc = s.load_document("c").await.expect("load").expect("stored");
    assert_eq!(Value::Object(doc.fields), json!({"b": 2}));
    assert_eq!(doc.text, None);
    // The rebuilt map is kept in `state`, so later patches apply to all of it.
    let row = s.get_document("c").await.expect("get").expect("row");
    assert_eq!(row.state, json!({"id": "c", "fields": {"b": 2}}));

    // A `{}` row with no deltas loads as an empty document.
    s.save_document("empty", &json!({})).await.expect("save");
    let doc = s.load_document("empty").await.expect("load").expect("row");
    assert!(doc.fields.is_empty());
    assert!(doc.clock.is_empty());
}

async fn load_reads_ts_text_documents(s: &impl Backend) {
    s.save_document(
        "t",
        &json!({"type": "text", "content": "", "crdt": "{\"ops\":[]}", "clock": 7}),
    )
    .await
    .expect("save");
    s.update_vector_clock("t", "conn-1", 7)
        .await
        .expect("clock");
    let doc = s.load_document("t").await.expect("load").expect("stored");
    assert!(doc.fields.is_empty());
    assert_eq!(doc.text, Some(("{\"ops\":[]}".to_string(), 7.0)));
    assert_eq!(doc.clock, vec![("conn-1".to_string(), 7)]);

    // An empty `crdt` is no text state (TS's reader ignores it too).
    s.save_document(
        "blank",
        &json!({"type": "text", "content": "", "crdt": "", "clock": 0}),
    )
    .await
    .expect("save");
    let doc = s.load_document("blank").await.expect("load").expect("row");
    assert_eq!(doc.text, None);
}

/// PostgreSQL only: delta ids are UUIDv7 from the server, ascending in apply order
/// across groups (docs/storage.md §3.6), not the column's random default.
#[sqlx::test(migrations = "./migrations")]
async fn postgres_delta_ids_are_time_ordered_in_apply_order(pool: sqlx::PgPool) {
    use synckit::testing::storage::SyncStore;
    let s = synckit::testing::storage::PostgresStorage::from_pool(pool.clone(), true);
    s.connect().await.expect("connect");
    for group in 0..3u64 {
        let writes: Vec<DocumentWrite> = (0..4)
            .map(|i| {
                let tick = group * 4 + i + 1;
                let doc = format!("d{}", i % 2);
                write(
                    &doc,
                    vec![change(&format!("f{tick}"), Some(json!(tick)), "w", tick)],
                    &[("w", tick)],
                    None,
                )
            })
            .collect();
        s.write_batch(&writes).await.expect("batch");
    }
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM deltas ORDER BY timestamp")
        .fetch_all(&pool)
        .await
        .expect("ids");
    assert_eq!(ids.len(), 12);
    assert!(ids.iter().all(|id| id.get_version_num() == 7), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}
