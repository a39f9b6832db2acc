//! Pub/sub seam between instances (docs/storage.md §6.4). The server publishes every
//! broadcast flush, text relay and accepted awareness update; the relay applies what
//! other instances publish. Publishing never blocks the sync path: an implementation
//! queues or drops (and counts the drop).

pub(crate) mod local;
pub(crate) mod presence;
pub(crate) mod recent;
pub(crate) mod redis;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

pub use local::LocalPubSub;
pub(crate) use presence::Fleet;
pub(crate) use recent::RecentIds;
pub use redis::{RedisPubSub, RedisSettings, RedisTarget};

/// A message received from another instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub(crate) channel: String,
    pub(crate) payload: Bytes,
}

/// Channel names (C#-compatible).
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    prefix: String,
}

impl Channels {
    pub(crate) fn new(prefix: impl Into<String>) -> Channels {
        Channels {
            prefix: prefix.into(),
        }
    }

    /// The channel prefix (`synckit:` by default), also used for fleet claim keys.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn delta(&self, document_id: &str) -> String {
        format!("{}delta:{document_id}", self.prefix)
    }

    pub(crate) fn awareness(&self, document_id: &str) -> String {
        format!("{}awareness:{document_id}", self.prefix)
    }

    pub(crate) fn presence(&self) -> String {
        format!("{}presence", self.prefix)
    }

    /// The document id of a delta or awareness channel.
    pub(crate) fn document_of<'a>(&self, channel: &'a str) -> Option<(ChannelKind, &'a str)> {
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
pub(crate) enum ChannelKind {
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

/// Counters and connection details for `/health/ready`, `/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PubSubHealth {
    /// Messages handed to the backend that never reached it (queue full, or the
    /// connection was down).
    pub dropped: u64,
    /// Received messages dropped because the relay fell behind.
    pub(crate) receive_dropped: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Round trip of the last health `PING`, when connected.
    pub ping_ms: Option<f64>,
    /// The last connection error, for operators.
    pub(crate) last_error: Option<String>,
}

/// Announced each time the backend (re)connects, after every channel of local
/// interest is subscribed again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection {
    /// Successful connections so far (0 = never connected).
    pub(crate) epoch: u64,
    /// Messages may have been missed before this connection (a connection was lost,
    /// or attempts failed while the server was already serving): documents need a
    /// resynchronisation.
    pub(crate) after_outage: bool,
}

#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Queue a message; never blocks.
    fn publish(&self, channel: &str, payload: Bytes);

    /// Start receiving a channel. Calls are counted per channel: the channel is
    /// received while subscribes outnumber unsubscribes, so independent users (the
    /// hub, presence) need not know about each other.
    fn subscribe(&self, channel: &str);

    /// Undo one `subscribe` (extra calls are ignored).
    fn unsubscribe(&self, channel: &str);

    /// The stream of received messages; can be taken once (by the relay).
    fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>>;

    fn state(&self) -> PubSubState;

    fn health(&self) -> PubSubHealth {
        PubSubHealth::default()
    }

    /// (Re)connection announcements; `None` for backends that never disconnect.
    fn connections(&self) -> Option<watch::Receiver<Connection>> {
        None
    }

    /// Send what is still queued (bounded by the backend's own budget) and stop.
    async fn close(&self) {}

    /// Claim `key` fleet-wide for `ttl` (a maintenance occurrence when there is no
    /// database to record the claim): `Ok(true)` when this instance got it. An
    /// instance alone always does.
    async fn try_claim(&self, _key: &str, _ttl: std::time::Duration) -> Result<bool, String> {
        Ok(true)
    }
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
