//! Writes the man pages into the directory given as the only argument: `synckit.1`
//! and one page per subcommand (`synckit-serve.1`, `synckit-check-config.1`, …),
//! generated from the same clap definitions as `--help`, so they cannot drift.
//! Packaging runs it before `cargo deb` (which gzips pages under /usr/share/man):
//!
//!     cargo run --example manpage -- target/man

// Test and benchmark code: failing loudly is the point (Cargo.toml [lints]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Sections clap does not know about, appended to `synckit.1`: what an operator
/// looks up in a man page rather than in `--help`.
const SYNCKIT_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/synckit/synckit.env\fR
Environment of \fBsynckit.service\fR and \fBsynckit\-cleanup.service\fR (root only, 0600).
Every variable is documented in it and in \fBsynckit\-serve\fR(1).
.TP
\fI/lib/systemd/system/synckit.service\fR
The unit: \fBsynckit check\-config \-\-preflight\fR as ExecStartPre (its report in the journal), then \fBsynckit serve\fR (Type=notify); production by default, exit 2 not retried.
.TP
\fI/lib/systemd/system/synckit\-cleanup.timer\fR
Optional daily \fBsynckit cleanup\fR, an alternative to the scheduler built into \fBserve\fR.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Drain gracefully within SHUTDOWN_TIMEOUT_MS; a second signal exits at once.
.TP
\fBSIGHUP\fR
Logged and ignored: configuration reload is not supported. Restart to apply new settings.
.SH SEE ALSO
\fBsynckit\-serve\fR(1), \fBsynckit\-check\-config\fR(1), \fBsynckit\-migrate\fR(1),
\fBsynckit\-cleanup\fR(1), \fBsystemctl\fR(1)
"#;

/// Appended to `synckit-check-config.1`.
const CHECK_CONFIG_EXTRA: &str = r#".SH EXIT STATUS
When several checks fail, the smallest code is returned.
.TP
\fB0\fR
Configuration valid; every configured backend answered; schema current, or only
pending migrations that \fBserve\fR applies at start (SYNCKIT_AUTO_MIGRATE=true).
.TP
\fB2\fR
Invalid configuration (also a flag or environment value clap rejects).
.TP
\fB3\fR
PostgreSQL unreachable (refused, timed out, authentication failed, no such database).
.TP
\fB4\fR
Schema not current with SYNCKIT_AUTO_MIGRATE=false, or a schema migrations cannot fix.
.TP
\fB5\fR
Redis unreachable (REDIS_URL set). For rediss:// only TCP reachability is checked.
"#;

fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(synckit::command(), dir)?;
    for (page, extra) in [
        ("synckit.1", SYNCKIT_EXTRA),
        ("synckit-check-config.1", CHECK_CONFIG_EXTRA),
    ] {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(page))?;
        file.write_all(extra.as_bytes())?;
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example manpage -- OUTPUT_DIR");
        return ExitCode::from(2);
    };
    match write_pages(Path::new(&dir)) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manpage: could not write the man pages: {e}");
            ExitCode::FAILURE
        }
    }
}
