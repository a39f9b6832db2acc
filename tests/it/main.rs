//! The integration tests, one binary (the crate is linked once): the wire protocol over
//! real sockets, storage and pub/sub against real PostgreSQL and Redis, the console, the CLI
//! and packaging. Shared helpers live in `common` and `console_fixture`.

// Test and benchmark code: failing loudly is the point (Cargo.toml [lints]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod awareness_conformance;
mod backpressure;
mod check_config;
mod cli;
mod clock;
mod codec_props;
mod common;
mod console_e2e;
mod console_feed;
mod console_fixture;
mod console_snapshots;
mod console_update;
mod fleet;
mod http;
mod logs;
mod metrics;
mod migrations;
mod monitoring;
mod packaging;
mod persistence_e2e;
mod redis_fanout;
mod redis_outage;
mod redis_serve;
mod scheduler;
mod session_state;
mod storage_conformance;
mod storage_outage;
mod systemd;
mod test_clear;
mod text_differential;
mod wire;
mod wire_admission;
mod wire_admission_bounds;
mod wire_auth;
mod wire_awareness;
mod wire_limits;
mod wire_sync;
mod wire_text;
mod wire_text_replay;
