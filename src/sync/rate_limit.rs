//! Per-connection message rate limit over a sliding 60 s window (docs/protocol.md §11.1).
//!
//! A sliding-window *counter* (current window's count plus the previous window's,
//! weighted by how much of it still overlaps) instead of a log of timestamps: O(1)
//! memory per connection, which matters at 10,000 idle connections.

use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: u32,
    window_start: Instant,
    current: u32,
    previous: u32,
}

impl RateLimiter {
    /// `limit` messages per minute; 0 disables the limit.
    pub(crate) fn new(limit: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            limit,
            window_start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Count a message if it is within the limit; a rejected one is not counted.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()).floor() as u32;
            self.previous = if windows == 1 { self.current } else { 0 };
            self.current = 0;
            self.window_start += WINDOW * windows;
            elapsed = now.saturating_duration_since(self.window_start);
        }
        let overlap = 1.0 - elapsed.as_secs_f64() / WINDOW.as_secs_f64();
        let estimate = f64::from(self.previous) * overlap + f64::from(self.current);
        if estimate + 1.0 > f64::from(self.limit) {
            return false;
        }
        self.current += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_limit_then_rejects() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(5, t0);
        for _ in 0..5 {
            assert!(r.allow(t0));
        }
        assert!(!r.allow(t0));
        assert!(!r.allow(t0 + Duration::from_secs(59)));
    }

    #[test]
    fn window_slides() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        for _ in 0..10 {
            assert!(r.allow(t0));
        }
        // Halfway through the next window, half of the previous one still counts.
        let mid = t0 + Duration::from_secs(90);
        let allowed = (0..10).filter(|_| r.allow(mid)).count();
        assert_eq!(allowed, 5);
        // Two windows later everything has expired.
        let later = t0 + Duration::from_secs(200);
        assert_eq!((0..20).filter(|_| r.allow(later)).count(), 10);
    }

    #[test]
    fn zero_disables() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, t0);
        assert!((0..10_000).all(|_| r.allow(t0)));
    }
}
