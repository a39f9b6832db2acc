//! In-process pub/sub: instances that share one [`LocalBus`] see each other's
//! messages. A server with its own bus is a single instance (the default); tests
//! run several hubs on one bus to exercise the relay without Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Incoming, PubSub, PubSubState};

/// Messages a member may have queued before further ones are dropped (and counted).
const MEMBER_QUEUE: usize = 4096;

struct Member {
    id: u64,
    /// Channel → subscribe calls not yet undone.
    channels: HashMap<String, usize>,
    tx: mpsc::Sender<Incoming>,
}

/// The shared medium.
#[derive(Default)]
pub(crate) struct LocalBus {
    members: Mutex<Vec<Member>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl LocalBus {
    pub(crate) fn new() -> Arc<LocalBus> {
        Arc::new(LocalBus::default())
    }

    /// Deliveries dropped because a member's queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One instance's handle on a bus.
pub struct LocalPubSub {
    bus: Arc<LocalBus>,
    id: u64,
    rx: Mutex<Option<mpsc::Receiver<Incoming>>>,
    alone: bool,
}

impl LocalPubSub {
    /// Join a shared bus.
    pub(crate) fn join(bus: Arc<LocalBus>) -> LocalPubSub {
        let id = bus.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        if let Ok(mut members) = bus.members.lock() {
            members.push(Member {
                id,
                channels: HashMap::new(),
                tx,
            });
        }
        LocalPubSub {
            bus,
            id,
            rx: Mutex::new(Some(rx)),
            alone: false,
        }
    }

    /// A bus of one: the single-instance default.
    pub fn single_instance() -> LocalPubSub {
        let mut me = LocalPubSub::join(LocalBus::new());
        me.alone = true;
        me
    }

    fn with_self(&self, f: impl FnOnce(&mut Member)) {
        if let Ok(mut members) = self.bus.members.lock() {
            if let Some(me) = members.iter_mut().find(|m| m.id == self.id) {
                f(me);
            }
        }
    }
}

impl Drop for LocalPubSub {
    fn drop(&mut self) {
        if let Ok(mut members) = self.bus.members.lock() {
            members.retain(|m| m.id != self.id);
        }
    }
}

#[async_trait::async_trait]
impl PubSub for LocalPubSub {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn publish(&self, channel: &str, payload: Bytes) {
        let Ok(members) = self.bus.members.lock() else {
            return;
        };
        for m in members
            .iter()
            .filter(|m| m.id != self.id && m.channels.contains_key(channel))
        {
            let msg = Incoming {
                channel: channel.to_owned(),
                payload: payload.clone(),
            };
            if m.tx.try_send(msg).is_err() {
                self.bus.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn subscribe(&self, channel: &str) {
        self.with_self(|m| {
            *m.channels.entry(channel.to_owned()).or_insert(0) += 1;
        });
    }

    fn unsubscribe(&self, channel: &str) {
        self.with_self(|m| {
            if let Some(n) = m.channels.get_mut(channel) {
                *n -= 1;
                if *n == 0 {
                    m.channels.remove(channel);
                }
            }
        });
    }

    fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        self.rx.lock().ok()?.take()
    }

    fn state(&self) -> PubSubState {
        if self.alone {
            PubSubState::SingleInstance
        } else {
            PubSubState::Connected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn members_receive_subscribed_channels_from_others_only() {
        let bus = LocalBus::new();
        let a = LocalPubSub::join(bus.clone());
        let b = LocalPubSub::join(bus.clone());
        let mut b_rx = b.take_incoming().expect("rx");
        let mut a_rx = a.take_incoming().expect("rx");
        assert!(b.take_incoming().is_none(), "taken once");
        b.subscribe("c1");
        a.subscribe("c1");
        a.publish("c1", Bytes::from_static(b"hello"));
        a.publish("c2", Bytes::from_static(b"nobody"));
        let got = b_rx.recv().await.expect("message");
        assert_eq!(got.channel, "c1");
        assert_eq!(&got.payload[..], b"hello");
        assert!(a_rx.try_recv().is_err(), "no echo to the publisher");
        // Counted: two subscribes need two unsubscribes.
        b.subscribe("c1");
        b.unsubscribe("c1");
        a.publish("c1", Bytes::from_static(b"still"));
        assert_eq!(&b_rx.recv().await.expect("message").payload[..], b"still");
        b.unsubscribe("c1");
        b.unsubscribe("c1");
        a.publish("c1", Bytes::from_static(b"again"));
        assert!(b_rx.try_recv().is_err());
        assert_eq!(bus.dropped(), 0);
    }
}
