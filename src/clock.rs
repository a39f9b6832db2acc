//! Wall time and monotonic time behind one trait, so the server reads the system
//! clock (an NTP step or a resume from suspend moves timestamps, awareness
//! `expiresAt` and cron decisions with it) while tests inject a `TestClock` (the `test-util` feature) they
//! can set and step (ARCHITECTURE.md "Time", docs/operations.md §8).

use std::fmt::Debug;
#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
#[cfg(any(test, feature = "test-util"))]
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// Where the server reads the time.
pub trait Clock: Send + Sync + Debug {
    /// Wall time: milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Monotonic time, for durations and sleeps (tokio's clock, which paused-time
    /// tests move).
    #[cfg(any(test, feature = "test-util"))]
    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// Wall time as a UTC date.
    fn now_utc(&self) -> DateTime<Utc> {
        utc(self.now_ms())
    }
}

/// A shared clock.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// Epoch milliseconds as a UTC date (the epoch itself when out of range).
fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The system's wall clock, read every time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl SystemClock {
    /// A shared system clock.
    pub(crate) fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// The system's wall time in epoch milliseconds (0 before 1970).
pub fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_ms()
    }
}

/// A clock for tests (with the `test-util` feature): starts at a given wall time, moves with tokio's clock (so
/// paused-time tests advance it with `tokio::time::advance`), and can be stepped
/// forward like an NTP correction or a resume from suspend steps the system clock.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct TestClock {
    /// Wall time at `base`, plus every step so far.
    at_base_ms: AtomicI64,
    base: tokio::time::Instant,
}

#[cfg(any(test, feature = "test-util"))]
impl TestClock {
    /// A clock reading `start_ms` now.
    pub fn starting_at(start_ms: i64) -> Arc<TestClock> {
        Arc::new(TestClock {
            at_base_ms: AtomicI64::new(start_ms),
            base: tokio::time::Instant::now(),
        })
    }

    /// A clock reading `start` now.
    pub fn starting_at_utc(start: DateTime<Utc>) -> Arc<TestClock> {
        TestClock::starting_at(start.timestamp_millis())
    }

    /// Step the wall clock forward by `by` (monotonic time is unchanged).
    pub fn step(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.at_base_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.at_base_ms
            .load(Ordering::Relaxed)
            .saturating_add(self.elapsed_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = system_ms();
        let now = SystemClock.now_ms();
        assert!(now >= before && now - before < 1_000);
        assert!(now > 1_700_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_test_clock_follows_tokio_time_and_can_be_stepped() {
        let clock = TestClock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now_ms(), 1_002_000);
        let mono = clock.monotonic();
        clock.step(Duration::from_secs(3600));
        assert_eq!(clock.now_ms(), 4_602_000);
        assert_eq!(clock.monotonic(), mono, "a step leaves monotonic time");
        assert_eq!(clock.now_utc(), utc(4_602_000));
    }
}
