//! The `synckit` binary: parse the command line and run it.
#![forbid(unsafe_code)]

use std::io::Write;

fn main() -> std::process::ExitCode {
    let code = match synckit::cli::main() {
        Ok(code) => code,
        Err(e) => {
            // Written directly (the logger may not be installed), and never a panic
            // when stderr is closed.
            let _ = writeln!(std::io::stderr(), "synckit: error: {e:#}");
            synckit::exit::code_of(&e)
        }
    };
    // The last log lines (the drain's "stopped") are still in the logger's queue.
    synckit::telemetry::flush(std::time::Duration::from_secs(1));
    code
}
