//! This instance's notable events, in a bounded ring, for the admin API
//! (`GET /admin/events`) and the console's Events view.
//!
//! Two ways in, both cheap enough for any path (one short lock, no I/O):
//! - `EventLog::record`: one event now (storage degraded, a peer went offline).
//! - `EventLog::note`: something that can happen in floods (auth failures,
//!   rate-limit refusals, slow clients). The first occurrence of a kind is recorded
//!   at once; further ones within `SUMMARY_WINDOW_MS` are counted and recorded as
//!   one summary entry when the window ends (`EventLog::flush`, called every
//!   second by the server's watcher), so a flood costs a counter, not the ring.
//!
//! Time is passed in (epoch ms), so tests drive windows without sleeping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

pub(crate) use crate::admin_api::{Event, EventKind};

/// Events kept per instance: a bad hour's worth at the rates the summaries allow.
const EVENT_CAPACITY: usize = 256;
/// Occurrences of a noted kind within this window after the first are summed up
/// into one entry.
const SUMMARY_WINDOW_MS: i64 = 60_000;

struct Pending {
    window_start_ms: i64,
    last_ms: i64,
    /// Occurrences since the window's first (which was recorded at once).
    count: u64,
    last_detail: String,
}

struct Inner {
    ring: VecDeque<Event>,
    next_seq: u64,
    dropped: u64,
    pending: BTreeMap<EventKind, Pending>,
}

/// The ring. One per instance (in [`crate::sync::SyncService`]).
pub(crate) struct EventLog {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl Default for EventLog {
    fn default() -> EventLog {
        EventLog::new(EVENT_CAPACITY)
    }
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> EventLog {
        EventLog {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                next_seq: 1,
                dropped: 0,
                pending: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, inner: &mut Inner, at_ms: i64, kind: EventKind, message: String, count: u64) {
        let event = Event {
            seq: inner.next_seq,
            at_ms,
            kind,
            severity: kind.severity(),
            message,
            count,
        };
        inner.next_seq += 1;
        inner.ring.push_back(event);
        while inner.ring.len() > self.capacity {
            inner.ring.pop_front();
            inner.dropped += 1;
        }
    }

    /// Record one event.
    pub(crate) fn record(&self, now_ms: i64, kind: EventKind, message: impl Into<String>) {
        let mut inner = self.lock();
        self.push(&mut inner, now_ms, kind, message.into(), 1);
    }

    /// Note `count` occurrences of a flood-prone kind (see the module doc).
    pub(crate) fn note(&self, now_ms: i64, kind: EventKind, count: u64, detail: impl Into<String>) {
        if count == 0 {
            return;
        }
        let detail = detail.into();
        let mut inner = self.lock();
        let open = inner
            .pending
            .get(&kind)
            .is_some_and(|p| now_ms - p.window_start_ms < SUMMARY_WINDOW_MS);
        if open {
            if let Some(p) = inner.pending.get_mut(&kind) {
                p.count += count;
                p.last_ms = now_ms;
                p.last_detail = detail;
            }
            return;
        }
        if let Some(p) = inner.pending.remove(&kind) {
            self.push_summary(&mut inner, kind, p);
        }
        self.push(&mut inner, now_ms, kind, detail, count);
        inner.pending.insert(
            kind,
            Pending {
                window_start_ms: now_ms,
                last_ms: now_ms,
                count: 0,
                last_detail: String::new(),
            },
        );
    }

    fn push_summary(&self, inner: &mut Inner, kind: EventKind, p: Pending) {
        if p.count == 0 {
            return;
        }
        let seconds = SUMMARY_WINDOW_MS / 1000;
        let message = format!(
            "{} more within {seconds}s; last: {}",
            p.count, p.last_detail
        );
        self.push(inner, p.last_ms, kind, message, p.count);
    }

    /// Record the summaries whose window has ended.
    pub(crate) fn flush(&self, now_ms: i64) {
        let mut inner = self.lock();
        let due: Vec<EventKind> = inner
            .pending
            .iter()
            .filter(|(_, p)| now_ms - p.window_start_ms >= SUMMARY_WINDOW_MS)
            .map(|(k, _)| *k)
            .collect();
        for kind in due {
            if let Some(p) = inner.pending.remove(&kind) {
                self.push_summary(&mut inner, kind, p);
            }
        }
    }

    /// Up to `limit` events with `seq > after`, newest first, and how many events
    /// the ring has dropped so far.
    pub(crate) fn page(&self, after: u64, limit: usize) -> (Vec<Event>, u64) {
        let inner = self.lock();
        let events = inner
            .ring
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect();
        (events, inner.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_api::Severity;

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record(i, EventKind::PeerOnline, format!("peer {i}"));
        }
        let (events, dropped) = log.page(0, 10);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![5, 4, 3]);
        assert_eq!(dropped, 2);
        assert_eq!(log.page(4, 10).0.len(), 1);
        assert_eq!(log.page(0, 1).0[0].message, "peer 4");
        assert_eq!(events[0].severity, Severity::Info);
    }

    #[test]
    fn floods_are_summarised_once_per_window() {
        let log = EventLog::default();
        log.note(
            1_000,
            EventKind::AuthFailures,
            1,
            "invalid token from 10.0.0.9",
        );
        for i in 0..500 {
            log.note(
                2_000 + i,
                EventKind::AuthFailures,
                1,
                "invalid token from 10.0.0.7",
            );
        }
        assert_eq!(log.page(0, 10).0.len(), 1, "the first is recorded at once");
        log.flush(30_000);
        assert_eq!(log.page(0, 10).0.len(), 1, "the window is still open");
        log.flush(61_000);
        let (events, _) = log.page(0, 10);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].count, 500);
        assert!(
            events[0]
                .message
                .starts_with("500 more within 60s; last: invalid token from 10.0.0.7"),
            "{}",
            events[0].message
        );
        // A quiet window leaves nothing behind; the next occurrence is recorded at once.
        log.flush(200_000);
        log.note(300_000, EventKind::AuthFailures, 2, "x");
        let (events, _) = log.page(0, 10);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].count, 2);
        log.note(300_001, EventKind::RateLimited, 0, "nothing");
        assert_eq!(log.page(0, 10).0.len(), 3);
    }
}
