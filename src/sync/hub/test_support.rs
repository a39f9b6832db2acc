//! Hubs for the hub's unit tests, shared by every file's tests.

use std::sync::Arc;
use std::time::Duration;

use super::{Hub, HubSettings};
use crate::metrics::Metrics;
use crate::pubsub::{Channels, LocalPubSub};
use crate::storage::Persistence;

pub(super) fn hub(max_cached_documents: usize) -> Arc<Hub> {
        hub_on(Persistence::in_memory(), max_cached_documents)
    }

pub(super) fn hub_on(storage: Persistence, max_cached_documents: usize) -> Arc<Hub> {
        let (hub, _flushes) = Hub::new(
            Arc::new(storage),
            Arc::new(LocalPubSub::single_instance()),
            Arc::new(Metrics::default()),
            HubSettings {
                batch_delay: Duration::from_millis(50),
                instance_id: "test".into(),
                channels: Channels::new("synckit:"),
                max_cached_documents,
                max_clock_entries: 3,
                text_limits: crate::text::Limits::default(),
                clock: crate::clock::SystemClock::shared(),
            },
        );
        hub
    }
