//! Memory of the message ids this instance published (docs/storage.md §6.4, C#'s loop
//! prevention). The `origin` key already cuts our own messages when Redis echoes
//! them to our subscriber; the ids are the second line for messages that lose or
//! never had that key (C# peers publish none).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long an id is remembered (C#: 5 minutes).
const REMEMBER_FOR: Duration = Duration::from_secs(5 * 60);

/// Ids remembered at most. At sustained high publish rates the oldest ids go first:
/// an echo arrives within milliseconds, so only the head of the window matters, and
/// memory stays bounded (about 64 bytes per id).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
struct Window {
    /// Ids oldest first.
    order: VecDeque<String>,
    /// Id → when it was published.
    ids: HashMap<String, Instant>,
}

/// Time- and size-bounded set of published ids.
pub(crate) struct RecentIds {
    window: Mutex<Window>,
    ttl: Duration,
    cap: usize,
}

impl Default for RecentIds {
    fn default() -> RecentIds {
        RecentIds::new(REMEMBER_FOR, MAX_REMEMBERED)
    }
}

impl RecentIds {
    pub(crate) fn new(ttl: Duration, cap: usize) -> RecentIds {
        RecentIds {
            window: Mutex::new(Window::default()),
            ttl,
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The window only ever holds whole entries: a panic elsewhere leaves it valid.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember an id we are about to publish.
    pub(crate) fn remember(&self, id: &str) {
        self.remember_at(id, Instant::now());
    }

    /// Whether `id` was published by us within the window.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    fn remember_at(&self, id: &str, now: Instant) {
        let mut w = self.lock();
        while let Some(oldest) = w.order.front() {
            let fresh = w
                .ids
                .get(oldest)
                .is_some_and(|at| now.duration_since(*at) < self.ttl);
            if fresh && w.order.len() < self.cap {
                break;
            }
            if let Some(old) = w.order.pop_front() {
                w.ids.remove(&old);
            }
        }
        if w.ids.insert(id.to_owned(), now).is_none() {
            w.order.push_back(id.to_owned());
        }
    }

    fn contains_at(&self, id: &str, now: Instant) -> bool {
        self.lock()
            .ids
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < self.ttl)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_forgotten_after_the_window() {
        let r = RecentIds::new(Duration::from_secs(300), 10);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        r.remember_at("a", t0);
        assert!(r.contains_at("a", t0));
        assert!(!r.contains_at("b", t0));
        assert!(r.contains_at("a", at(299)));
        assert!(
            !r.contains_at("a", at(301)),
            "expired even before the next insert"
        );
        r.remember_at("b", at(301));
        assert_eq!(r.len(), 1, "expired ids are dropped on insert");
    }

    #[test]
    fn the_oldest_ids_go_first_past_the_cap() {
        let r = RecentIds::new(Duration::from_secs(300), 3);
        for id in ["1", "2", "3", "4"] {
            r.remember(id);
        }
        assert_eq!(r.len(), 3);
        assert!(!r.contains("1"));
        assert!(r.contains("2") && r.contains("4"));
    }
}
