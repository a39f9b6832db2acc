//! The live sessions of this instance, for the admin API (console Sessions view) and
//! the "disconnect a session" action. Connections register at admission and update
//! their entry only when something changed (user, subscription count); "last seen" is
//! an atomic, so the frame path takes no shared lock. The list is read only by admin
//! requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// What the admin API shows of one live connection.
pub(crate) use crate::admin_api::LiveSession;

struct Entry {
    session: LiveSession,
    /// Written on every frame without the registry lock (read when listing).
    last_seen_ms: Arc<AtomicI64>,
    /// Cancelled by an administrator's disconnect; the connection loop closes.
    kick: CancellationToken,
}

impl Entry {
    fn snapshot(&self) -> LiveSession {
        let mut session = self.session.clone();
        session.last_seen_ms = self.last_seen_ms.load(Ordering::Relaxed);
        session
    }
}

/// Every live connection of this instance, by connection id.
#[derive(Default)]
pub(crate) struct LiveSessions {
    entries: Mutex<BTreeMap<u64, Entry>>,
}

/// Removes the entry when the connection ends (also on panic).
pub(crate) struct LiveGuard {
    sessions: Arc<LiveSessions>,
    conn_id: u64,
    last_seen_ms: Arc<AtomicI64>,
    kick: CancellationToken,
}

impl LiveGuard {
    /// Cancelled when an administrator disconnects this session.
    pub(crate) fn kicked(&self) -> &CancellationToken {
        &self.kick
    }

    /// Record what changed; cheap enough to call after every frame.
    pub(crate) fn update(&self, user: Option<&str>, subscriptions: &mut dyn Iterator<Item = &str>) {
        let mut map = self.sessions.lock();
        if let Some(entry) = map.get_mut(&self.conn_id) {
            let s = &mut entry.session;
            if s.user.as_deref() != user {
                s.user = user.map(str::to_owned);
            }
            s.subscriptions = subscriptions.map(str::to_owned).collect();
            s.subscriptions.sort();
        }
    }

    /// The connection received something (frame or pong) at `now_ms`. On the
    /// frame path, so it takes no lock.
    pub(crate) fn seen(&self, now_ms: i64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.conn_id);
    }
}

impl LiveSessions {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a new connection.
    pub(crate) fn register(self: &Arc<Self>, session: LiveSession) -> LiveGuard {
        let conn_id = session.conn_id;
        let kick = CancellationToken::new();
        let last_seen_ms = Arc::new(AtomicI64::new(session.last_seen_ms));
        self.lock().insert(
            conn_id,
            Entry {
                session,
                last_seen_ms: last_seen_ms.clone(),
                kick: kick.clone(),
            },
        );
        LiveGuard {
            sessions: self.clone(),
            conn_id,
            last_seen_ms,
            kick,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// One page, oldest connection first (connection ids grow).
    pub(crate) fn page(&self, offset: usize, limit: usize) -> Vec<LiveSession> {
        self.lock()
            .values()
            .skip(offset)
            .take(limit)
            .map(Entry::snapshot)
            .collect()
    }

    /// Connection key of a connection id, for subscriber lists.
    pub(crate) fn key_of(&self, conn_id: u64) -> Option<String> {
        self.lock().get(&conn_id).map(|e| e.session.id.clone())
    }

    /// Ask a connection to close, by connection key or numeric id. Returns whether
    /// it was found.
    pub(crate) fn disconnect(&self, id: &str) -> bool {
        let map = self.lock();
        let found = map
            .values()
            .find(|e| e.session.id == id || e.session.conn_id.to_string() == id);
        match found {
            Some(entry) => {
                entry.kick.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(conn_id: u64) -> LiveSession {
        LiveSession {
            id: format!("i:conn-{conn_id}"),
            conn_id,
            user: None,
            client: None,
            remote_ip: "127.0.0.1".into(),
            connected_at_ms: 1,
            last_seen_ms: 1,
            subscriptions: Vec::new(),
        }
    }

    #[test]
    fn entries_live_as_long_as_their_guard() {
        let live = Arc::new(LiveSessions::default());
        let a = live.register(session(1));
        let b = live.register(session(2));
        a.update(Some("alice"), &mut ["doc-b", "doc-a"].into_iter());
        a.seen(42);
        let page = live.page(0, 10);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].user.as_deref(), Some("alice"));
        assert_eq!(page[0].subscriptions, vec!["doc-a", "doc-b"]);
        assert_eq!(page[0].last_seen_ms, 42);
        assert_eq!(live.page(1, 10)[0].conn_id, 2);
        assert!(live.disconnect("i:conn-2"));
        assert!(b.kicked().is_cancelled());
        assert!(!live.disconnect("nope"));
        drop(a);
        assert_eq!(live.len(), 1);
        assert_eq!(live.key_of(2).as_deref(), Some("i:conn-2"));
    }
}
