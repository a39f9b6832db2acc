//! synckit: a SyncKit-compatible sync server and its operator tools, in one binary.
//!
//! Layers (imports point down only): `cli` → `server` → `sync`, `auth`, `storage`,
//! `awareness`, `pubsub` → `protocol`. See ARCHITECTURE.md and the
//! README's architecture section.
#![forbid(unsafe_code)]

pub mod admin_api;
pub mod auth;
pub mod awareness;
pub mod cli;
pub mod clock;
pub mod console;
mod events;
pub mod exit;
mod fanout;
mod hash;
pub mod maintenance;
pub mod metrics;
pub mod protocol;
pub mod pubsub;
pub mod server;
mod shutdown;
pub mod storage;
pub mod sync;
mod systemd;
pub mod telemetry;
pub mod text;
