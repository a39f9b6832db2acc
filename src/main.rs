//! The `synckit` binary: parse the command line and run it.
#![forbid(unsafe_code)]

use std::io::Write;

/// jemalloc rather than glibc malloc: the server allocates and frees small buffers per
/// frame on every worker thread, where glibc's arena locks and consolidation cost about a
/// fifth of its CPU (BENCHMARKS.md "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let code = match synckit::run() {
        Ok(code) => code,
        Err(e) => {
            // Written directly (the logger may not be installed), and never a panic
            // when stderr is closed.
            let _ = writeln!(std::io::stderr(), "synckit: error: {e:#}");
            synckit::exit_code(&e)
        }
    };
    // The last log lines (the drain's "stopped") are still in the logger's queue.
    synckit::flush_logs(std::time::Duration::from_secs(1));
    code
}
