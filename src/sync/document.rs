//! One document's authoritative state: LWW field map, vector clock, text state
//! (docs/protocol.md §8.1–§8.5).
//!
//! Writes to a document are serialized by the hub's per-document lock, so "last
//! writer wins by server arrival" is simply "last processed wins": a set overwrites,
//! a delete removes the field (no tombstone kept; a later set recreates it).

use crate::hash::FastMap;
use serde_json::{Map, Value};

use super::clock::VectorClock;
use super::text::TextState;
use crate::protocol::message::{is_tombstone, tombstone};

/// The result of one field write, as broadcast and persisted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldOutcome {
    pub(crate) field: String,
    /// The stored value, or `{"__deleted":true}` when the write deleted the field.
    pub(crate) authoritative: Value,
    pub(crate) deleted: bool,
    pub(crate) writer: String,
    /// The writer's clock entry after its tick.
    pub(crate) tick: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Document {
    pub(crate) fields: FastMap<String, Value>,
    pub(crate) clock: VectorClock,
    pub(crate) text: Option<TextState>,
}

impl Document {
    /// Apply one client field write by `writer` (set, or delete on a tombstone).
    pub(crate) fn write_field(
        &mut self,
        field: String,
        value: Value,
        writer: &str,
    ) -> FieldOutcome {
        let tick = self.clock.tick(writer);
        let deleted = is_tombstone(&value);
        let authoritative = if deleted {
            self.fields.remove(&field);
            tombstone()
        } else {
            self.fields.insert(field.clone(), value.clone());
            value
        };
        FieldOutcome {
            field,
            authoritative,
            deleted,
            writer: writer.to_owned(),
            tick,
        }
    }

    /// Apply a value another instance already decided (no tick: its clock arrives
    /// with it and is merged separately).
    pub(crate) fn apply_authoritative(&mut self, field: &str, value: &Value) {
        if is_tombstone(value) {
            self.fields.remove(field);
        } else {
            self.fields.insert(field.to_owned(), value.clone());
        }
    }

    /// The field map as sent in `sync_response.state`.
    pub(crate) fn state_json(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The clock as sent in `sync_response.clock`. It must be non-empty whenever the
    /// state is (SDK 0.3.0 computes `max(values(clock))`), which holds because every
    /// field write ticks a writer; restored documents get a `storage` entry.
    pub(crate) fn clock_json(&self) -> Map<String, Value> {
        self.clock.to_json()
    }

    /// Approximate in-memory size of the field values, for stats.
    pub(crate) fn approximate_size(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum::<usize>()
            + self.text.as_ref().map_or(0, |t| t.json().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_processed_write_wins_and_ticks_writer() {
        let mut d = Document::default();
        let a = d.write_field("f".into(), json!(1), "w1");
        let b = d.write_field("f".into(), json!(2), "w2");
        assert_eq!(a.tick, 1);
        assert_eq!(b.tick, 1);
        assert_eq!(d.fields["f"], json!(2));
        assert_eq!(d.clock.get("w1"), 1);
        d.write_field("g".into(), json!(null), "w1");
        assert_eq!(d.fields["g"], Value::Null, "null is a value, not a delete");
        assert_eq!(d.clock.get("w1"), 2);
    }

    #[test]
    fn delete_removes_and_broadcasts_tombstone_even_when_missing() {
        let mut d = Document::default();
        d.write_field("f".into(), json!("x"), "w");
        let out = d.write_field("f".into(), json!({"__deleted": true}), "w");
        assert!(out.deleted);
        assert_eq!(out.authoritative, json!({"__deleted": true}));
        assert!(!d.fields.contains_key("f"));
        let again = d.write_field("nope".into(), json!({"__deleted": true}), "w");
        assert!(again.deleted);
        d.write_field("f".into(), json!(3), "w");
        assert_eq!(d.fields["f"], json!(3), "a later set recreates the field");
    }

    #[test]
    fn remote_authoritative_values_do_not_tick() {
        let mut d = Document::default();
        d.apply_authoritative("f", &json!(1));
        assert!(d.clock.is_empty());
        d.apply_authoritative("f", &json!({"__deleted": true}));
        assert!(d.fields.is_empty());
    }
}
