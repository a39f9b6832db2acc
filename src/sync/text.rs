//! Text state of a SyncText document: the state JSON clients exchange and store,
//! kept with its parsed form so a merge neither re-parses nor re-writes our own
//! state needlessly (README "Text engine").

use crate::text::{self, Limits, StateJson, TextDoc, TextError};

/// The document's text state: the JSON sent in `sync_response.textState` and
/// stored, the parsed document it was written from, and `textClock`.
#[derive(Debug, Clone)]
pub(crate) struct TextState {
    json: StateJson,
    /// `None` while the state is empty, while a merge has it out (the JSON stays
    /// here, so readers are served meanwhile), or when a stored state does not
    /// parse (it is then served as stored until a valid state replaces it).
    doc: Option<TextDoc>,
    clock: f64,
    /// Set while a merge has `doc` out.
    busy: bool,
}

impl PartialEq for TextState {
    fn eq(&self, other: &TextState) -> bool {
        self.json == other.json && self.clock == other.clock
    }
}

/// What a merge produced: the document, and its JSON when it changed.
pub(crate) type Merged = (Option<TextDoc>, Result<Option<StateJson>, TextError>);

impl TextState {
    /// No text yet.
    pub(crate) fn empty() -> TextState {
        TextState {
            json: StateJson::default(),
            doc: None,
            clock: 0.0,
            busy: false,
        }
    }

    /// A state restored from storage (parsing is O(size): callers run it off the
    /// async runtime when it is large).
    pub(crate) fn restored(json: impl Into<StateJson>, clock: f64, limits: &Limits) -> TextState {
        let json = json.into();
        let doc = match text::parse(&json, limits).and_then(|s| TextDoc::from_state(s, limits)) {
            Ok(mut doc) => {
                // What the next client resends is compared with it (src/text).
                doc.adopt_json(&json);
                Some(doc)
            }
            Err(e) => {
                tracing::warn!(error = %e, "stored text state is not valid: served as stored until a valid state replaces it");
                None
            }
        };
        TextState {
            json,
            doc,
            clock,
            busy: false,
        }
    }

    /// A state served as stored, not parsed.
    pub(crate) fn opaque(json: StateJson, clock: f64) -> TextState {
        TextState {
            json,
            doc: None,
            clock,
            busy: false,
        }
    }

    pub(crate) fn json(&self) -> &str {
        &self.json
    }

    /// The JSON, shared (a reader copies it outside the document lock).
    pub(crate) fn json_shared(&self) -> StateJson {
        self.json.clone()
    }

    pub(crate) fn clock(&self) -> f64 {
        self.clock
    }

    /// Take the parsed document out for a merge; [`TextState::put_back`] returns
    /// it. Merges of one document are serialized by the caller.
    pub(crate) fn take_doc(&mut self) -> Option<TextDoc> {
        self.busy = true;
        self.doc.take()
    }

    /// Return the document after a merge: with its new JSON and the incoming
    /// `textClock` when the merge was accepted (`clock` becomes the max of both).
    pub(crate) fn put_back(
        &mut self,
        doc: Option<TextDoc>,
        accepted: Option<(Option<StateJson>, f64)>,
    ) {
        self.doc = doc;
        self.busy = false;
        if let Some((json, clock)) = accepted {
            if let Some(json) = json {
                self.json = json;
            }
            self.clock = self.clock.max(clock);
        }
    }

    /// Parse, check and merge an incoming state in place (small work: the resync
    /// read-back, tests). `Ok(true)` when the document kept something the incoming
    /// state lacks — a writer of that state (storage, a peer) is behind us.
    #[cfg(test)]
    pub(crate) fn merge(
        &mut self,
        incoming: &str,
        incoming_clock: f64,
        limits: &Limits,
    ) -> Result<bool, TextError> {
        let (doc, result, kept_more) = merge_reporting(self.take_doc(), incoming, limits, true);
        let outcome = result.map(|json| (json, incoming_clock));
        let accepted = outcome.as_ref().ok().cloned();
        self.put_back(doc, accepted);
        outcome.map(|_| kept_more)
    }
}

/// [`merge_into`], also saying — when `reporting` — whether the merged document
/// holds more than `incoming` (see `coverage`; this parses the whole state, where
/// [`merge_into`] may compare it byte by byte with the last JSON).
pub(crate) fn merge_reporting(
    doc: Option<TextDoc>,
    incoming: &str,
    limits: &Limits,
    reporting: bool,
) -> (Option<TextDoc>, Result<Option<StateJson>, TextError>, bool) {
    if !reporting {
        let (doc, result) = merge_into(doc, incoming, limits);
        return (doc, result, false);
    }
    let Some(mut doc) = doc else {
        let (doc, result) = merge_into(None, incoming, limits);
        return (doc, result, false);
    };
    let remote = match text::parse(incoming, limits) {
        Ok(remote) => remote,
        Err(e) => return (Some(doc), Err(e), false),
    };
    let theirs = coverage(&remote);
    match doc.merge(remote, limits) {
        Ok(summary) => {
            let kept_more = coverage(&doc.state) != theirs;
            let json = summary.changed.then(|| doc.write_json());
            (Some(doc), Ok(json), kept_more)
        }
        Err(e) => (Some(doc), Err(e), false),
    }
}

/// Characters a state covers and characters it marks deleted. A merge is a union
/// (blocks only split, deletions only spread), so the merged document covers at
/// least what each side did, and it differs from one side exactly when one of the
/// two counts grew.
fn coverage(state: &text::State) -> (u64, u64) {
    state.blocks.iter().fold((0, 0), |(all, deleted), b| {
        (all + b.len, deleted + if b.deleted { b.len } else { 0 })
    })
}

/// Parse `incoming`, check it and merge it into `doc` (a refused state leaves
/// `doc` as it was). Pure CPU work, no lock: it may run on the blocking pool.
fn merge_into(doc: Option<TextDoc>, incoming: &str, limits: &Limits) -> Merged {
    match doc {
        Some(mut doc) => match doc.merge_json(incoming, limits) {
            Ok(summary) => {
                let json = summary.changed.then(|| doc.write_json());
                (Some(doc), Ok(json))
            }
            Err(e) => (Some(doc), Err(e)),
        },
        None => match text::parse(incoming, limits).and_then(|s| TextDoc::from_state(s, limits)) {
            Ok(mut doc) => {
                let json = doc.write_json();
                (Some(doc), Ok(Some(json)))
            }
            Err(e) => (None, Err(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_core::crdt::FugueText;

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
        let limits = Limits::default();
        let a = state_with("client-a", "Hello");
        let b = state_with("client-b", "World");
        let mut s = TextState::empty();
        s.merge(&a, 10.0, &limits).expect("merge");
        s.merge(&b, 20.0, &limits).expect("merge");
        let merged = text_of(s.json());
        assert_eq!(merged.len(), 10);
        assert!(merged.contains("Hello") && merged.contains("World"));
        assert_eq!(s.clock(), 20.0);
        // Merging in the other order converges to the same text.
        let mut t = TextState::restored(b, 5.0, &limits);
        t.merge(&a, 1.0, &limits).expect("merge");
        assert_eq!(text_of(t.json()), merged);
        assert_eq!(t.clock(), 5.0);
    }

    #[test]
    fn refused_states_change_nothing() {
        let limits = Limits::default();
        let a = state_with("client-a", "x");
        let mut s = TextState::empty();
        s.merge(&a, 2.0, &limits).expect("merge");
        assert!(s.merge("{\"garbage\":true}", 3.0, &limits).is_err());
        assert_eq!(s.json(), a);
        assert_eq!(s.clock(), 2.0);
    }

    #[test]
    fn an_invalid_stored_state_is_served_until_replaced() {
        let limits = Limits::default();
        let mut s = TextState::restored(String::from("not a crdt"), 1.0, &limits);
        assert_eq!(s.json(), "not a crdt");
        assert!(s.merge("{}", 1.0, &limits).is_err());
        assert_eq!(
            s.json(),
            "not a crdt",
            "a refused state keeps the stored one"
        );
        let a = state_with("client-a", "x");
        s.merge(&a, 2.0, &limits).expect("merge");
        assert_eq!(s.json(), a);
    }
}
