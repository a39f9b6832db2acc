//! Benchmark of the text engine (BENCHMARKS.md, "Text engine"): merging into a
//! document of 100,000 blocks — a full-state merge (a client sending its whole
//! state, as the SDK does) and a one-character edit (a small state holding the new
//! block) — with parse and write costs shown apart, and the SDK's core
//! (`synckit-core`) beside it at the sizes it survives. Not a timed test: run
//! `cargo run --release --example text_bench [blocks…]`.

use std::time::{Duration, Instant};

use synckit::text::{parse, Limits, TextDoc};

/// `n` characters typed one at a time (each its own block whose left origin is
/// the previous one), as the SDK writes them.
fn typing(client: &str, n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 240);
    s.push_str("{\"blocks\":[");
    for clock in 1..=n {
        if clock > 1 {
            s.push(',');
        }
        let id = format!("{{\"client_id\":\"{client}\",\"clock\":{clock},\"offset\":0}}");
        let left = if clock == 1 {
            "null".to_owned()
        } else {
            format!(
                "{{\"client_id\":\"{client}\",\"clock\":{},\"offset\":0}}",
                clock - 1
            )
        };
        s.push_str(&format!("[{id},{{\"id\":{id},\"text\":\"x\",\"left_origin\":{left},\"right_origin\":null,\"deleted\":false}}]"));
    }
    s.push_str(&format!(
        "],\"clock\":{{\"value\":{n}}},\"client_id\":\"{client}\"}}"
    ));
    s
}

/// One character typed by another client in the middle of the document.
fn one_char_edit(client: &str, n: u64) -> String {
    let mid = n / 2;
    format!(
        "{{\"blocks\":[[{{\"client_id\":\"editor\",\"clock\":{c},\"offset\":0}},{{\"id\":{{\"client_id\":\"editor\",\"clock\":{c},\"offset\":0}},\"text\":\"y\",\"left_origin\":{{\"client_id\":\"{client}\",\"clock\":{mid},\"offset\":0}},\"right_origin\":{{\"client_id\":\"{client}\",\"clock\":{r},\"offset\":0}},\"deleted\":false}}]],\"clock\":{{\"value\":{c}}},\"client_id\":\"editor\"}}",
        c = n + 1,
        r = mid + 1
    )
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn engine(n: u64, runs: usize) {
    let limits = Limits::default();
    let full = typing("typist-0123456789", n);
    let edit = one_char_edit("typist-0123456789", n);
    let doc = TextDoc::from_state(parse(&full, &limits).expect("parse"), &limits).expect("valid");
    let parse_full = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(parse(&full, &limits).expect("parse"));
        t.elapsed()
    });
    let load = median(runs, || {
        let state = parse(&full, &limits).expect("parse");
        let t = Instant::now();
        std::hint::black_box(TextDoc::from_state(state, &limits).expect("valid"));
        t.elapsed()
    });
    let merge_full = median(runs, || {
        let mut d = doc.clone();
        let state = parse(&full, &limits).expect("parse");
        let t = Instant::now();
        d.merge(state, &limits).expect("merge");
        t.elapsed()
    });
    let merge_edit = median(runs, || {
        let mut d = doc.clone();
        let t = Instant::now();
        let state = parse(&edit, &limits).expect("parse");
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
        "| engine | {n} | {:.1} MB | {} | {} | {} | {} | {} | {} |",
        full.len() as f64 / 1e6,
        ms(parse_full),
        ms(load),
        ms(merge_full),
        ms(merge_edit),
        ms(write),
        ms(order)
    );
}

fn core(n: u64, runs: usize) {
    use synckit_core::crdt::FugueText;
    let full = typing("typist-0123456789", n);
    let edit = one_char_edit("typist-0123456789", n);
    let doc: FugueText = serde_json::from_str(&full).expect("core parse");
    let parse_full = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(serde_json::from_str::<FugueText>(&full).expect("parse"));
        t.elapsed()
    });
    let merge_full = median(runs, || {
        let mut d = doc.clone();
        let remote: FugueText = serde_json::from_str(&full).expect("parse");
        let t = Instant::now();
        d.merge(&remote).expect("merge");
        t.elapsed()
    });
    let merge_edit = median(runs, || {
        let mut d = doc.clone();
        let t = Instant::now();
        let remote: FugueText = serde_json::from_str(&edit).expect("parse");
        d.merge(&remote).expect("merge");
        t.elapsed()
    });
    let write = median(runs, || {
        let t = Instant::now();
        std::hint::black_box(serde_json::to_string(&doc).expect("write"));
        t.elapsed()
    });
    println!(
        "| synckit-core | {n} | {:.1} MB | {} (incl. order) | — | {} | {} | {} | (in parse) |",
        full.len() as f64 / 1e6,
        ms(parse_full),
        ms(merge_full),
        ms(merge_edit),
        ms(write)
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 2_000, 5_000, 100_000]
    } else {
        sizes
    };
    println!("| impl | blocks | state | parse | load (validate + index) | full-state merge | one-char edit (parse + merge) | write JSON | document order |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        engine(n, if n > 10_000 { 5 } else { 11 });
        // The core is quadratic and recursive: only where it survives.
        if n <= 5_000 {
            core(n, 3);
        }
    }
}
