//! Unit tests of the text engine, with the SDK's core (`synckit-core`) as the oracle.

use serde_json::json;
use synckit_core::crdt::FugueText;

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn core_state(client: &str, edits: &[(usize, &str)]) -> FugueText {
    let mut t = FugueText::new(client.to_owned());
    for (pos, text) in edits {
        t.insert(*pos, text).expect("insert");
    }
    t
}

fn json_of(t: &FugueText) -> String {
    serde_json::to_string(t).expect("serialize")
}

fn doc(json: &str) -> TextDoc {
    TextDoc::from_state(parse(json, &limits()).expect("parse"), &limits()).expect("valid")
}

fn refused(json: &str) -> TextError {
    match parse(json, &limits()) {
        Err(e) => e,
        Ok(state) => TextDoc::from_state(state, &limits()).expect_err("refused"),
    }
}

#[test]
fn writes_what_the_core_writes() {
    let mut t = core_state("a", &[(0, "Hello"), (5, " world"), (0, "\"quoted\"\n")]);
    t.delete(2, 3).expect("delete");
    let json = json_of(&t);
    let d = doc(&json);
    assert_eq!(d.to_json(), json);
    assert_eq!(d.text(), t.to_string());
}

#[test]
fn merges_like_the_core() {
    let a = core_state("client-a", &[(0, "Hello"), (5, "!")]);
    let mut b = core_state("client-b", &[(0, "World")]);
    b.delete(1, 2).expect("delete");
    let mut expected = a.clone();
    expected.merge(&b).expect("merge");
    let mut d = doc(&json_of(&a));
    d.merge(parse(&json_of(&b), &limits()).expect("parse"), &limits())
        .expect("merge");
    assert_eq!(d.text(), expected.to_string());
    assert_eq!(d.to_json(), json_of(&expected));
}

#[test]
fn split_blocks_are_normalised_and_deletions_propagate() {
    // b deletes the middle of a's block: the merge must split a's copy to match.
    let a = core_state("a", &[(0, "abcdef")]);
    let mut b: FugueText = serde_json::from_str(&json_of(&a)).expect("load");
    b.delete(2, 2).expect("delete");
    let mut expected = a.clone();
    expected.merge(&b).expect("merge");
    let mut d = doc(&json_of(&a));
    d.merge(parse(&json_of(&b), &limits()).expect("parse"), &limits())
        .expect("merge");
    assert_eq!(d.text(), "abef");
    assert_eq!(d.to_json(), json_of(&expected));
    // And the other way round.
    let mut expected = b.clone();
    expected.merge(&a).expect("merge");
    let mut d = doc(&json_of(&b));
    d.merge(parse(&json_of(&a), &limits()).expect("parse"), &limits())
        .expect("merge");
    assert_eq!(d.to_json(), json_of(&expected));
}

#[test]
fn merge_is_idempotent_and_unchanged_states_say_so() {
    let a = json_of(&core_state("a", &[(0, "abc")]));
    let mut d = doc(&a);
    let s = d.merge(parse(&a, &limits()).expect("parse"), &limits());
    assert_eq!(s, Ok(MergeSummary::default()));
    assert_eq!(d.to_json(), a);
}

fn block(client: &str, clock: u64, text: &str, left: Value, right: Value) -> Value {
    let id = json!({"client_id": client, "clock": clock, "offset": 0});
    json!([id, {"id": id, "text": text, "left_origin": left, "right_origin": right, "deleted": false}])
}

use serde_json::Value;

fn origin(client: &str, clock: u64) -> Value {
    json!({"client_id": client, "clock": clock, "offset": 0})
}

fn state(blocks: Vec<Value>) -> String {
    json!({"blocks": blocks, "clock": {"value": 2}, "client_id": "evil"}).to_string()
}

/// The hostile state of the issue: p's left origin is x, x's is p, and z's
/// origins point into that cycle. It hung the server (an ancestor walk with no end).
#[test]
fn an_origin_cycle_is_refused() {
    let s = state(vec![
        block("p", 1, "P", origin("x", 1), Value::Null),
        block("r", 1, "R", Value::Null, Value::Null),
        block("x", 1, "X", origin("p", 1), Value::Null),
        block("z", 2, "Z", origin("r", 1), origin("x", 1)),
    ]);
    let e = refused(&s);
    assert!(matches!(e, TextError::NotCausal { .. }), "{e}");
    assert!(e.to_string().contains("cycle"), "{e}");
}

#[test]
fn hostile_states_are_refused_with_their_reason() {
    let cases: Vec<(String, &str)> = vec![
        (
            state(vec![block("a", 1, "A", origin("nobody", 1), Value::Null)]),
            "names no block",
        ),
        (
            state(vec![block("a", 3, "ABC", origin("a", 2), Value::Null)]),
            "the block itself",
        ),
        (
            state(vec![
                block("a", 1, "A", Value::Null, Value::Null),
                block("a", 1, "A", Value::Null, Value::Null),
            ]),
            "duplicate id",
        ),
        (
            state(vec![
                block("a", 3, "ABC", Value::Null, Value::Null),
                block("a", 4, "DE", Value::Null, Value::Null),
            ]),
            "overlap",
        ),
        (
            state(vec![block("a", 1 << 53, "A", Value::Null, Value::Null)]),
            "above 2^53-1",
        ),
        (
            state(vec![block("a", 2, "ABC", Value::Null, Value::Null)]),
            "inconsistent",
        ),
        (
            state(vec![block("a", 2, "", Value::Null, Value::Null)]),
            "empty text",
        ),
        (
            state(vec![block("a", 5, "A", origin("a", 9), Value::Null)]),
            "names no block",
        ),
        (
            state(vec![block("a", 5, "A", origin("ghost", 5), Value::Null)]),
            "names no block",
        ),
        ("{\"blocks\":3}".to_owned(), "not a SyncText state"),
        ("not json".to_owned(), "not a SyncText state"),
    ];
    for (json, reason) in cases {
        let e = refused(&json);
        assert!(e.to_string().contains(reason), "{json}: {e}");
    }
    let mismatch = json!({"blocks": [[origin("a", 1), {"id": origin("b", 1), "text": "A"}]],
        "clock": {"value": 1}, "client_id": "a"});
    assert!(matches!(
        refused(&mismatch.to_string()),
        TextError::KeyMismatch { .. }
    ));
}

/// The SDK's core writes origins naming a clock of its own client that no block
/// holds (its Lamport clock jumped past it): ignored when ordering, as it does.
#[test]
fn an_origin_in_a_clock_gap_is_ignored_like_the_core_does() {
    let s = state(vec![
        block("a", 1, "A", Value::Null, Value::Null),
        block("a", 5, "B", origin("a", 1), origin("a", 3)),
    ]);
    let d = doc(&s);
    let core: FugueText = serde_json::from_str(&s).expect("core reads it");
    assert_eq!(d.text(), core.to_string());
}

#[test]
fn a_forward_origin_is_refused_but_a_later_block_may_name_an_earlier_one() {
    let ok = state(vec![
        block("a", 1, "A", Value::Null, Value::Null),
        block("b", 2, "B", origin("a", 1), Value::Null),
    ]);
    assert_eq!(doc(&ok).text(), "AB");
    let forward = state(vec![
        block("a", 1, "A", origin("b", 2), Value::Null),
        block("b", 2, "B", Value::Null, Value::Null),
    ]);
    assert!(matches!(refused(&forward), TextError::NotCausal { .. }));
}

#[test]
fn limits_are_enforced_before_anything_is_applied() {
    let json = json_of(&core_state("a", &[(0, "a"), (1, "b"), (2, "c")]));
    let tight = Limits {
        max_blocks: 2,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&json, &tight),
        Err(TextError::TooManyBlocks { .. })
    ));
    let small = Limits {
        max_state_bytes: 10,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&json, &small),
        Err(TextError::TooLarge { .. })
    ));
    // Two states under the cap each, over it merged: refused, document unchanged.
    let mut d =
        TextDoc::from_state(parse(&json, &limits()).expect("parse"), &limits()).expect("valid");
    let other = json_of(&core_state("b", &[(0, "x"), (1, "y")]));
    let cap = Limits {
        max_blocks: 4,
        ..Limits::default()
    };
    let e = d
        .merge(parse(&other, &cap).expect("parse"), &cap)
        .expect_err("over the cap");
    assert!(matches!(e, TextError::TooManyBlocks { blocks: 5, .. }));
    assert_eq!(d.to_json(), json);
}

/// One character at a time: each block's left origin is the previous one. The
/// core's recursive walk overflowed the stack near 6,000; the engine's is a loop.
#[test]
fn a_deep_typing_chain_is_ordered_without_recursion() {
    let n = 10_000u64;
    let mut blocks = Vec::with_capacity(n as usize);
    for k in 1..=n {
        let left = if k == 1 {
            Value::Null
        } else {
            origin("typist", k - 1)
        };
        blocks.push(block("typist", k, "x", left, Value::Null));
    }
    let json = json!({"blocks": blocks, "clock": {"value": n}, "client_id": "typist"}).to_string();
    let d = doc(&json);
    assert_eq!(d.text().len(), n as usize);
    let same = serde_json::from_str::<Value>(&d.to_json()).ok() == serde_json::from_str(&json).ok();
    assert!(same, "written state differs");
}

#[test]
fn graphemes_count_as_one_clock() {
    let t = core_state("a", &[(0, "e\u{301}👨‍👩‍👧x\r\n")]);
    let d = doc(&json_of(&t));
    assert_eq!(d.state.blocks[0].len, 4);
    assert_eq!(d.text(), t.to_string());
}

#[path = "../../tests/support/text_gen.rs"]
mod text_gen;

/// `json` merged as `merge_json` does it and as `parse` + `merge` do: both must
/// give the same result (or the same refusal), and a refusal changes nothing.
fn both_ways(d: &mut TextDoc, json: &str, limits: &Limits) -> Result<String, TextError> {
    let mut general = d.clone();
    let expected = parse(json, limits)
        .and_then(|s| general.merge(s, limits))
        .map(|_| general.to_json());
    let before = d.write_json();
    let got = d
        .merge_json(json, limits)
        .map(|_| d.write_json().to_string());
    assert_eq!(got, expected, "merge_json and parse + merge differ");
    if got.is_err() {
        assert!(std::sync::Arc::ptr_eq(&before, &d.write_json()));
    }
    got
}

#[test]
fn a_resent_state_is_read_by_comparing_bytes_with_the_same_outcome() {
    use std::sync::Arc;
    let l = limits();
    let mut d = doc(&text_gen::typing("t", 100));
    let written = d.write_json();
    assert_eq!(*written, text_gen::typing("t", 100));
    // Resent unchanged: nothing changes, the JSON is not written again.
    let s = d
        .merge_json(&text_gen::typing("t", 100), &l)
        .expect("merge");
    assert!(!s.changed);
    assert!(Arc::ptr_eq(&written, &d.write_json()));
    // The fast path applies to what SDK clients resend.
    for json in [
        text_gen::typing("t", 101),
        text_gen::typing_with_deleted("t", 100, &[50]),
        text_gen::typing("t", 40),
    ] {
        let w = d.written.as_ref().expect("written");
        assert!(parse::parse_resent(&json, w, &d.state, &l).is_some());
    }
    // One more character typed: the JSON is extended, exactly the SDK's.
    both_ways(&mut d, &text_gen::typing("t", 101), &l).expect("merge");
    assert_eq!(*d.write_json(), text_gen::typing("t", 101));
    // A character deleted, a stale copy, another client's edit, reordered blocks.
    let json = text_gen::typing_with_deleted("t", 101, &[50, 51]);
    both_ways(&mut d, &json, &l).expect("merge");
    assert_eq!(*d.write_json(), json);
    both_ways(&mut d, &text_gen::typing("t", 40), &l).expect("merge");
    both_ways(&mut d, &text_gen::one_char_edit("e", 102, "t", 70), &l).expect("merge");
    let mut blocks: Vec<Value> = serde_json::from_str::<Value>(&d.to_json()).expect("json")
        ["blocks"]
        .as_array()
        .expect("blocks")
        .clone();
    blocks.reverse();
    let reversed = json!({"blocks": blocks, "clock": {"value": 1}, "client_id": "r"});
    assert_eq!(
        both_ways(&mut d, &reversed.to_string(), &l).map(|_| ()),
        Ok(())
    );
    assert_eq!(d.text().len(), 100);
}

#[test]
fn a_resent_state_is_checked_as_a_whole() {
    let base = text_gen::typing("t", 100);
    let blocks_end = base.rfind("],\"clock\"").expect("trailer");
    let with = |element: &str| format!("{},{element}{}", &base[..blocks_end], &base[blocks_end..]);
    let el = |v: Value| v.to_string();
    let cases: Vec<(String, Limits)> = vec![
        // A duplicate of a block it also holds, and a block overlapping one.
        (
            with(&el(block("t", 50, "x", origin("t", 49), Value::Null))),
            limits(),
        ),
        (
            with(&el(block("t", 51, "ab", origin("t", 48), Value::Null))),
            limits(),
        ),
        // Origins naming a later clock no block holds, and the block itself.
        (
            with(&el(block("u", 101, "x", origin("t", 300), Value::Null))),
            limits(),
        ),
        (
            with(&el(block("u", 101, "xy", origin("u", 100), Value::Null))),
            limits(),
        ),
        // A huge clock, in a block and in the trailer.
        (
            with(&el(block("u", 1 << 60, "x", Value::Null, Value::Null))),
            limits(),
        ),
        (
            base.replace("\"value\":100", "\"value\":1152921504606846976"),
            limits(),
        ),
        // Past the block cap, malformed, a duplicate field after the blocks.
        (
            text_gen::typing("t", 101),
            Limits {
                max_blocks: 100,
                ..limits()
            },
        ),
        (format!("{base} x"), limits()),
        (
            base.replace("\"client_id\":\"t\"}", "\"client_id\":\"t\",\"blocks\":[]}"),
            limits(),
        ),
        (with("[1,2]"), limits()),
        (with("{}"), limits()),
    ];
    for (json, l) in cases {
        let mut d = doc(&base);
        let e = both_ways(&mut d, &json, &l).expect_err("refused");
        assert_eq!(d.to_json(), base, "{e}");
    }
}

#[test]
fn write_json_writes_only_what_changed_and_equals_a_full_write() {
    let a = core_state("a", &[(0, "Hello"), (5, " world")]);
    let mut b: FugueText = serde_json::from_str(&json_of(&a)).expect("load");
    // Splits both blocks, and inserts in the middle of the id order.
    b.delete(2, 5).expect("delete");
    b.insert(1, "ZZ").expect("insert");
    let c = core_state("c", &[(0, "abc")]);
    let mut d = doc(&json_of(&a));
    d.write_json();
    for s in [json_of(&b), json_of(&c), json_of(&a), json_of(&b)] {
        both_ways(&mut d, &s, &limits()).expect("merge");
        assert_eq!(*d.write_json(), d.to_json());
    }
}

#[test]
fn a_large_state_is_rewritten_into_an_earlier_buffer_once_no_reader_holds_it() {
    let l = limits();
    let mut d = doc(&text_gen::typing("t", 2000));
    let first = d.write_json();
    assert!(first.capacity() >= 256 * 1024, "large enough to be kept");
    let (first_at, first_capacity) = (first.as_ptr() as usize, first.capacity());
    drop(first);
    d.merge_json(&text_gen::typing("t", 2001), &l)
        .expect("typed");
    let second = d.write_json();
    assert_ne!(second.as_ptr() as usize, first_at);
    d.merge_json(&text_gen::typing("t", 2002), &l)
        .expect("typed");
    let third = d.write_json();
    // The very buffer: its address and its capacity (a fresh one would be sized
    // for this state).
    assert_eq!(third.as_ptr() as usize, first_at, "the first buffer reused");
    assert_eq!(third.capacity(), first_capacity);
    assert_eq!(*third, text_gen::typing("t", 2002));
    // `second` is still held (a reader, the write queue): never written into.
    d.merge_json(&text_gen::typing("t", 2003), &l)
        .expect("typed");
    let fourth = d.write_json();
    assert_ne!(fourth.as_ptr(), second.as_ptr());
    assert_eq!(*second, text_gen::typing("t", 2001));
    assert_eq!(*fourth, text_gen::typing("t", 2003));
}
