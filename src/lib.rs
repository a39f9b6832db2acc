//! synckit: a SyncKit-compatible sync server and its operator tools, in one binary.
//!
//! Layers (imports point down only): `cli` → `server` → `sync`, `auth`, `storage`,
//! `awareness`, `pubsub` → `protocol`. See DESIGN.md in the shared folder and the
//! README's architecture section.
#![forbid(unsafe_code)]

pub mod protocol;
