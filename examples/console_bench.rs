//! `console_bench`: how long the console's per-refresh PostgreSQL queries take on a
//! big database (BENCHMARKS.md, "Console"). Seed one first (see BENCHMARKS.md), then:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/console_bench \
//!     cargo run --release --example console_bench -- 200
//! ```
//!
//! Prints p50/p95/max per query over N refreshes (default 100), and the whole
//! refresh (`poll`), unfiltered and filtered.

// Test and benchmark code: failing loudly is the point (Cargo.toml [lints]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::time::Instant;

use synckit::ConsoleDatabase;

fn summary(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<28} p50 {:>7.2} ms   p95 {:>7.2} ms   max {:>7.2} ms",
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

macro_rules! time {
    ($n:expr, $body:expr) => {{
        let mut samples = Vec::with_capacity($n);
        for _ in 0..$n {
            let started = Instant::now();
            let _ = $body;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    }};
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL".to_owned())?;
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let db = ConsoleDatabase::new(&url)?;
    // Warm the pool and the caches, as a running console has.
    let warm = db.poll("").await;
    println!(
        "documents ≈{}, sessions ≈{}, page sizes: 200 documents, 200 sessions, 200 awareness, 50 runs",
        warm.documents_total, warm.sessions_total
    );
    summary("refresh (poll, no filter)", time!(n, db.poll("").await));
    summary(
        "refresh (poll, /doc-4242)",
        time!(n, db.poll("doc-4242").await),
    );
    summary("documents page", time!(n, db.documents("").await));
    summary(
        "documents page, filtered",
        time!(n, db.documents("doc-4242").await),
    );
    summary(
        "documents, no match",
        time!(n, db.documents("no-such-doc").await),
    );
    summary("sessions page", time!(n, db.sessions().await));
    summary("awareness page", time!(n, db.awareness().await));
    summary("maintenance runs", time!(n, db.runs().await));
    summary("detail history", time!(n, db.history("doc-4242").await));
    summary("detail stored state", time!(n, db.stored("doc-4242").await));
    db.close().await;
    Ok(())
}
