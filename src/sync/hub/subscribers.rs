//! Who listens to a live document: its document and awareness subscribers, the
//! pub/sub interest they imply (and the resynchronisation a first listener plans),
//! and sending one message to them now.

use std::sync::Arc;

use super::{DocEntry, DocState, Hub, PeerList};
use crate::hash::FastSet;
use crate::protocol::encode::next_message_id;
use crate::protocol::{encode, Encoding, Framed, ServerMessage};
use crate::sync::peer::{Outgoing, Peer, Tally};

impl Hub {
    /// Add a document subscriber (idempotent). Returns whether it was new.
    pub(crate) fn subscribe(&self, entry: &Arc<DocEntry>, peer: &Arc<Peer>) -> bool {
        let mut st = entry.lock();
        let added = add_peer(&mut st.subscribers, peer);
        if added {
            self.note_interest(entry, &mut st);
        }
        added
    }

    /// Add an awareness subscriber (idempotent).
    pub(crate) fn subscribe_awareness(&self, entry: &Arc<DocEntry>, peer: &Arc<Peer>) -> bool {
        let mut st = entry.lock();
        let added = add_peer(&mut st.awareness_subscribers, peer);
        if added {
            self.note_interest(entry, &mut st);
        }
        added
    }

    /// Remove a document subscription (the awareness one stays).
    pub(crate) fn unsubscribe(&self, id: &str, conn_id: u64) {
        if let Some(entry) = self.get(id) {
            let mut st = entry.lock();
            if remove_peer(&mut st.subscribers, conn_id) {
                self.drop_interest_if_idle(&entry, &st);
            }
        }
    }

    /// Remove an awareness subscription (the document one stays).
    pub(crate) fn unsubscribe_awareness(&self, id: &str, conn_id: u64) {
        if let Some(entry) = self.get(id) {
            let mut st = entry.lock();
            if remove_peer(&mut st.awareness_subscribers, conn_id) {
                self.drop_interest_if_idle(&entry, &st);
            }
        }
    }

    /// Forget a closed connection in every document it was in. Pending batches are
    /// kept: the other subscribers still get them (TS drops them; a bug).
    pub(crate) fn remove_peer<'a>(
        &self,
        conn_id: u64,
        documents: impl IntoIterator<Item = &'a str>,
    ) {
        for id in documents {
            if let Some(entry) = self.get(id) {
                let mut st = entry.lock();
                let removed = remove_peer(&mut st.subscribers, conn_id)
                    | remove_peer(&mut st.awareness_subscribers, conn_id);
                if removed {
                    self.drop_interest_if_idle(&entry, &st);
                }
            }
        }
    }

    /// Pub/sub follows local interest: subscribed while anyone here listens. Both
    /// calls happen only on the transition (first listener in, last one out), so the
    /// backend's subscribe counts stay balanced.
    ///
    /// Among several instances, a document nobody here listened to did not receive
    /// the peers' updates (a copy kept in the cache is stale), and updates published
    /// before the new subscription took effect are missed too: the document is
    /// resynchronised from shared storage shortly after.
    fn note_interest(&self, entry: &Arc<DocEntry>, st: &mut DocState) {
        if st.subscribers.len() + st.awareness_subscribers.len() != 1 {
            return;
        }
        self.pubsub
            .subscribe(&self.settings.channels.delta(&entry.id));
        self.pubsub
            .subscribe(&self.settings.channels.awareness(&entry.id));
        self.queue_resync(entry, st);
    }

    fn drop_interest_if_idle(&self, entry: &DocEntry, st: &DocState) {
        if st.subscribers.is_empty() && st.awareness_subscribers.is_empty() {
            self.pubsub
                .unsubscribe(&self.settings.channels.delta(&entry.id));
            self.pubsub
                .unsubscribe(&self.settings.channels.awareness(&entry.id));
        }
    }

    /// Send one message now to a document's subscribers (and, for awareness, its
    /// awareness subscribers), except `except`. Returns whether that left one of them
    /// crowded, so that the connection that sent it should pace (src/sync/peer.rs).
    pub(crate) fn send_to_subscribers(
        &self,
        entry: &DocEntry,
        msg: &ServerMessage,
        include_awareness: bool,
        except: Option<u64>,
    ) -> bool {
        let (subs, aware) = {
            let st = entry.lock();
            (st.subscribers.clone(), st.awareness_subscribers.clone())
        };
        let extra: &[Arc<Peer>] = if include_awareness { &aware } else { &[] };
        let now_ms = self.now_ms();
        let id = next_message_id(now_ms);
        let mut binary = None;
        let mut json = None;
        // A peer in both lists gets one copy; a set keeps this linear in the
        // number of subscribers.
        let mut seen: FastSet<u64> =
            FastSet::with_capacity_and_hasher(subs.len() + extra.len(), Default::default());
        let mut tally = Tally::default();
        for peer in subs.iter().chain(extra.iter()) {
            if Some(peer.conn_id) == except || !seen.insert(peer.conn_id) {
                continue;
            }
            // Framed once per encoding: each subscriber's writer sends the bytes as
            // they are.
            let framed = match peer.encoding() {
                Encoding::Binary => binary.get_or_insert_with(|| {
                    Framed::new(&[encode(msg, &id, now_ms, Encoding::Binary)])
                }),
                Encoding::Json => json.get_or_insert_with(|| {
                    Framed::new(&[encode(msg, &id, now_ms, Encoding::Json)])
                }),
            };
            tally.count(peer.deliver(Outgoing::Frames(framed.clone())));
        }
        self.metrics.message_out(msg.kind(), tally.delivered);
        tally.crowded
    }
}

/// Add a peer to a subscriber list (copy on write: a flush reads the list without
/// the lock); returns whether it was not there yet.
fn add_peer(list: &mut PeerList, peer: &Arc<Peer>) -> bool {
    // By pointer: a connection has one `Peer`, and comparing the list's pointers
    // does not touch every subscriber's memory — every write subscribes its writer
    // (idempotently), so this runs once per delta.
    if list.iter().any(|p| Arc::ptr_eq(p, peer)) {
        return false;
    }
    let mut next = Vec::with_capacity(list.len() + 1);
    next.extend(list.iter().cloned());
    next.push(peer.clone());
    *list = Arc::new(next);
    true
}

/// Returns whether the peer was there.
fn remove_peer(list: &mut PeerList, conn_id: u64) -> bool {
    if !list.iter().any(|p| p.conn_id == conn_id) {
        return false;
    }
    *list = Arc::new(
        list.iter()
            .filter(|p| p.conn_id != conn_id)
            .cloned()
            .collect(),
    );
    true
}
