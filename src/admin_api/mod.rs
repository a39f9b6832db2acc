//! The admin API's payloads, as types: `/stats`, `/admin/*`, `/maintenance`,
//! `/admin/events` and the presence heartbeat's metadata. The server builds these
//! to answer and the console deserialises the same types to read, so a field
//! renamed or dropped on one side is a compile error on the other.
//!
//! Reading rules (the console talks to instances of other versions during a
//! rolling upgrade, and peers of other implementations announce presence):
//! - `/stats` and presence metadata are read field by field: every field is an
//!   `Option` (or a group of them) that defaults when absent, and the console shows
//!   an absent one as unknown (`?`), never as 0.
//! - The pages (`/admin/*`, `/maintenance`, events) are read whole: a required field
//!   missing fails that page, which the console reports as a problem of that
//!   instance. Fields added later are `Option` with `#[serde(default)]`, so older
//!   servers stay readable.
//!
//! Pure data, no I/O: the lowest layer, like `protocol`.

pub(crate) mod events;
pub(crate) mod maintenance;
pub(crate) mod pages;
pub(crate) mod presence;
pub(crate) mod stats;

pub(crate) use events::EventsPage;
pub use events::{Event, EventKind, Severity};
pub use maintenance::CleanupRetention;
pub(crate) use maintenance::{ActionOutcome, JobStatus, MaintenanceRun, MaintenanceStatus};
pub use pages::LiveDocumentInfo;
pub(crate) use pages::{
    ApiError, AwarenessClientInfo, AwarenessPage, Deleted, Disconnected, DocumentAwareness,
    DocumentDetail, DocumentsPage, LiveSession, SessionsPage,
};
pub use presence::{FleetEntry, PeerStatus, PresenceMetadata};
pub use stats::Stats;

/// The host name this process runs on, for `/stats` and heartbeats (operators
/// know their fleet by host, not by instance id). Linux's kernel name, else
/// `$HOSTNAME`.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
