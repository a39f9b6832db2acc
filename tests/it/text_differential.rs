//! Differential tests of the text engine against the SDK's own core (`synckit-core`,
//! what the SDK runs as WASM): random multi-client edit histories — inserts,
//! deletes (which split blocks), concurrent edits, partial and repeated merges, 2–5
//! replicas — produced with the core as the SDK would, then merged by both. The
//! engine must give the core's visible text, write the core's state byte for byte,
//! and the core must read the engine's state back to the same text.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synckit::text::{parse, Limits, TextDoc};
use synckit_core::crdt::FugueText;

const NAMES: [&str; 6] = ["alice", "bob", "Carol", "dave-2", "eve", "z"];
/// Mostly ASCII: the core mixes byte and char positions in its rope, so non-ASCII
/// text before an edit makes it panic (those histories are skipped).
const PIECES: [&str; 12] = [
    "a", "b", "c", "XY", "de", " ", "\n", "q", "r", "s", "é", "👍",
];

fn json_of(t: &FugueText) -> String {
    serde_json::to_string(t).expect("serialize")
}

fn load(json: &str) -> FugueText {
    serde_json::from_str(json).expect("the core reads the state")
}

/// One random history: the replicas' final states (as JSON) plus states captured
/// along the way (older versions, as a client reconnecting with a stale copy sends).
fn history(rng: &mut StdRng) -> Vec<String> {
    let n = rng.gen_range(2..=5);
    let mut offset = rng.gen_range(0..NAMES.len());
    let mut replicas: Vec<FugueText> = (0..n)
        .map(|_| {
            offset = (offset + 1) % NAMES.len();
            FugueText::new(NAMES[offset].to_owned())
        })
        .collect();
    let mut captured = Vec::new();
    for _ in 0..rng.gen_range(1..25) {
        let r = rng.gen_range(0..n);
        match rng.gen_range(0..10) {
            0..=4 => {
                let len = replicas[r].len();
                let pos = rng.gen_range(0..=len);
                let mut s = String::new();
                for _ in 0..rng.gen_range(1..=3) {
                    // Non-ASCII (the last two pieces) one time in twenty.
                    let ascii = PIECES.len() - 2;
                    let k = if rng.gen_bool(0.05) {
                        rng.gen_range(ascii..PIECES.len())
                    } else {
                        rng.gen_range(0..ascii)
                    };
                    s.push_str(PIECES[k]);
                }
                replicas[r].insert(pos, &s).expect("insert");
            }
            5..=6 => {
                let len = replicas[r].len();
                if len > 0 {
                    let pos = rng.gen_range(0..len);
                    let del = rng.gen_range(1..=(len - pos).min(4));
                    replicas[r].delete(pos, del).expect("delete");
                }
            }
            _ => {
                // The SDK merges what it receives: a state through JSON.
                let s = rng.gen_range(0..n);
                if s != r {
                    let remote = load(&json_of(&replicas[s]));
                    replicas[r].merge(&remote).expect("merge");
                    // And reloads: the in-memory text follows the document order.
                    replicas[r] = load(&json_of(&replicas[r]));
                }
            }
        }
        if rng.gen_bool(0.15) {
            captured.push(json_of(&replicas[rng.gen_range(0..n)]));
        }
    }
    captured.extend(replicas.iter().map(json_of));
    captured
}

/// Merge `states` in order, as the server does (the first is adopted), with the core.
fn core_merge(states: &[String]) -> Option<(String, String)> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut doc = load(&states[0]);
        for s in &states[1..] {
            doc.merge(&load(s)).expect("merge");
        }
        // Reload: what a client reading the state sees.
        let json = json_of(&doc);
        (load(&json).to_string(), json)
    }))
    .ok()
}

fn engine_merge(states: &[String]) -> (String, String) {
    let limits = Limits::default();
    let first = parse(&states[0], &limits).expect("the engine accepts an SDK state");
    let mut doc = TextDoc::from_state(first, &limits).expect("valid");
    for s in &states[1..] {
        let state = parse(s, &limits).expect("the engine accepts an SDK state");
        doc.merge(state, &limits)
            .expect("the engine merges SDK states");
    }
    (doc.text(), doc.to_json())
}

/// The same merges as the server runs them: each state merged from its JSON
/// (`merge_json`, which compares a resent state with what the document last
/// wrote) and the state written after each change (`write_json`, which extends
/// what it last wrote when it can).
fn engine_merge_json(states: &[String]) -> (String, String) {
    let limits = Limits::default();
    let first = parse(&states[0], &limits).expect("the engine accepts an SDK state");
    let mut doc = TextDoc::from_state(first, &limits).expect("valid");
    doc.write_json();
    for s in &states[1..] {
        let summary = doc
            .merge_json(s, &limits)
            .expect("the engine merges SDK states");
        if summary.changed {
            doc.write_json();
        }
    }
    (doc.text(), doc.write_json().to_string())
}

#[test]
fn merges_like_the_sdk_core_on_random_histories() {
    let cases = 2000;
    let mut compared = 0;
    let mut failures = Vec::new();
    // The core's own panics are expected and caught: keep them off the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for seed in 0..cases {
        let mut rng = StdRng::seed_from_u64(seed);
        // The core panics on some histories of its own (its rope and its blocks
        // disagree): those are skipped, the SDK could not produce them either.
        let Ok(states) = catch_unwind(AssertUnwindSafe(|| history(&mut rng))) else {
            continue;
        };
        // A random sequence of those states, with repeats (a client resending).
        let mut seq: Vec<String> = Vec::new();
        for _ in 0..rng.gen_range(2..=6) {
            seq.push(states[rng.gen_range(0..states.len())].clone());
        }
        let Some((core_text, core_json)) = core_merge(&seq) else {
            continue; // the core itself failed on this history
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (text, json) = engine_merge(&seq);
            if text != core_text {
                return Err(format!("visible text {text:?}, the core's {core_text:?}"));
            }
            if json != core_json {
                return Err(format!("written state differs: {json}\ncore: {core_json}"));
            }
            if load(&json).to_string() != core_text {
                return Err("the core reads our state to another text".into());
            }
            let (text, json) = engine_merge_json(&seq);
            if text != core_text || json != core_json {
                return Err(format!(
                    "merge_json differs: {text:?} {json}\ncore: {core_json}"
                ));
            }
            Ok(())
        }));
        match outcome {
            Ok(Ok(())) => compared += 1,
            Ok(Err(e)) => failures.push(format!("seed {seed}: {e}\nstates: {seq:?}")),
            Err(_) => failures.push(format!("seed {seed}: the engine panicked\nstates: {seq:?}")),
        }
    }
    std::panic::set_hook(hook);
    assert!(
        failures.is_empty(),
        "{} failures, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(compared > cases * 3 / 4, "only {compared} cases compared");
}
