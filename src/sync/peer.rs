//! A connection as seen by the hub: where its outbound frames go.
//!
//! One ordered outbox per connection, with two budgets. What the connection caused
//! itself — replies, acks, the echo of its own writes, pings — never closes it: once
//! `OWN_BUDGET` of those wait unsent, its connection stops reading the socket until
//! they drain (`Peer::own_backlogged`, `Peer::room`), so a fast writer is slowed
//! to the pace its own replies leave at. Broadcasts of other connections' writes are
//! not waited for — that would stall every other subscriber — so a subscriber with
//! its broadcast budget of them unsent (`SYNCKIT_MAX_QUEUED_BROADCASTS`, by default
//! [`DEFAULT_BROADCAST_BUDGET`]) is marked for closing (`1013 Client too slow`)
//! and the delivery is counted as dropped.
//!
//! The queue itself is a `VecDeque` allocated on the first item and given back when it
//! drains past `RETAINED_SLOTS`: an idle connection holds no queue memory (a channel
//! would hold a 32-slot block per connection from the start; BENCHMARKS.md "memory per
//! idle connection").
//!
//! Between the two, a writer is paced to its slowest subscriber: a broadcast that
//! leaves a subscriber with half its broadcast budget or more waiting is
//! [`Delivery::Crowded`]; the hub reports it to whoever made the broadcast at once,
//! and the connection that sent it is asked to let the subscribers run
//! (`Peer::ask_to_pace`): it yields to the scheduler before it reads its next frame
//! (the relay of other instances' writes yields after applying one). Without it, a writer whose acks are
//! decided at once (the in-memory store) can read a whole coop budget of frames per
//! poll and fan them out faster than subscribers on the same cores are scheduled to
//! send them, and they would be closed as too slow although they read as fast as
//! they can. A subscriber that does not read at all is still closed: a yield does
//! not wait for it.
//!
//! A delivery is one lock of the queue and, only when the queue was empty, one wake-up
//! of the writer; the writer takes a whole burst under one lock. The budget of
//! broadcasts is counted under that same lock and "too slow" is a flag, so the hub's
//! fan-out loop touches no other shared word per subscriber (BENCHMARKS.md "Where the
//! time went").

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::{EncodedFrame, Encoding, Framed};

/// Broadcasts of others' writes a connection may have waiting, unless configured
/// (`SYNCKIT_MAX_QUEUED_BROADCASTS`). A broadcast flush is one item however many
/// fields it carries, so this is ~256 batch windows of slack before a reader counts
/// as slow; with batching off every delta is an item.
pub(crate) const DEFAULT_BROADCAST_BUDGET: usize = 256;

/// Items a connection caused itself that may wait before its socket stops being read.
const OWN_BUDGET: usize = 128;

/// Queue slots a drained outbox keeps for the next item; a larger queue (after a
/// burst) is freed when it drains, so memory follows the backlog back down.
const RETAINED_SLOTS: usize = 4;

/// Outbound items a connection's writer task sends, in order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Frame(EncodedFrame),
    /// One broadcast, framed once and shared by every subscriber with this encoding.
    Frames(Framed),
    /// A WebSocket protocol ping (never an application-level `ping`).
    Ping,
    /// The answer to the client's protocol ping, with its payload.
    Pong(Bytes),
    /// Our close frame; nothing is sent after it. `code: None` is a close with no
    /// code (the answer to a client's close that had none).
    Close {
        code: Option<u16>,
        reason: Cow<'static, str>,
    },
}

/// What became of a broadcast handed to [`Peer::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    /// Queued, and the subscriber now has half its broadcast budget or more waiting:
    /// whoever wrote the broadcast should let it catch up (see the module's doc).
    Crowded,
    /// Not queued: the subscriber is too slow (it is being closed) or gone.
    Dropped,
}

/// What one broadcast did across its subscribers: how many took it, and whether
/// one of them was left crowded (so its writer should be paced).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) delivered: u64,
    pub(crate) crowded: bool,
}

impl Tally {
    /// Count one subscriber's delivery; returns whether it was queued.
    pub(crate) fn count(&mut self, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Queued => self.delivered += 1,
            Delivery::Crowded => {
                self.delivered += 1;
                self.crowded = true;
            }
            Delivery::Dropped => return false,
        }
        true
    }
}

/// An outbox entry: the item and whether the connection caused it.
#[derive(Debug)]
pub(crate) struct Queued {
    item: Outgoing,
    own: bool,
}

pub struct Peer {
    pub(crate) conn_id: u64,
    json: AtomicBool,
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer(conn-{})", self.conn_id)
    }
}

/// The outbox proper, shared by the [`Peer`] (the sending side) and the [`Outbox`].
struct Queue {
    items: Mutex<Items>,
    /// Signalled when an item lands in an empty queue and when the sending side is gone.
    ready: Notify,
    /// The connection's own items waiting (read by its loop without the lock).
    own: AtomicUsize,
    /// Signalled when the writer took own items.
    room: Notify,
    /// Set with `overflowed`: checked per delivery, where the token's lock would cost.
    slow: AtomicBool,
    /// A subscriber of this connection's writes is crowded: yield before reading on.
    pace: AtomicBool,
    overflowed: CancellationToken,
    /// Broadcasts that may wait before the connection counts as too slow.
    broadcast_budget: usize,
}

#[derive(Default)]
struct Items {
    queued: VecDeque<Queued>,
    /// Broadcasts of others' writes waiting.
    foreign: usize,
    /// The last [`Peer`] handle was dropped: nothing more will be queued.
    peer_gone: bool,
    /// The [`Outbox`] was dropped (the writer ended): items are refused.
    outbox_gone: bool,
}

impl Queue {
    fn items(&self) -> MutexGuard<'_, Items> {
        // Nothing panics while holding it; a poisoned queue is still a valid queue.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_slow(&self) {
        self.slow.store(true, Ordering::Relaxed);
        self.overflowed.cancel();
    }

    /// Account for `own` of the connection's own items taken by the writer.
    fn took_own(&self, own: usize) {
        if own > 0 {
            self.own.fetch_sub(own, Ordering::Relaxed);
            self.room.notify_one();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.queue.items().peer_gone = true;
        self.queue.ready.notify_one();
    }
}

/// The writer task's end of a connection's outbox.
pub struct Outbox {
    queue: Arc<Queue>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut items = self.queue.items();
        items.outbox_gone = true;
        // Dropped outside the lock: a broadcast's last reference may free frames.
        let queued = std::mem::take(&mut items.queued);
        drop(items);
        drop(queued);
    }
}

impl Outbox {
    /// The next item; `None` once every [`Peer`] handle is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            {
                let mut items = self.queue.items();
                if let Some(Queued { item, own }) = pop(&mut items) {
                    drop(items);
                    self.queue.took_own(usize::from(own));
                    return Some(item);
                }
                if items.peer_gone {
                    return None;
                }
            }
            // An item queued after the check above leaves a permit: no wake-up is lost.
            self.queue.ready.notified().await;
        }
    }

    /// The next item if one is queued now (tests; the writer takes bursts).
    #[cfg(any(test, feature = "test-util"))]
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let Queued { item, own } = pop(&mut self.queue.items())?;
        self.queue.took_own(usize::from(own));
        Some(item)
    }

    /// Up to `max` of the items queued now, appended to `into`, taken under one lock
    /// (the rest of a writer's burst).
    pub(crate) fn try_recv_many(&mut self, max: usize, into: &mut Vec<Outgoing>) {
        let mut own = 0;
        {
            let mut items = self.queue.items();
            while into.len() < max {
                let Some(queued) = pop(&mut items) else { break };
                own += usize::from(queued.own);
                into.push(queued.item);
            }
        }
        self.queue.took_own(own);
    }

    /// Mark the connection too slow (its socket write stalled): it is closed.
    pub(crate) fn mark_slow(&self) {
        self.queue.mark_slow();
    }

    /// Cancelled when the connection is too slow (see [`Peer::overflowed`]).
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.queue.overflowed
    }
}

/// The front item; a drained queue over [`RETAINED_SLOTS`] gives its memory back.
fn pop(items: &mut Items) -> Option<Queued> {
    let queued = items.queued.pop_front()?;
    if !queued.own {
        items.foreign -= 1;
    }
    if items.queued.is_empty() && items.queued.capacity() > RETAINED_SLOTS {
        items.queued = VecDeque::new();
    }
    Some(queued)
}

impl Peer {
    /// A peer with the default broadcast budget, and the outbox its writer drains
    /// (tests; a connection's budget is configured).
    #[cfg(any(test, feature = "test-util"))]
    pub fn new(conn_id: u64) -> (Arc<Peer>, Outbox) {
        Peer::with_broadcast_budget(conn_id, DEFAULT_BROADCAST_BUDGET)
    }

    /// A peer that may have `broadcast_budget` broadcasts unsent before it is closed
    /// as too slow, and the outbox its writer task drains.
    pub fn with_broadcast_budget(conn_id: u64, broadcast_budget: usize) -> (Arc<Peer>, Outbox) {
        let queue = Arc::new(Queue {
            broadcast_budget,
            items: Mutex::new(Items::default()),
            ready: Notify::new(),
            own: AtomicUsize::new(0),
            room: Notify::new(),
            slow: AtomicBool::new(false),
            pace: AtomicBool::new(false),
            overflowed: CancellationToken::new(),
        });
        let peer = Arc::new(Peer {
            conn_id,
            json: AtomicBool::new(false),
            queue: queue.clone(),
        });
        (peer, Outbox { queue })
    }

    /// Reply encoding of this connection (fixed by its first data frame).
    pub(crate) fn encoding(&self) -> Encoding {
        if self.json.load(Ordering::Relaxed) {
            Encoding::Json
        } else {
            Encoding::Binary
        }
    }

    pub(crate) fn set_encoding(&self, encoding: Encoding) {
        self.json
            .store(encoding == Encoding::Json, Ordering::Relaxed);
    }

    /// Queue a broadcast of someone else's doing, without waiting. Past its broadcast
    /// budget it is dropped and the peer is marked as overflowed so its connection
    /// closes; from half the budget on it is [`Delivery::Crowded`].
    pub(crate) fn deliver(&self, item: Outgoing) -> Delivery {
        if self.queue.slow.load(Ordering::Relaxed) {
            return Delivery::Dropped;
        }
        match self.push(item, false) {
            None => Delivery::Dropped,
            Some(waiting) if waiting * 2 >= self.queue.broadcast_budget => Delivery::Crowded,
            Some(_) => Delivery::Queued,
        }
    }

    /// Queue something this connection caused (a reply, the echo of its own write,
    /// a ping). Never refused for being slow: the connection stops reading instead
    /// (see [`Peer::own_backlogged`]).
    pub(crate) fn send_own(&self, item: Outgoing) -> bool {
        self.push(item, true).is_some()
    }

    /// [`Peer::send_own`] as a [`Delivery`]: never crowded, as an own item is not
    /// counted against the broadcast budget.
    pub(crate) fn deliver_own(&self, item: Outgoing) -> Delivery {
        if self.send_own(item) {
            Delivery::Queued
        } else {
            Delivery::Dropped
        }
    }

    /// Queue an item; `None` when it was refused, else the broadcasts now waiting.
    fn push(&self, item: Outgoing, own: bool) -> Option<usize> {
        let (was_empty, foreign) = {
            let mut items = self.queue.items();
            if items.outbox_gone {
                return None;
            }
            if own {
                self.queue.own.fetch_add(1, Ordering::Relaxed);
            } else if items.foreign >= self.queue.broadcast_budget {
                drop(items);
                self.queue.mark_slow();
                return None;
            } else {
                items.foreign += 1;
            }
            let was_empty = items.queued.is_empty();
            items.queued.push_back(Queued { item, own });
            (was_empty, items.foreign)
        };
        // A writer that has not yet seen the queue empty takes this item with the
        // ones before it; only an item into an empty queue needs to wake it.
        if was_empty {
            self.queue.ready.notify_one();
        }
        Some(foreign)
    }

    /// Ask this connection to yield before it reads its next frame: a subscriber of
    /// its writes is crowded (see the module's doc).
    pub(crate) fn ask_to_pace(&self) {
        self.queue.pace.store(true, Ordering::Relaxed);
    }

    /// Whether this connection was asked to pace since the last call (which clears it).
    pub(crate) fn take_pace_request(&self) -> bool {
        // A load first: the common answer (no) writes nothing to the shared line.
        self.queue.pace.load(Ordering::Relaxed) && self.queue.pace.swap(false, Ordering::Relaxed)
    }

    /// Whether this connection's own items fill their budget: its socket is not read
    /// until they drain.
    pub(crate) fn own_backlogged(&self) -> bool {
        self.queue.own.load(Ordering::Relaxed) >= OWN_BUDGET
    }

    /// Resolves after the writer took some of this connection's own items (re-check
    /// [`Peer::own_backlogged`]).
    pub(crate) async fn room(&self) {
        self.queue.room.notified().await;
    }

    /// Cancelled when the client is too slow: a broadcast found the outbox over its
    /// budget, or the writer found a socket write stalled past the write timeout.
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.queue.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Outgoing {
        Outgoing::Ping
    }

    #[tokio::test]
    async fn own_items_never_overflow_and_foreign_ones_do() {
        let (peer, mut outbox) = Peer::new(1);
        for _ in 0..OWN_BUDGET * 3 {
            assert!(peer.send_own(frame()));
        }
        assert!(!peer.overflowed().is_cancelled(), "own items never close");
        assert!(peer.own_backlogged());
        for _ in 0..DEFAULT_BROADCAST_BUDGET {
            assert_ne!(peer.deliver(frame()), Delivery::Dropped);
        }
        assert!(!peer.overflowed().is_cancelled());
        assert_eq!(peer.deliver(frame()), Delivery::Dropped, "over the foreign budget");
        assert!(peer.overflowed().is_cancelled());
        // Draining own items makes room again.
        for _ in 0..OWN_BUDGET * 2 + 1 {
            outbox.recv().await.expect("queued");
        }
        assert!(!peer.own_backlogged());
        tokio::time::timeout(std::time::Duration::from_secs(1), peer.room())
            .await
            .expect("room signalled");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_memory_back_and_ends_with_its_peer() {
        let (peer, mut outbox) = Peer::new(1);
        assert_eq!(peer.queue.items().queued.capacity(), 0, "idle: no queue");
        for _ in 0..100 {
            assert!(peer.send_own(frame()));
        }
        for _ in 0..100 {
            outbox.recv().await.expect("queued");
        }
        assert!(peer.queue.items().queued.capacity() <= RETAINED_SLOTS);
        assert!(outbox.try_recv().is_none());
        let waiting = tokio::spawn(async move { outbox.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(peer);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("recv ends");
        assert!(ended.expect("joined"), "no item after the peer is gone");
    }

    #[test]
    fn a_burst_is_taken_at_once_and_frees_both_budgets() {
        let (peer, mut outbox) = Peer::new(1);
        for _ in 0..OWN_BUDGET {
            assert!(peer.send_own(frame()));
        }
        for _ in 0..DEFAULT_BROADCAST_BUDGET {
            assert_ne!(peer.deliver(frame()), Delivery::Dropped);
        }
        assert!(peer.own_backlogged());
        let mut burst = Vec::new();
        outbox.try_recv_many(OWN_BUDGET + 10, &mut burst);
        assert_eq!(burst.len(), OWN_BUDGET + 10, "at most `max`");
        assert!(
            !peer.own_backlogged(),
            "the own items taken are no longer counted"
        );
        assert_ne!(peer.deliver(frame()), Delivery::Dropped, "ten broadcasts taken: room for more");
        outbox.try_recv_many(usize::MAX, &mut burst);
        assert_eq!(burst.len(), OWN_BUDGET + DEFAULT_BROADCAST_BUDGET + 1);
        for _ in 0..DEFAULT_BROADCAST_BUDGET {
            assert_ne!(peer.deliver(frame()), Delivery::Dropped, "the budget is whole again");
        }
        assert!(!peer.overflowed().is_cancelled());
    }

    #[tokio::test]
    async fn items_into_a_busy_queue_still_reach_a_waiting_writer() {
        // Only an item into an empty queue wakes the writer: every other one must be
        // taken with the items before it, whatever the interleaving.
        let (peer, mut outbox) = Peer::new(1);
        let writer = tokio::spawn(async move {
            let mut got = 0;
            let mut burst = Vec::new();
            while outbox.recv().await.is_some() {
                got += 1;
                if got % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                outbox.try_recv_many(2, &mut burst);
                got += burst.len();
                burst.clear();
            }
            got
        });
        for round in 0..200 {
            for _ in 0..(round % 5) {
                assert!(peer.send_own(frame()));
            }
            tokio::task::yield_now().await;
        }
        let sent: usize = (0..200).map(|round| round % 5).sum();
        drop(peer);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer ends")
            .expect("joined");
        assert_eq!(got, sent);
    }

    #[test]
    fn a_stalled_writer_marks_the_peer_slow() {
        let (peer, outbox) = Peer::new(1);
        assert_ne!(peer.deliver(frame()), Delivery::Dropped);
        outbox.mark_slow();
        assert!(peer.overflowed().is_cancelled());
        assert_eq!(
            peer.deliver(frame()),
            Delivery::Dropped,
            "no broadcast queued for a slow client"
        );
        assert!(
            peer.send_own(frame()),
            "its own items still are (its close)"
        );
    }

    #[test]
    fn nothing_is_queued_once_the_writer_is_gone() {
        let (peer, outbox) = Peer::new(1);
        drop(outbox);
        assert!(!peer.send_own(frame()));
        assert_eq!(peer.deliver(frame()), Delivery::Dropped);
    }

    #[test]
    fn a_broadcast_into_half_the_budget_is_crowded_and_own_items_do_not_count() {
        let (peer, mut outbox) = Peer::with_broadcast_budget(1, 8);
        for _ in 0..20 {
            assert!(peer.send_own(frame()));
        }
        for _ in 0..3 {
            assert_eq!(peer.deliver(frame()), Delivery::Queued);
        }
        assert_eq!(peer.deliver(frame()), Delivery::Crowded, "4 of 8 waiting");
        let mut burst = Vec::new();
        outbox.try_recv_many(usize::MAX, &mut burst);
        assert_eq!(peer.deliver(frame()), Delivery::Queued, "drained: room again");
    }

    #[test]
    fn a_pace_request_is_taken_once() {
        let (peer, _outbox) = Peer::new(1);
        assert!(!peer.take_pace_request());
        peer.ask_to_pace();
        peer.ask_to_pace();
        assert!(peer.take_pace_request());
        assert!(!peer.take_pace_request(), "cleared by the first take");
    }
}
