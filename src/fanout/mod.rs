//! The sync core's background I/O tasks, kept out of `sync/` so that module only
//! decides: batch flushes when their window ends (`flusher`), publishing op relays and
//! awareness to the other instances (`publish`), applying what they publish
//! (`relay`), and reading documents back after an outage (`resync`).

pub(crate) mod flusher;
pub(crate) mod publish;
pub(crate) mod relay;
pub(crate) mod resync;
