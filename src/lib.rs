//! synckit: a SyncKit-compatible sync server and its operator tools, in one binary.
//!
//! Layers (imports point down only): `cli` → `server` → `sync`, `auth`, `storage`,
//! `awareness`, `pubsub` → `protocol`. See ARCHITECTURE.md and the
//! README's architecture section.
//!
//! Every module is private. The library's public surface is the short list of
//! re-exports below, one group per user outside the crate: the binary, the examples
//! and the fuzz targets; `text`, the text engine, is the one public module. What only
//! this crate's integration tests reach into is public with the `test-util` feature
//! alone: `testing`, and four modules whole (CONTRIBUTING.md, "Conventions", says
//! where a new public item goes).
#![forbid(unsafe_code)]

// Modules that only the crate uses. `unreachable_pub` holds in every build.
mod cli;
mod events;
mod exit;
mod fanout;
mod hash;
mod metrics;
mod shutdown;
mod systemd;
mod telemetry;

// Modules the integration tests reach into (through `testing`, or whole below).
// Without `test-util` their test-only `pub` items are unreachable by design; with it,
// which is how `cargo clippy --all-targets` builds the library, `unreachable_pub`
// holds for them too.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod admin_api;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod auth;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod awareness;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod clock;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod maintenance;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod pubsub;
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub))]
mod storage;

// The codec, the session and the server, and the console: the tests use dozens of
// their items, nested modules deep (the session's tests drive a connection and its
// upgrade directly; the console's drive its reducer, model and feeds), so with
// `test-util` they are public whole, under their own paths.
macro_rules! public_with_test_util {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "test-util")]
        pub mod $name;
        #[cfg(not(feature = "test-util"))]
        #[allow(unreachable_pub)]
        mod $name;
    )*};
}
public_with_test_util!(console, protocol, server, sync);

// The SyncText engine is a library of its own, public whole: its fuzz target, its
// benchmark (examples/text_bench.rs) and its differential test drive it directly.
pub mod text;

// The binary (src/main.rs): run the command line, turn its error into the exit
// status, let the logger write its last lines. The man pages (examples/manpage.rs)
// are generated from the same command definition.
pub use cli::{command, main as run};
pub use exit::code_of as exit_code;
pub use telemetry::flush as flush_logs;

// The wire codec and the admission checks, as the fuzz targets drive them: decode a
// client frame, then check its shape and clocks as a session would.
pub use metrics::Refusal;
pub use protocol::{decode_frame, ClientMessage, Encoding};
pub use sync::admission::{check_clocks, check_shape};

// The console's PostgreSQL queries, which examples/console_bench.rs times against a
// seeded database.
pub use console::feed::postgres::Database as ConsoleDatabase;

// What only the integration tests use, item by item (the `test-util` feature).
#[cfg(feature = "test-util")]
pub mod testing;
