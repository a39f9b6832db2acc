//! A connection as seen by the hub: where its outbound frames go.
//!
//! The outbox is bounded. A subscriber that cannot keep up (its outbox is full) is
//! not waited for — that would stall every other subscriber — it is marked for
//! closing (`1013 Client too slow`) and the delivery is counted as dropped.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{EncodedFrame, Encoding};

/// Outbound items a connection's writer task sends, in order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Frame(EncodedFrame),
    /// One broadcast flush, shared by every subscriber with this encoding.
    Frames(Arc<[EncodedFrame]>),
    /// A WebSocket protocol ping (never an application-level `ping`).
    Ping,
    Close {
        code: u16,
        reason: Cow<'static, str>,
    },
}

pub struct Peer {
    pub conn_id: u64,
    json: AtomicBool,
    tx: mpsc::Sender<Outgoing>,
    overflowed: CancellationToken,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer(conn-{})", self.conn_id)
    }
}

impl Peer {
    pub fn new(conn_id: u64, tx: mpsc::Sender<Outgoing>) -> Arc<Peer> {
        Arc::new(Peer {
            conn_id,
            json: AtomicBool::new(false),
            tx,
            overflowed: CancellationToken::new(),
        })
    }

    /// Reply encoding of this connection (fixed by its first data frame).
    pub fn encoding(&self) -> Encoding {
        if self.json.load(Ordering::Relaxed) {
            Encoding::Json
        } else {
            Encoding::Binary
        }
    }

    pub fn set_encoding(&self, encoding: Encoding) {
        self.json
            .store(encoding == Encoding::Json, Ordering::Relaxed);
    }

    /// Queue without waiting. Returns false when the item was dropped; a full outbox
    /// marks the peer as overflowed so its connection closes.
    pub fn deliver(&self, item: Outgoing) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queue, waiting for room: for replies to this connection's own requests, where
    /// back-pressure on the sender is the right behaviour.
    pub async fn send(&self, item: Outgoing) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Cancelled when a broadcast found the outbox full.
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }
}
