//! Text CRDT state of a SyncText document (docs/protocol.md §8.5), merged with the same
//! `synckit-core` Fugue implementation the SDK runs as WASM.

use std::panic::{catch_unwind, AssertUnwindSafe};

use synckit_core::crdt::FugueText;

/// The document's text state: the Fugue JSON string clients exchange, the parsed
/// CRDT (kept so a merge does not re-parse our own state), and `textClock`.
#[derive(Debug, Clone)]
pub struct TextState {
    json: String,
    parsed: Option<FugueText>,
    clock: f64,
}

impl PartialEq for TextState {
    fn eq(&self, other: &TextState) -> bool {
        self.json == other.json && self.clock == other.clock
    }
}

impl TextState {
    /// A state restored from storage or received first.
    pub fn new(json: String, clock: f64) -> TextState {
        let parsed = parse(&json);
        TextState {
            json,
            parsed,
            clock,
        }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn clock(&self) -> f64 {
        self.clock
    }

    /// Merge an incoming state. When either side does not deserialize, or the merge
    /// fails, the incoming state replaces ours unchanged (TS rule) — the state is then
    /// treated as opaque. `clock` becomes the max of both.
    pub fn merge(&mut self, incoming: &str, incoming_clock: f64) {
        self.clock = self.clock.max(incoming_clock);
        let Some(remote) = parse(incoming) else {
            self.replace(incoming);
            return;
        };
        let Some(local) = self.parsed.as_mut() else {
            self.json = incoming.to_owned();
            self.parsed = Some(remote);
            return;
        };
        // A CRDT library bug must not take the connection task down: contain panics.
        let mut candidate = local.clone();
        let merged = catch_unwind(AssertUnwindSafe(|| {
            candidate.merge(&remote).ok()?;
            serde_json::to_string(&candidate).ok()
        }))
        .ok()
        .flatten();
        match merged {
            Some(json) => {
                self.json = json;
                self.parsed = Some(candidate);
            }
            None => self.replace(incoming),
        }
    }

    fn replace(&mut self, incoming: &str) {
        self.json = incoming.to_owned();
        self.parsed = parse(incoming);
    }
}

fn parse(json: &str) -> Option<FugueText> {
    catch_unwind(|| serde_json::from_str::<FugueText>(json).ok())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(client: &str, text: &str) -> String {
        let mut t = FugueText::new(client.to_owned());
        t.insert(0, text).expect("insert");
        serde_json::to_string(&t).expect("serialize")
    }

    fn text_of(json: &str) -> String {
        serde_json::from_str::<FugueText>(json)
            .expect("parse")
            .to_string()
    }

    #[test]
    fn merges_concurrent_states_from_two_clients() {
        let a = state_with("client-a", "Hello");
        let b = state_with("client-b", "World");
        let mut s = TextState::new(a.clone(), 10.0);
        s.merge(&b, 20.0);
        let merged = text_of(s.json());
        assert_eq!(merged.len(), 10);
        assert!(merged.contains("Hello") && merged.contains("World"));
        assert_eq!(s.clock(), 20.0);
        // Merging in the other order converges to the same text.
        let mut t = TextState::new(b, 5.0);
        t.merge(&a, 1.0);
        assert_eq!(text_of(t.json()), merged);
        assert_eq!(t.clock(), 5.0);
    }

    #[test]
    fn merge_is_idempotent() {
        let a = state_with("client-a", "abc");
        let mut s = TextState::new(a.clone(), 1.0);
        s.merge(&a, 1.0);
        assert_eq!(text_of(s.json()), "abc");
    }

    #[test]
    fn opaque_states_are_replaced_not_merged() {
        let mut s = TextState::new("not a crdt".into(), 1.0);
        let a = state_with("client-a", "x");
        s.merge(&a, 2.0);
        assert_eq!(s.json(), a);
        s.merge("{\"garbage\":true}", 3.0);
        assert_eq!(s.json(), "{\"garbage\":true}");
        assert_eq!(s.clock(), 3.0);
    }
}
