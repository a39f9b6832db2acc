//! Process-wide counters behind `/stats` and `/metrics` (docs/operations.md §7.3). Every
//! counter here is incremented somewhere on the real path; none is decorative.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::protocol::MessageType;

/// Upper bounds (ms) of the broadcast latency histogram buckets.
pub(crate) const LATENCY_BUCKETS_MS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0,
];

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Gauge(AtomicI64);

impl Gauge {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram (cumulative counts are computed when rendered).
pub(crate) struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub(crate) const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_MS.len() + 1],
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Time since `started`, observed.
    pub(crate) fn observe_since(&self, started: std::time::Instant) {
        self.observe_ms(started.elapsed().as_secs_f64() * 1000.0);
    }

    pub(crate) fn observe_ms(&self, ms: f64) {
        let idx = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket (non-cumulative) counts; the last is the +Inf overflow bucket.
    pub(crate) fn buckets(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn sum_ms(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Why a client's input was refused: the `reason` label of `synckit_refusals_total`.
/// Every refusal the admission layer (and the listeners) make is counted under one
/// of these, so an operator sees which bound is being hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Nested deeper than `SYNCKIT_MAX_JSON_DEPTH`.
    JsonDepth,
    /// A NUL character in a string value or key.
    Nul,
    /// A client vector clock with too many entries, or an entry that is not a
    /// non-negative integer within the JavaScript safe range.
    ClockInvalid,
    /// A write to a document whose vector clock is full
    /// (`SYNCKIT_MAX_CLOCK_ENTRIES_PER_DOCUMENT`): applied, but a new writer ticks the
    /// shared `overflow` entry and unknown entries of its clock are not merged.
    ClockFull,
    /// Over the per-connection message rate.
    RateLimited,
    /// A logical message over `SYNCKIT_MAX_MESSAGE_BYTES`.
    TooLarge,
    /// A chunk before authentication.
    ChunkUnauthenticated,
    /// A malformed chunk, or one over the chunk bounds or the connection's budget.
    ChunkInvalid,
    /// An undecodable frame.
    Undecodable,
    /// An awareness update or leave for a client id another connection owns.
    AwarenessNotOwner,
    /// A subscription dropped because re-authentication no longer allows it.
    SubscriptionRevoked,
    /// A session closed because its token expired.
    TokenExpired,
    /// An admin-listener request without a valid admin credential.
    AdminUnauthorized,
    /// An admin-listener request whose `Host` is neither loopback nor configured.
    AdminHost,
    /// A document id that is missing, too long or has invalid characters.
    InvalidDocumentId,
    /// A document message the connection's permissions do not allow.
    PermissionDenied,
    /// A connection closed because it did not read what it was sent: a socket
    /// write waited past `SYNCKIT_WRITE_TIMEOUT`, or its outbox filled up.
    SlowClient,
    /// An awareness state over `SYNCKIT_MAX_AWARENESS_STATE_BYTES`.
    AwarenessStateTooLarge,
    /// A new awareness client id past `SYNCKIT_MAX_AWARENESS_CLIENTS_PER_DOCUMENT`
    /// or `SYNCKIT_MAX_AWARENESS_CLIENTS_PER_CONNECTION`.
    AwarenessClientLimit,
    /// A subscription past `SYNCKIT_MAX_SUBSCRIPTIONS_PER_CONNECTION`.
    SubscriptionLimit,
    /// A request to `/ws` that is not a valid WebSocket upgrade (HTTP 4xx).
    InvalidUpgrade,
    /// A malformed message: a type clients may not send, a delta or batch without
    /// changes, a batch op that is not an object, an invalid field name, a bad
    /// awareness state, more text states in a batch than allowed.
    InvalidMessage,
    /// A document or awareness message before authentication, or no `auth` in time.
    NotAuthenticated,
    /// No frame received within `WS_HEARTBEAT_TIMEOUT`.
    HeartbeatTimeout,
    /// A WebSocket frame over `SYNCKIT_MAX_FRAME_BYTES` (close 1009).
    FrameTooLarge,
    /// An HTTP request head not received within `SYNCKIT_HEADER_READ_TIMEOUT`.
    HeaderTimeout,
    /// A text state that is not a valid SyncText state (README "Text engine").
    TextInvalid,
    /// A text state over `SYNCKIT_MAX_TEXT_STATE_BYTES` or `SYNCKIT_MAX_TEXT_BLOCKS`.
    TextTooLarge,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 28] = [
        Refusal::JsonDepth,
        Refusal::Nul,
        Refusal::ClockInvalid,
        Refusal::ClockFull,
        Refusal::RateLimited,
        Refusal::TooLarge,
        Refusal::ChunkUnauthenticated,
        Refusal::ChunkInvalid,
        Refusal::Undecodable,
        Refusal::AwarenessNotOwner,
        Refusal::SubscriptionRevoked,
        Refusal::TokenExpired,
        Refusal::AdminUnauthorized,
        Refusal::AdminHost,
        Refusal::InvalidDocumentId,
        Refusal::PermissionDenied,
        Refusal::SlowClient,
        Refusal::AwarenessStateTooLarge,
        Refusal::AwarenessClientLimit,
        Refusal::SubscriptionLimit,
        Refusal::InvalidUpgrade,
        Refusal::InvalidMessage,
        Refusal::NotAuthenticated,
        Refusal::HeartbeatTimeout,
        Refusal::FrameTooLarge,
        Refusal::HeaderTimeout,
        Refusal::TextInvalid,
        Refusal::TextTooLarge,
    ];

    /// The `reason` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::JsonDepth => "json_depth",
            Refusal::Nul => "nul_character",
            Refusal::ClockInvalid => "clock_invalid",
            Refusal::ClockFull => "document_clock_full",
            Refusal::RateLimited => "rate_limited",
            Refusal::TooLarge => "message_too_large",
            Refusal::ChunkUnauthenticated => "chunk_unauthenticated",
            Refusal::ChunkInvalid => "chunk_invalid",
            Refusal::Undecodable => "undecodable",
            Refusal::AwarenessNotOwner => "awareness_not_owner",
            Refusal::SubscriptionRevoked => "subscription_revoked",
            Refusal::TokenExpired => "token_expired",
            Refusal::AdminUnauthorized => "admin_unauthorized",
            Refusal::AdminHost => "admin_host",
            Refusal::InvalidDocumentId => "invalid_document_id",
            Refusal::PermissionDenied => "permission_denied",
            Refusal::SlowClient => "slow_client",
            Refusal::AwarenessStateTooLarge => "awareness_state_too_large",
            Refusal::AwarenessClientLimit => "awareness_client_limit",
            Refusal::SubscriptionLimit => "subscription_limit",
            Refusal::InvalidUpgrade => "invalid_upgrade",
            Refusal::InvalidMessage => "invalid_message",
            Refusal::NotAuthenticated => "not_authenticated",
            Refusal::HeartbeatTimeout => "heartbeat_timeout",
            Refusal::FrameTooLarge => "frame_too_large",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::TextInvalid => "text_state_invalid",
            Refusal::TextTooLarge => "text_state_too_large",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_authenticated: Gauge,
    pub(crate) connections_rejected_per_ip: Counter,
    pub(crate) connections_rejected_capacity: Counter,
    pub(crate) messages_in: [Counter; MessageType::ALL.len()],
    pub(crate) messages_out: [Counter; MessageType::ALL.len()],
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) invalid_frames: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) acks_sent: Counter,
    pub(crate) auth_failures: Counter,
    pub(crate) broadcast_flushes: Counter,
    pub(crate) broadcast_deliveries: Counter,
    pub(crate) slow_clients_closed: Counter,
    /// Yields of writers (connections, the relay) whose broadcast crowded a subscriber.
    pub(crate) writers_paced: Counter,
    /// Idle documents unloaded to keep the cache within its bound.
    pub(crate) documents_evicted: Counter,
    pub(crate) broadcast_latency: Histogram,
    pub(crate) persist_failures: Counter,
    /// Messages handed to the pub/sub backend (some may be dropped there).
    pub(crate) pubsub_published: Counter,
    /// Messages from other instances that were applied or relayed.
    pub(crate) pubsub_received: Counter,
    /// Resynchronisation rounds after pub/sub outages, and fields they changed.
    pub(crate) resync_rounds: Counter,
    pub(crate) resync_fields: Counter,
    pub(crate) awareness_expired: Counter,
    /// Refusals by reason (`synckit_refusals_total{reason}`).
    refusals: [Counter; Refusal::ALL.len()],
    errors: Mutex<HashMap<String, u64>>,
    /// Authenticated connections per user id: `totalUsers` counts distinct users.
    users: Mutex<HashMap<String, usize>>,
}

impl Metrics {
    pub(crate) fn message_in(&self, kind: MessageType) {
        self.messages_in[kind.index()].inc();
    }

    pub(crate) fn message_out(&self, kind: MessageType, n: u64) {
        self.messages_out[kind.index()].add(n);
    }

    /// Count one refusal.
    pub(crate) fn refused(&self, reason: Refusal) {
        self.refusals[reason.index()].inc();
    }

    /// Refusals so far for one reason.
    pub(crate) fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals[reason.index()].get()
    }

    /// Count an `error` reply by its (catalogue) message. Messages that embed a
    /// variable part are counted under their fixed prefix so the map stays small.
    pub(crate) fn error_sent(&self, error: &str) {
        let key = error.split(" (").next().unwrap_or(error);
        let key = key.split(": ").next().unwrap_or(key);
        if let Ok(mut map) = self.errors.lock() {
            *map.entry(key.to_owned()).or_insert(0) += 1;
        }
    }

    /// A connection is now authenticated as `user_id`.
    pub(crate) fn user_joined(&self, user_id: &str) {
        if let Ok(mut map) = self.users.lock() {
            *map.entry(user_id.to_owned()).or_insert(0) += 1;
        }
    }

    /// A connection authenticated as `user_id` closed or signed in as someone else.
    pub(crate) fn user_left(&self, user_id: &str) {
        if let Ok(mut map) = self.users.lock() {
            if let Some(n) = map.get_mut(user_id) {
                *n -= 1;
                if *n == 0 {
                    map.remove(user_id);
                }
            }
        }
    }

    /// Distinct user ids with at least one authenticated connection.
    pub(crate) fn distinct_users(&self) -> usize {
        self.users.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub(crate) fn errors(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .errors
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Numbers that belong to the process rather than to one server (a test process
/// runs several servers; `synckit cleanup` none): PostgreSQL timings of the sync
/// path and the maintenance jobs' runs. Exported by `/metrics` with the rest.
pub(crate) static PROCESS: ProcessMetrics = ProcessMetrics::new();

pub(crate) struct ProcessMetrics {
    /// Waiting for a pooled connection (and `BEGIN`) before a write batch.
    pub(crate) postgres_acquire: Histogram,
    /// One write batch (documents, clocks, deltas) committed.
    pub(crate) postgres_write: Histogram,
    /// One document loaded.
    pub(crate) postgres_load: Histogram,
    jobs: Mutex<std::collections::BTreeMap<String, JobTotals>>,
}

/// Upper bounds (seconds) of a maintenance run's duration buckets: jobs take from
/// milliseconds (nothing to do) to minutes (a large cleanup).
pub(crate) const JOB_BUCKETS_SECONDS: [f64; 8] = [0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0];

/// One job's runs on this process.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobTotals {
    pub(crate) runs: u64,
    pub(crate) failures: u64,
    /// Non-cumulative counts per bucket of [`JOB_BUCKETS_SECONDS`], then +Inf.
    pub(crate) buckets: [u64; JOB_BUCKETS_SECONDS.len() + 1],
    pub(crate) seconds: f64,
    /// Unix time (seconds) of the last run that succeeded.
    pub(crate) last_success: Option<f64>,
}

impl ProcessMetrics {
    const fn new() -> ProcessMetrics {
        ProcessMetrics {
            postgres_acquire: Histogram::new(),
            postgres_write: Histogram::new(),
            postgres_load: Histogram::new(),
            jobs: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// A finished maintenance run of `job`.
    pub(crate) fn job_finished(&self, job: &str, ok: bool, seconds: f64) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let totals = jobs.entry(job.to_owned()).or_default();
        totals.runs += 1;
        if !ok {
            totals.failures += 1;
        }
        let idx = JOB_BUCKETS_SECONDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(JOB_BUCKETS_SECONDS.len());
        totals.buckets[idx] += 1;
        totals.seconds += seconds;
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            totals.last_success = Some(now);
        }
    }

    /// Every job that ran, by name.
    pub(crate) fn jobs(&self) -> Vec<(String, JobTotals)> {
        self.jobs
            .lock()
            .map(|jobs| jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_runs_are_counted_with_their_last_success() {
        let m = ProcessMetrics::new();
        m.job_finished("cleanup", true, 0.2);
        m.job_finished("cleanup", false, 700.0);
        let jobs = m.jobs();
        let (name, t) = &jobs[0];
        assert_eq!(name, "cleanup");
        assert_eq!((t.runs, t.failures), (2, 1));
        assert_eq!(t.buckets[2], 1);
        assert_eq!(t.buckets[JOB_BUCKETS_SECONDS.len()], 1);
        assert!(t.last_success.is_some());
    }

    #[test]
    fn histogram_buckets() {
        let h = Histogram::default();
        h.observe_ms(0.5);
        h.observe_ms(50.0);
        h.observe_ms(5000.0);
        let b = h.buckets();
        assert_eq!(b[0], 1);
        assert_eq!(b[5], 1);
        assert_eq!(b[LATENCY_BUCKETS_MS.len()], 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let m = Metrics::default();
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL is in declaration order");
        }
        m.refused(Refusal::Nul);
        m.refused(Refusal::Nul);
        m.refused(Refusal::JsonDepth);
        assert_eq!(m.refusals(Refusal::Nul), 2);
        assert_eq!(m.refusals(Refusal::JsonDepth), 1);
        assert_eq!(m.refusals(Refusal::AdminHost), 0);
    }

    #[test]
    fn errors_are_keyed_by_fixed_prefix() {
        let m = Metrics::default();
        m.error_sent("Message too large (5 bytes, max 2)");
        m.error_sent("Invalid message type: foo");
        m.error_sent("Invalid message type: bar");
        assert_eq!(
            m.errors(),
            vec![
                ("Invalid message type".into(), 2),
                ("Message too large".into(), 1)
            ]
        );
    }
}
