//! Fuzz target: the text engine's parser and merge on hostile input. The input is
//! two states separated by a NUL byte (never part of valid JSON text). Whatever
//! they hold, parsing and merging must end (no recursion, no cycles followed) and
//! never panic; the server's path (`merge_json`, `write_json`) must give what a full
//! parse and merge give; an accepted state must survive a write/read round trip
//! unchanged, and merging a document's own state into it must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synckit::text::{parse, Limits, TextDoc};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_blocks: 2_000,
        max_state_bytes: 256 * 1024,
    };
    let mut parts = data.splitn(2, |&b| b == 0);
    let Some(Ok(first)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let second = parts.next().and_then(|b| std::str::from_utf8(b).ok());
    let Ok(state) = parse(first, &limits) else {
        return;
    };
    let Ok(mut doc) = TextDoc::from_state(state, &limits) else {
        return;
    };
    if let Some(second) = second {
        // The server's path (merge_json: a resent state read by comparing bytes
        // with what the document last wrote; write_json: only what changed written
        // in) must do exactly what parsing and merging in full does.
        let mut general = doc.clone();
        let expected = parse(second, &limits)
            .and_then(|s| general.merge(s, &limits))
            .map(|_| general.to_json());
        doc.write_json();
        let got = doc
            .merge_json(second, &limits)
            .map(|_| doc.write_json().to_string());
        assert_eq!(got, expected, "merge_json differs from parse + merge");
    }
    let _ = doc.text();
    let json = doc.to_json();
    let again = parse(&json, &limits)
        .and_then(|s| TextDoc::from_state(s, &limits))
        .expect("an accepted document reads back");
    assert_eq!(again.to_json(), json, "write/read round trip");
    let own = parse(&json, &limits).expect("own state parses");
    let summary = doc.merge(own, &limits).expect("own state merges");
    assert!(!summary.changed, "merging a document's own state changed it");
    assert_eq!(doc.to_json(), json);
});
