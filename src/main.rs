//! The `synckit` binary: parse the command line and run it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    match synckit::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("synckit: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
