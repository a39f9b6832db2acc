//! The replies to one connection's writes, released in the order the writes arrived
//! (docs/protocol.md §7.11): an ack decided at submission waits behind the acks of
//! earlier writes still waiting for the database.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::protocol::ServerMessage;
use crate::storage::{PersistTicket, StorageError};

/// Most replies one connection may have queued; at the bound its socket is not read
/// until the oldest leaves (docs/protocol.md §7.11), so a connection whose earliest
/// write waits on an unreachable database cannot queue replies without end.
pub(crate) const MAX_QUEUED_ACKS: usize = 10_000;

type AckFuture = Pin<Box<dyn Future<Output = ServerMessage> + Send + Sync>>;

/// A FIFO of write replies. Every entry in `decided` precedes every entry in
/// `waiting`: a decided reply goes to `decided` only while nothing waits (no
/// allocation on the common path, where every write is already durable or needs no
/// write), else it is queued behind the waiting ones as a future that is ready.
#[derive(Default)]
pub(crate) struct AckQueue {
    decided: VecDeque<ServerMessage>,
    /// Released in push order, whichever completes first.
    waiting: FuturesOrdered<AckFuture>,
}

impl AckQueue {
    pub(crate) fn new() -> AckQueue {
        AckQueue::default()
    }

    /// Queue the reply of a write that is durable once every ticket is: `reply`
    /// turns the first failure (or success) into the message.
    pub(crate) fn push<F>(&mut self, tickets: Vec<PersistTicket>, reply: F)
    where
        F: FnOnce(Result<(), StorageError>) -> ServerMessage + Send + Sync + 'static,
    {
        let decided: Option<Vec<Result<(), StorageError>>> =
            tickets.iter().map(PersistTicket::ready).collect();
        if let Some(outcomes) = decided {
            let outcome = outcomes.into_iter().find(Result::is_err).unwrap_or(Ok(()));
            self.push_decided(reply(outcome));
            return;
        }
        self.waiting.push_back(Box::pin(async move {
            let mut outcome = Ok(());
            for ticket in tickets {
                if let Err(e) = ticket.wait().await {
                    outcome = Err(e);
                }
            }
            reply(outcome)
        }));
    }

    /// Queue a reply already known, behind every reply queued before it.
    fn push_decided(&mut self, msg: ServerMessage) {
        if self.waiting.is_empty() {
            self.decided.push_back(msg);
        } else {
            self.waiting.push_back(Box::pin(std::future::ready(msg)));
        }
    }

    /// The oldest reply, once it and every reply before it are decided. Pending
    /// forever when the queue is empty, so it can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> ServerMessage {
        if let Some(msg) = self.decided.pop_front() {
            return msg;
        }
        match self.waiting.next().await {
            Some(msg) => msg,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.decided.len() + self.waiting.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At [`MAX_QUEUED_ACKS`]: read no more writes until one leaves.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= MAX_QUEUED_ACKS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    fn ack(id: &str) -> ServerMessage {
        ServerMessage::Ack {
            message_id: id.to_owned(),
        }
    }

    fn acked(id: &'static str) -> impl FnOnce(Result<(), StorageError>) -> ServerMessage {
        move |outcome| match outcome {
            Ok(()) => ack(id),
            Err(e) => ServerMessage::error(format!("{id}: {e}"), None),
        }
    }

    fn waiting() -> (oneshot::Sender<Result<(), StorageError>>, PersistTicket) {
        let (tx, rx) = oneshot::channel();
        (tx, PersistTicket::waiting(rx))
    }

    /// The next reply if one may leave now (no waiting, no sleeping).
    fn poll(q: &mut AckQueue) -> Option<ServerMessage> {
        q.next().now_or_never()
    }

    #[test]
    fn a_decided_ack_waits_behind_an_earlier_pending_one() {
        let mut q = AckQueue::new();
        let (tx1, t1) = waiting();
        q.push(vec![t1], acked("m1"));
        // Nothing to persist: decided at submission.
        q.push(vec![PersistTicket::done(Ok(()))], acked("m2"));
        q.push_decided(ack("m3"));
        assert_eq!(q.len(), 3);
        assert_eq!(poll(&mut q), None, "m2 must not overtake m1");
        tx1.send(Ok(())).expect("receiver");
        assert_eq!(poll(&mut q), Some(ack("m1")));
        assert_eq!(poll(&mut q), Some(ack("m2")));
        assert_eq!(poll(&mut q), Some(ack("m3")));
        assert_eq!(poll(&mut q), None);
        assert!(q.is_empty());
    }

    #[test]
    fn tickets_completed_out_of_order_release_in_arrival_order() {
        let mut q = AckQueue::new();
        q.push(vec![PersistTicket::done(Ok(()))], acked("m0"));
        let (tx1, t1) = waiting();
        let (tx2a, t2a) = waiting();
        let (tx2b, t2b) = waiting();
        let (tx3, t3) = waiting();
        q.push(vec![t1], acked("m1"));
        q.push(vec![t2a, t2b], acked("m2"));
        q.push(vec![PersistTicket::done(Ok(()))], acked("m2b"));
        q.push(vec![t3], acked("m3"));
        // m0 was decided before anything waited: it leaves at once.
        assert_eq!(poll(&mut q), Some(ack("m0")));
        tx3.send(Ok(())).expect("receiver");
        tx2b.send(Ok(())).expect("receiver");
        assert_eq!(poll(&mut q), None, "m3 and m2 wait for m1");
        tx1.send(Ok(())).expect("receiver");
        assert_eq!(poll(&mut q), Some(ack("m1")));
        assert_eq!(poll(&mut q), None, "m2 waits for its second ticket");
        tx2a.send(Err(StorageError::Unavailable("down".into())))
            .expect("receiver");
        let Some(ServerMessage::Error { error, .. }) = poll(&mut q) else {
            panic!("m2 failed: its error, in its place");
        };
        assert!(error.starts_with("m2:"), "{error}");
        assert_eq!(poll(&mut q), Some(ack("m2b")));
        assert_eq!(poll(&mut q), Some(ack("m3")));
        assert!(q.is_empty());
    }

    #[test]
    fn a_dropped_ticket_answers_with_an_error_in_its_place() {
        let mut q = AckQueue::new();
        let (tx1, t1) = waiting();
        q.push(vec![t1], acked("m1"));
        q.push_decided(ack("m2"));
        drop(tx1);
        assert!(matches!(poll(&mut q), Some(ServerMessage::Error { .. })));
        assert_eq!(poll(&mut q), Some(ack("m2")));
    }

    #[test]
    fn the_queue_is_full_at_its_bound() {
        let mut q = AckQueue::new();
        let (_tx, t) = waiting();
        q.push(vec![t], acked("m0"));
        for _ in 1..MAX_QUEUED_ACKS {
            assert!(!q.is_full());
            q.push_decided(ack("m"));
        }
        assert!(q.is_full());
        assert_eq!(poll(&mut q), None);
    }
}
