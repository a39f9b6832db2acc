//! Benchmark of the text engine (BENCHMARKS.md, "Text engine"): merging into
//! documents of 1,000 to 100,000 blocks typed one character at a time — a full
//! state merged, the SDK's whole state resent (unchanged, with one more character
//! typed, with one character deleted), a one-character edit from another client —
//! with parse, load and write costs shown apart, and the SDK's core
//! (`synckit-core`) beside it at the sizes it survives. Not a timed test: run
//! `cargo run --profile dist --example text_bench [blocks…]`, or
//! `… --example text_bench -- --core <blocks>` to run the core alone on a tokio
//! worker's 2 MiB stack (where it stops).

// Test and benchmark code: failing loudly is the point (Cargo.toml [lints]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::time::{Duration, Instant};

use synckit::text::{parse, Limits, TextDoc};

#[path = "../tests/support/text_gen.rs"]
mod text_gen;
use text_gen::{one_char_edit, typing, typing_with_deleted};

const CLIENT: &str = "typist-0123456789";

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn load(json: &str, limits: &Limits) -> TextDoc {
    let mut doc = TextDoc::from_state(parse(json, limits).expect("parse"), limits).expect("valid");
    doc.write_json();
    doc
}

/// The engine's passes, each on its own.
fn engine_parts(n: u64, runs: usize) {
    let limits = Limits::default();
    let full = typing(CLIENT, n);
    let doc = load(&full, &limits);
    let parse_full = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(parse(&full, &limits).expect("parse"));
        t.elapsed()
    });
    let from_state = median(runs, || {
        let state = parse(&full, &limits).expect("parse");
        let t = Instant::now();
        std::hint::black_box(TextDoc::from_state(state, &limits).expect("valid"));
        t.elapsed()
    });
    let merge_parsed = median(runs, || {
        let mut d = doc.clone();
        let state = parse(&full, &limits).expect("parse");
        let t = Instant::now();
        d.merge(state, &limits).expect("merge");
        t.elapsed()
    });
    let write = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(doc.to_json());
        t.elapsed()
    });
    let order = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(doc.text());
        t.elapsed()
    });
    println!(
        "| {n} | {:.1} MB | {} | {} | {} | {} | {} |",
        full.len() as f64 / 1e6,
        ms(parse_full),
        ms(from_state),
        ms(merge_parsed),
        ms(write),
        ms(order)
    );
}

/// What the server does with an incoming state (`sync::text::merge_into`):
/// parse and merge it from its JSON, write the new state when it changed.
fn server_path(n: u64, runs: usize) {
    let limits = Limits::default();
    let full = typing(CLIENT, n);
    let merge_and_write = |doc: &mut TextDoc, json: &str| {
        let t = Instant::now();
        let summary = doc.merge_json(json, &limits).expect("merge");
        if summary.changed {
            std::hint::black_box(doc.write_json());
        }
        t.elapsed()
    };
    // Into an empty document: the first client's whole state.
    let first = median(runs, || {
        let t = Instant::now();
        let mut d =
            TextDoc::from_state(parse(&full, &limits).expect("parse"), &limits).expect("valid");
        std::hint::black_box(d.write_json());
        t.elapsed()
    });
    let doc = load(&full, &limits);
    // The same whole state resent (a reconnecting client).
    let mut d = doc.clone();
    let unchanged = median(runs, || merge_and_write(&mut d, &full));
    // The typist's whole state after each further character (what the SDK sends).
    let mut d = doc.clone();
    let mut k = n;
    let typed = median(runs, || {
        k += 1;
        let next = typing(CLIENT, k);
        merge_and_write(&mut d, &next)
    });
    // The typist's whole state with one more character deleted each time.
    let mut d = doc.clone();
    let mut gone = Vec::new();
    let deleted = median(runs, || {
        gone.push(n / 3 + gone.len() as u64 * 7);
        let next = typing_with_deleted(CLIENT, n, &gone);
        merge_and_write(&mut d, &next)
    });
    // Another client's one-character edit (its state holds only that block).
    let mut d = doc.clone();
    let mut c = n;
    let edit = median(runs, || {
        c += 1;
        let json = one_char_edit("editor", c, CLIENT, (c * 7919) % (n - 1) + 1);
        let t = Instant::now();
        let summary = d.merge_json(&json, &limits).expect("merge");
        let merged = t.elapsed();
        assert!(summary.changed);
        merged
    });
    let write_after_edit = median(runs, || {
        c += 1;
        let json = one_char_edit("editor", c, CLIENT, (c * 7919) % (n - 1) + 1);
        d.merge_json(&json, &limits).expect("merge");
        let t = Instant::now();
        std::hint::black_box(d.write_json());
        t.elapsed()
    });
    println!(
        "| {n} | {} | {} | {} | {} | {} | {} |",
        ms(first),
        ms(unchanged),
        ms(typed),
        ms(deleted),
        ms(edit),
        ms(write_after_edit)
    );
}

/// The SDK's core on the same states (it reorders on load: its parse includes
/// the document order).
fn core(n: u64, runs: usize) {
    use synckit_core::crdt::FugueText;
    let full = typing(CLIENT, n);
    let plus_one = typing(CLIENT, n + 1);
    let edit = one_char_edit("editor", n + 1, CLIENT, n / 2);
    let doc: FugueText = serde_json::from_str(&full).expect("core parse");
    let parse_full = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(serde_json::from_str::<FugueText>(&full).expect("parse"));
        t.elapsed()
    });
    let merge = |json: &str| {
        median(runs, || {
            let mut d = doc.clone();
            let t = Instant::now();
            let remote: FugueText = serde_json::from_str(json).expect("parse");
            d.merge(&remote).expect("merge");
            std::hint::black_box(serde_json::to_string(&d).expect("write"));
            t.elapsed()
        })
    };
    let (unchanged, typed, edited) = (merge(&full), merge(&plus_one), merge(&edit));
    println!(
        "| {n} | {} | {} | {} | {} |",
        ms(parse_full),
        ms(unchanged),
        ms(typed),
        ms(edited)
    );
}

/// One scenario once, for instruction counts (`valgrind --tool=callgrind
/// --toggle-collect='*merge_json*' … -- --case typed 100000`): `same`, `typed`,
/// `deleted` (the whole state resent), `edit` (another client's one-character
/// state), each merged from JSON and written.
fn case(name: &str, n: u64) {
    let limits = Limits::default();
    let mut doc = load(&typing(CLIENT, n), &limits);
    let json = match name {
        "same" => typing(CLIENT, n),
        "typed" => typing(CLIENT, n + 1),
        "deleted" => typing_with_deleted(CLIENT, n, &[n / 3]),
        "edit" => one_char_edit("editor", n + 1, CLIENT, n / 2),
        _ => panic!("cases: same, typed, deleted, edit"),
    };
    let t = Instant::now();
    let summary = doc.merge_json(&json, &limits).expect("merge");
    let merged = t.elapsed();
    let t = Instant::now();
    let written = summary.changed.then(|| doc.write_json().len());
    println!(
        "{name} {n}: merge_json {}, write_json {} ({written:?} bytes)",
        ms(merged),
        ms(t.elapsed())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--case") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
        case(args.get(1).map_or("typed", String::as_str), n);
        return;
    }
    if args.first().map(String::as_str) == Some("--core") {
        let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(6_000);
        println!(
            "| blocks | parse (+ order) | same state resent | + 1 char typed | one-char edit |"
        );
        println!("|---|---|---|---|---|");
        // A tokio worker's stack: where the server ran the core.
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || core(n, 3))
            .expect("thread");
        worker.join().expect("core run");
        return;
    }
    let sizes: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (sizes, core_sizes) = if sizes.is_empty() {
        (vec![1_000, 10_000, 100_000], vec![1_000, 2_000, 5_000])
    } else {
        let core_sizes = sizes.iter().copied().filter(|&n| n <= 5_000).collect();
        (sizes, core_sizes)
    };
    let runs = |n: u64| if n > 10_000 { 7 } else { 21 };
    println!("Engine passes (a document typed one character at a time):\n");
    println!("| blocks | state | parse | load (validate + index) | merge the same state, parsed | write JSON (in full) | document order |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        engine_parts(n, runs(n));
    }
    println!("\nServer path (merge from JSON, write the new state when it changed):\n");
    println!("| blocks | first state (parse, load, write) | same state resent | resent + 1 char typed | resent + 1 char deleted | one-char edit, merge | then write |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &sizes {
        server_path(n, runs(n));
    }
    println!("\nsynckit-core (parse + merge + write, on the main thread):\n");
    println!("| blocks | parse (+ order) | same state resent | + 1 char typed | one-char edit |");
    println!("|---|---|---|---|---|");
    // The core is quadratic and recursive: only where it survives.
    for &n in &core_sizes {
        core(n, 3);
    }
}
