//! The shapes SyncKit servers keep in PostgreSQL (docs/storage.md §2), read and written
//! the same way by every storage backend: TS text documents inside `documents.state`,
//! field maps rebuilt from `deltas` rows, clock values at BIGINT range, snapshot
//! `version` and `size_bytes`, and the cutoff of a retention rule. They live here, not
//! in a backend, so the in-memory backend keeps PostgreSQL's semantics without
//! depending on the PostgreSQL module.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Clock values are BIGINT; ours are u64 that never get near the limit in practice.
pub(crate) fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A BIGINT clock value back as ours; a negative one (never written by us) is 0.
pub(crate) fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The cutoff for an age rule, or `None` when the rule is disabled or reaches
/// before any representable time (then nothing is old enough).
pub(crate) fn cutoff(now: DateTime<Utc>, age: Option<Duration>) -> Option<DateTime<Utc>> {
    let age = chrono::Duration::from_std(age?).ok()?;
    now.checked_sub_signed(age)
}

/// The byte length of the state's JSON text (the `size_bytes` column, as TS
/// computes it), saturating at the column's INTEGER range.
pub(crate) fn snapshot_size(state: &Value) -> i32 {
    let len = serde_json::to_string(state).map(|s| s.len()).unwrap_or(0);
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// A vector clock as JSON numbers (TS wrote strings; readers accept both).
pub(crate) fn clock_json(clock: &BTreeMap<String, u64>) -> Value {
    Value::Object(
        clock
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect(),
    )
}

/// A TS text document's state, when `type` is `text` and `crdt` is non-empty.
pub(crate) fn text_state(state: &Value) -> Option<(String, f64)> {
    if state.get("type").and_then(Value::as_str) != Some("text") {
        return None;
    }
    let crdt = state.get("crdt").and_then(Value::as_str)?;
    if crdt.is_empty() {
        return None;
    }
    let clock = state.get("clock").and_then(Value::as_f64).unwrap_or(0.0);
    Some((crdt.to_owned(), clock))
}

/// Replay delta rows (docs/storage.md §2.1): `set` of a field assigns it; `set` with an
/// empty path and an object value (C#'s form) assigns each key, where
/// `{"__deleted":true}` removes it; `delete` removes.
pub(crate) fn rebuild_fields(rows: Vec<(String, String, Option<Value>)>) -> Map<String, Value> {
    let mut fields = Map::new();
    for (op, path, value) in rows {
        match (op.as_str(), path.is_empty(), value) {
            ("set", false, Some(value)) => {
                fields.insert(path, value);
            }
            ("set", false, None) => {
                // TS wrote SQL NULL for falsy values (docs/storage.md §2.3).
                fields.insert(path, Value::Null);
            }
            ("set", true, Some(Value::Object(map))) => {
                for (key, value) in map {
                    if crate::protocol::message::is_tombstone(&value) {
                        fields.remove(&key);
                    } else {
                        fields.insert(key, value);
                    }
                }
            }
            ("delete", false, _) => {
                fields.remove(&path);
            }
            _ => {}
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rebuild_follows_ts_and_csharp_rows() {
        let rows = vec![
            ("set".into(), "a".into(), Some(json!(1))),
            ("set".into(), "b".into(), None),
            (
                "set".into(),
                String::new(),
                Some(json!({"c": 3, "a": {"__deleted": true}})),
            ),
            ("set".into(), "d".into(), Some(json!("x"))),
            ("delete".into(), "d".into(), None),
            ("merge".into(), "e".into(), Some(json!(1))),
        ];
        assert_eq!(
            Value::Object(rebuild_fields(rows)),
            json!({"b": null, "c": 3})
        );
    }

    #[test]
    fn text_state_needs_type_text_and_a_crdt() {
        assert_eq!(
            text_state(&json!({"type": "text", "crdt": "[1]", "clock": 3})),
            Some(("[1]".to_string(), 3.0))
        );
        assert_eq!(text_state(&json!({"type": "text", "crdt": ""})), None);
        assert_eq!(text_state(&json!({"crdt": "[1]"})), None);
    }
}
