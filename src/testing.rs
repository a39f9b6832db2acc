//! What only the integration tests use (the `test-util` feature), one module per
//! module of the crate it comes from: the storage, awareness and pub/sub backends
//! with their traits, the authenticator, the clock and its test clock, the
//! maintenance jobs and the admin API's shapes. Nothing here is part of the product;
//! the codec, the session and server, and the console are public whole with the
//! feature (src/lib.rs says why).

/// The admin API's shapes, which the console tests feed to the console.
pub mod admin_api {
    pub use crate::admin_api::stats::{
        ConnectionStats, DocumentStats, MessageStats, PersistenceStats, PubSubStats,
    };
    pub use crate::admin_api::{host_name, Event, EventKind, FleetEntry, Severity, Stats};
}

/// Tokens and the permissions they grant.
pub mod auth {
    pub use crate::auth::jwt::api_key_label;
    pub use crate::auth::{Authenticator, Identity, Permissions, TokenKind};
}

/// Presence stores, held to one conformance suite.
pub mod awareness {
    pub use crate::awareness::{
        AwarenessEntry, AwarenessError, AwarenessStore, AwarenessUpdate, BoundedAwarenessStore,
        MemoryAwarenessStore, PostgresAwarenessStore, RedisAwarenessStore, SetOutcome,
        END_OF_TIME_MS,
    };
}

/// Wall time, and the clock tests step.
pub mod clock {
    pub use crate::clock::{system_ms, Clock, TestClock};
}

/// The scheduled jobs and their scheduler.
pub mod maintenance {
    pub use crate::maintenance::compaction::compact_large_documents;
    pub use crate::maintenance::scheduler::{next_base, CLOCK_RECHECK};
    pub use crate::maintenance::{JobConfig, JobKind, Schedule, Scheduler};
}

/// The fan-out buses between instances.
pub mod pubsub {
    pub use crate::pubsub::{
        LocalPubSub, PubSub, PubSubState, RedisPubSub, RedisSettings, RedisTarget,
    };
}

/// The storage traits, both backends and their rows, held to one conformance suite.
pub mod storage {
    pub use crate::storage::migrate;
    pub use crate::storage::{
        CleanupCounts, CleanupOptions, CompatStore, DeltaOperation, DeltaRow, DocumentRow,
        DocumentWrite, FieldChange, MaintenanceStore, MemoryStorage, NewDelta, NewSnapshot,
        PostgresStorage, SessionRecord, SessionRow, SnapshotRow, StorageAdapter, StorageError,
        SyncStore,
    };
}
