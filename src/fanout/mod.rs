//! The sync core's background I/O tasks, kept out of `sync/` so that module only
//! decides: batch flushes when their window ends (`flusher`), applying what other
//! instances publish (`relay`), and reading documents back after an outage (`resync`).

pub(crate) mod flusher;
pub(crate) mod relay;
pub(crate) mod resync;
