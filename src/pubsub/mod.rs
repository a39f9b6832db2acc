//! Pub/sub seam between instances (STORAGE.md §6.4). The server publishes every
//! broadcast flush, text relay and accepted awareness update; the relay applies what
//! other instances publish. Publishing never blocks the sync path: an implementation
//! queues or drops (and counts the drop).

pub mod local;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use local::{LocalBus, LocalPubSub};

/// A message received from another instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub channel: String,
    pub payload: Bytes,
}

/// Channel names (C#-compatible).
#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
}

impl Channels {
    pub fn new(prefix: impl Into<String>) -> Channels {
        Channels {
            prefix: prefix.into(),
        }
    }

    pub fn delta(&self, document_id: &str) -> String {
        format!("{}delta:{document_id}", self.prefix)
    }

    pub fn awareness(&self, document_id: &str) -> String {
        format!("{}awareness:{document_id}", self.prefix)
    }

    pub fn presence(&self) -> String {
        format!("{}presence", self.prefix)
    }

    /// The document id of a delta or awareness channel.
    pub fn document_of<'a>(&self, channel: &'a str) -> Option<(ChannelKind, &'a str)> {
        let rest = channel.strip_prefix(self.prefix.as_str())?;
        if let Some(doc) = rest.strip_prefix("delta:") {
            Some((ChannelKind::Delta, doc))
        } else {
            rest.strip_prefix("awareness:")
                .map(|doc| (ChannelKind::Awareness, doc))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Delta,
    Awareness,
}

/// Connection state, for health and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubState {
    /// No other instances can exist (in-process bus).
    SingleInstance,
    Connected,
    Disconnected,
}

pub trait PubSub: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Queue a message; never blocks.
    fn publish(&self, channel: &str, payload: Bytes);

    /// Start receiving a channel (idempotent).
    fn subscribe(&self, channel: &str);

    /// Stop receiving a channel (idempotent).
    fn unsubscribe(&self, channel: &str);

    /// The stream of received messages; can be taken once (by the relay).
    fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>>;

    fn state(&self) -> PubSubState;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_csharp_compatible() {
        let c = Channels::new("synckit:");
        assert_eq!(c.delta("doc-1"), "synckit:delta:doc-1");
        assert_eq!(c.awareness("doc-1"), "synckit:awareness:doc-1");
        assert_eq!(c.presence(), "synckit:presence");
        assert_eq!(
            c.document_of("synckit:delta:a:b"),
            Some((ChannelKind::Delta, "a:b"))
        );
        assert_eq!(
            c.document_of("synckit:awareness:x"),
            Some((ChannelKind::Awareness, "x"))
        );
        assert_eq!(c.document_of("other:delta:x"), None);
        assert_eq!(c.document_of("synckit:presence"), None);
    }
}
