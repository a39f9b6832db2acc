//! The two statements the sync path lives on: loading a document (docs/storage.md §2)
//! and persisting a group of applied writes in one transaction (§3.6, IMPROVE).
//!
//! A group is coalesced before it reaches SQL — one document upsert per document,
//! one clock upsert per (document, writer), every delta row — and each of the three
//! is a single `UNNEST` statement, so a group of hundreds of writes costs three round
//! trips. Field changes are merged into the stored `fields` object in SQL rather than
//! written wholesale, so a write never clobbers fields this instance did not load.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};
use sqlx::PgPool;

use super::classify;
use crate::storage::shape::{from_db, rebuild_fields, text_state, to_db};
use crate::storage::{DocumentWrite, StorageError, StoredDocument};

/// The field document object TS reads (`{"id","fields"}`), with the text keys TS's
/// text reader looks for when the document has a text state.
fn text_keys(text: &(crate::text::StateJson, f64)) -> Value {
    json!({ "type": "text", "content": "", "crdt": *text.0, "clock": text.1 })
}

/// One document's share of a group.
#[derive(Default)]
struct DocumentPatch {
    sets: Map<String, Value>,
    deletes: BTreeSet<String>,
    text: Option<(crate::text::StateJson, f64)>,
}

#[derive(Default)]
struct Columns {
    doc_ids: Vec<String>,
    doc_states: Vec<Value>,
    deletes: Map<String, Value>,
    clock_docs: Vec<String>,
    clock_writers: Vec<String>,
    clock_values: Vec<i64>,
    /// Time-ordered (UUIDv7), so the primary key grows at its right edge.
    delta_ids: Vec<uuid::Uuid>,
    delta_docs: Vec<String>,
    delta_writers: Vec<String>,
    delta_ops: Vec<&'static str>,
    delta_fields: Vec<String>,
    delta_values: Vec<Option<Value>>,
    delta_clocks: Vec<i64>,
    delta_max_clocks: Vec<i64>,
}

/// Coalesce a group into column arrays, in apply order: each write's changes go
/// into its document's patch (and the delta rows), its clock entries into the
/// largest value per (document, writer); then one row per document and per entry.
fn columns(writes: &[DocumentWrite]) -> Columns {
    let mut order: Vec<&str> = Vec::new();
    let mut patches: HashMap<&str, DocumentPatch> = HashMap::new();
    let mut clocks = ClockMaxima::default();
    let mut cols = Columns::default();
    for write in writes {
        let doc: &str = &write.document_id;
        let patch = patches.entry(doc).or_insert_with(|| {
            order.push(doc);
            DocumentPatch::default()
        });
        cols.push_changes(doc, write, patch);
        if let Some(text) = &write.text {
            patch.text = Some(text.clone());
        }
        for (writer, value) in &write.clock {
            clocks.observe((doc, writer.as_str()), *value);
        }
    }
    for doc in order {
        if let Some(patch) = patches.remove(doc) {
            cols.push_document(doc, patch);
        }
    }
    for (key, value) in clocks.in_order() {
        cols.clock_docs.push(key.0.to_owned());
        cols.clock_writers.push(key.1.to_owned());
        cols.clock_values.push(to_db(value));
    }
    cols
}

impl Columns {
    /// A write's field changes: merged into its document's patch (the last change
    /// of a field wins) and one delta row each, stamped with the write's largest
    /// clock value.
    fn push_changes(&mut self, doc: &str, write: &DocumentWrite, patch: &mut DocumentPatch) {
        let max_clock = write.max_clock_value();
        for change in &write.changes {
            match &change.value {
                Some(value) => {
                    patch.deletes.remove(&change.field);
                    patch.sets.insert(change.field.clone(), value.clone());
                }
                None => {
                    patch.sets.remove(&change.field);
                    patch.deletes.insert(change.field.clone());
                }
            }
            self.delta_ids.push(uuid::Uuid::now_v7());
            self.delta_docs.push(doc.to_owned());
            self.delta_writers.push(change.writer.clone());
            self.delta_ops.push(if change.value.is_some() {
                "set"
            } else {
                "delete"
            });
            self.delta_fields.push(change.field.clone());
            self.delta_values.push(change.value.clone());
            self.delta_clocks.push(to_db(change.clock_value));
            self.delta_max_clocks.push(to_db(max_clock));
        }
    }

    /// A document's coalesced patch as its upsert row (and its deleted fields).
    fn push_document(&mut self, doc: &str, patch: DocumentPatch) {
        let mut state = json!({ "id": doc, "fields": Value::Object(patch.sets) });
        if let (Some(text), Value::Object(obj)) = (&patch.text, &mut state) {
            if let Value::Object(keys) = text_keys(text) {
                obj.extend(keys);
            }
        }
        if !patch.deletes.is_empty() {
            self.deletes.insert(
                doc.to_owned(),
                Value::Array(patch.deletes.into_iter().map(Value::String).collect()),
            );
        }
        self.doc_ids.push(doc.to_owned());
        self.doc_states.push(state);
    }
}

/// The largest value of each (document, writer) clock entry in a group, in the
/// order the entries first appeared: one upsert row each.
#[derive(Default)]
struct ClockMaxima<'a> {
    values: HashMap<(&'a str, &'a str), u64>,
    order: Vec<(&'a str, &'a str)>,
}

impl<'a> ClockMaxima<'a> {
    fn observe(&mut self, key: (&'a str, &'a str), value: u64) {
        match self.values.get_mut(&key) {
            Some(v) => *v = (*v).max(value),
            None => {
                self.values.insert(key, value);
                self.order.push(key);
            }
        }
    }

    fn in_order(self) -> impl Iterator<Item = ((&'a str, &'a str), u64)> {
        let values = self.values;
        self.order
            .into_iter()
            .map(move |key| (key, values.get(&key).copied().unwrap_or(0)))
    }
}

/// New documents get the patch as their state; existing ones get their `fields`
/// object patched (deleted keys removed, set keys replaced) and the text keys
/// replaced. A non-object `state` or `fields` left by another writer is treated as
/// empty rather than failing the whole group.
const UPSERT_DOCUMENTS: &str = "
INSERT INTO documents (id, state)
SELECT u.id, u.state FROM UNNEST($1::text[], $2::jsonb[]) AS u(id, state)
ON CONFLICT (id) DO UPDATE SET state =
    (CASE WHEN jsonb_typeof(documents.state) = 'object' THEN documents.state ELSE '{}'::jsonb END)
    || EXCLUDED.state
    || jsonb_build_object('fields',
        ((CASE WHEN jsonb_typeof(documents.state -> 'fields') = 'object'
               THEN documents.state -> 'fields' ELSE '{}'::jsonb END)
          - ARRAY(SELECT jsonb_array_elements_text(COALESCE($3::jsonb -> EXCLUDED.id, '[]'::jsonb))))
        || (EXCLUDED.state -> 'fields'))";

const UPSERT_CLOCKS: &str = "
INSERT INTO vector_clocks (document_id, client_id, clock_value)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])
ON CONFLICT (document_id, client_id) DO UPDATE
SET clock_value = GREATEST(vector_clocks.clock_value, EXCLUDED.clock_value), updated_at = NOW()";

/// Rows keep their apply order in `timestamp`: the statement reads the clock once
/// and spaces its rows one microsecond apart. (`NOW()` is fixed per transaction and
/// `clock_timestamp()` repeats within a statement, so either alone would tie.) The
/// next group starts later than this one's last row, because inserting n rows takes
/// far longer than n microseconds.
///
/// Row ids come from the server, time-ordered (UUIDv7), rather than from the column's
/// default `uuid_generate_v4()`: a random key lands on a random page of the primary
/// key's index, an ordered one at its right edge, and the default also formats and
/// parses each id as text (docs/storage.md §3.6).
const INSERT_DELTAS: &str = "
INSERT INTO deltas (id, document_id, client_id, operation_type, field_path, value, clock_value,
                    max_clock_value, timestamp)
SELECT u.id, u.d, u.c, u.o, u.f, u.v, u.cv, u.m, t.base + u.ord * INTERVAL '1 microsecond'
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int8[],
            $8::int8[])
    WITH ORDINALITY AS u(id, d, c, o, f, v, cv, m, ord)
CROSS JOIN (SELECT clock_timestamp() AS base) AS t";

/// Persist a group of writes atomically.
pub(crate) async fn write_batch(
    pool: &PgPool,
    writes: &[DocumentWrite],
) -> Result<(), StorageError> {
    if writes.iter().all(DocumentWrite::is_empty) {
        return Ok(());
    }
    let cols = columns(writes);
    let acquiring = std::time::Instant::now();
    let mut tx = pool.begin().await.map_err(classify)?;
    crate::metrics::PROCESS
        .postgres_acquire
        .observe_since(acquiring);
    sqlx::query(UPSERT_DOCUMENTS)
        .bind(&cols.doc_ids)
        .bind(&cols.doc_states)
        .bind(Value::Object(cols.deletes))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    if !cols.clock_docs.is_empty() {
        sqlx::query(UPSERT_CLOCKS)
            .bind(&cols.clock_docs)
            .bind(&cols.clock_writers)
            .bind(&cols.clock_values)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    if !cols.delta_docs.is_empty() {
        sqlx::query(INSERT_DELTAS)
            .bind(&cols.delta_ids)
            .bind(&cols.delta_docs)
            .bind(&cols.delta_writers)
            .bind(&cols.delta_ops)
            .bind(&cols.delta_fields)
            .bind(&cols.delta_values)
            .bind(&cols.delta_clocks)
            .bind(&cols.delta_max_clocks)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)
}

/// Load a document: `state.fields` when present; otherwise (rows written by C#,
/// whose state is `{}`) fields rebuilt from `deltas` and written back into
/// `state.fields`, so later patches apply to the whole field map.
pub(crate) async fn load_document(
    pool: &PgPool,
    id: &str,
) -> Result<Option<StoredDocument>, StorageError> {
    let state: Option<Value> = sqlx::query_scalar("SELECT state FROM documents WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
    let Some(state) = state else {
        return Ok(None);
    };
    let clock_rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT client_id, clock_value FROM vector_clocks WHERE document_id = $1 ORDER BY client_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    let clock = clock_rows
        .into_iter()
        .map(|(writer, value)| (writer, from_db(value)))
        .collect();
    let text = text_state(&state);
    let fields = match state.get("fields") {
        Some(Value::Object(fields)) => fields.clone(),
        _ if text.is_some() => Map::new(),
        _ => adopt_fields_from_deltas(pool, id).await?,
    };
    Ok(Some(StoredDocument {
        fields,
        clock,
        text,
    }))
}

async fn adopt_fields_from_deltas(
    pool: &PgPool,
    id: &str,
) -> Result<Map<String, Value>, StorageError> {
    let rows: Vec<(String, String, Option<Value>)> = sqlx::query_as(
        "SELECT operation_type, field_path, value FROM deltas WHERE document_id = $1 \
         ORDER BY timestamp ASC, id ASC",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    if rows.is_empty() {
        return Ok(Map::new());
    }
    let fields = rebuild_fields(rows);
    sqlx::query(
        "UPDATE documents SET state = \
         (CASE WHEN jsonb_typeof(state) = 'object' THEN state ELSE '{}'::jsonb END) \
         || jsonb_build_object('id', id, 'fields', $2::jsonb) WHERE id = $1",
    )
    .bind(id)
    .bind(Value::Object(fields.clone()))
    .execute(pool)
    .await
    .map_err(classify)?;
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_coalesces_per_document_and_writer() {
        use crate::storage::FieldChange;
        use std::sync::Arc;
        let change = |field: &str, value: Option<Value>, tick: u64| FieldChange {
            field: field.into(),
            value,
            writer: "w".into(),
            clock_value: tick,
        };
        let writes = vec![
            DocumentWrite {
                document_id: Arc::from("d"),
                changes: vec![change("a", Some(json!(1)), 1), change("b", None, 2)],
                clock: vec![("w".into(), 2)],
                text: None,
            },
            DocumentWrite {
                document_id: Arc::from("d"),
                changes: vec![change("b", Some(json!(null)), 3), change("a", None, 4)],
                clock: vec![("w".into(), 4), ("c".into(), 9)],
                text: Some((crate::text::StateJson::new("{}".into()), 2.0)),
            },
        ];
        let cols = columns(&writes);
        assert_eq!(cols.doc_ids, vec!["d"]);
        assert_eq!(
            cols.doc_states,
            vec![
                json!({"id": "d", "fields": {"b": null}, "type": "text", "content": "", "crdt": "{}", "clock": 2.0})
            ]
        );
        assert_eq!(Value::Object(cols.deletes), json!({"d": ["a"]}));
        assert_eq!(cols.clock_writers, vec!["w", "c"]);
        assert_eq!(cols.clock_values, vec![4, 9]);
        assert_eq!(cols.delta_ops, vec!["set", "delete", "set", "delete"]);
        assert_eq!(cols.delta_values[2], Some(Value::Null));
        assert_eq!(cols.delta_max_clocks, vec![2, 2, 9, 9]);
    }
}
