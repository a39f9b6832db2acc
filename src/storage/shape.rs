//! The JSON shapes SyncKit servers keep in PostgreSQL (docs/storage.md §2), read the same
//! way by both storage backends: TS text documents inside `documents.state`, and field
//! maps rebuilt from `deltas` rows.

use serde_json::{Map, Value};

/// A TS text document's state, when `type` is `text` and `crdt` is non-empty.
pub fn text_state(state: &Value) -> Option<(String, f64)> {
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
pub fn rebuild_fields(rows: Vec<(String, String, Option<Value>)>) -> Map<String, Value> {
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
