//! Vector clocks: per-writer counters, merged by max (docs/protocol.md §8.3).

use crate::hash::FastMap;
use serde_json::{Map, Value};

/// Largest integer a JavaScript client can represent exactly (2^53 − 1).
pub(crate) const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// Writer id → counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VectorClock(FastMap<String, u64>);

impl VectorClock {
    #[cfg(test)]
    pub(crate) fn new() -> VectorClock {
        VectorClock::default()
    }

    pub(crate) fn get(&self, writer: &str) -> u64 {
        self.0.get(writer).copied().unwrap_or(0)
    }

    /// Advance `writer` by one and return its new value.
    pub(crate) fn tick(&mut self, writer: &str) -> u64 {
        let slot = match self.0.get_mut(writer) {
            Some(v) => v,
            None => self.0.entry(writer.to_owned()).or_insert(0),
        };
        *slot = slot.saturating_add(1).min(MAX_SAFE_INTEGER);
        *slot
    }

    /// Raise `writer` to at least `value`; returns whether it changed.
    pub(crate) fn observe(&mut self, writer: &str, value: u64) -> bool {
        let value = value.min(MAX_SAFE_INTEGER);
        match self.0.get_mut(writer) {
            Some(v) if *v >= value => false,
            Some(v) => {
                *v = value;
                true
            }
            None => {
                self.0.insert(writer.to_owned(), value);
                true
            }
        }
    }

    /// Merge a client-supplied clock, ignoring entries that are not non-negative
    /// integers within the JS safe range (TS would throw). Returns the entries that
    /// changed, for persistence.
    pub(crate) fn merge_json(&mut self, other: &Map<String, Value>) -> Vec<(String, u64)> {
        let mut changed = Vec::new();
        for (writer, value) in other {
            let Some(v) = value.as_u64().filter(|v| *v <= MAX_SAFE_INTEGER) else {
                continue;
            };
            if writer.is_empty() || writer.len() > 255 {
                continue;
            }
            if self.observe(writer, v) {
                changed.push((writer.clone(), v));
            }
        }
        changed
    }

    pub(crate) fn contains(&self, writer: &str) -> bool {
        self.0.contains_key(writer)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.0.iter()
    }

    pub(crate) fn to_json(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect()
    }

    /// Serialized once per broadcast flush and embedded in every field delta.
    pub(crate) fn to_json_string(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl FromIterator<(String, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> VectorClock {
        VectorClock(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tick_and_observe() {
        let mut c = VectorClock::new();
        assert_eq!(c.tick("a"), 1);
        assert_eq!(c.tick("a"), 2);
        assert!(!c.observe("a", 1));
        assert!(c.observe("a", 5));
        assert_eq!(c.get("a"), 5);
        assert_eq!(c.get("zz"), 0);
    }

    #[test]
    fn merge_takes_max_and_ignores_bad_entries() {
        let mut c: VectorClock = [("a".to_string(), 3)].into_iter().collect();
        let changed = c.merge_json(
            json!({"a": 2, "b": 7, "neg": -1, "frac": 1.5, "str": "9", "big": 9007199254740992u64, "": 3})
                .as_object()
                .expect("obj"),
        );
        assert_eq!(changed, vec![("b".to_string(), 7)]);
        assert_eq!(c.get("a"), 3);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn serializes_as_object_of_integers() {
        let c: VectorClock = [("w".to_string(), 4)].into_iter().collect();
        assert_eq!(c.to_json_string(), r#"{"w":4}"#);
        assert_eq!(Value::Object(c.to_json()), json!({"w": 4}));
    }
}
