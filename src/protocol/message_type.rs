//! Message type codes (binary header byte) and their snake_case names (JSON `type`).

/// Every message type of docs/protocol.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Connect,
    Auth,
    AuthSuccess,
    AuthError,
    Subscribe,
    Unsubscribe,
    SyncRequest,
    SyncResponse,
    SyncStep1,
    SyncStep2,
    Delta,
    Ack,
    DeltaBatchChunk,
    Ping,
    Pong,
    AwarenessUpdate,
    AwarenessSubscribe,
    AwarenessState,
    DeltaBatch,
    SnapshotRequest,
    SnapshotUpload,
    Error,
}

impl MessageType {
    /// All types, in a fixed order used for per-type counters.
    pub(crate) const ALL: [MessageType; 22] = [
        MessageType::Connect,
        MessageType::Auth,
        MessageType::AuthSuccess,
        MessageType::AuthError,
        MessageType::Subscribe,
        MessageType::Unsubscribe,
        MessageType::SyncRequest,
        MessageType::SyncResponse,
        MessageType::SyncStep1,
        MessageType::SyncStep2,
        MessageType::Delta,
        MessageType::Ack,
        MessageType::DeltaBatchChunk,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::AwarenessUpdate,
        MessageType::AwarenessSubscribe,
        MessageType::AwarenessState,
        MessageType::DeltaBatch,
        MessageType::SnapshotRequest,
        MessageType::SnapshotUpload,
        MessageType::Error,
    ];

    /// Position in [`MessageType::ALL`], for counter arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Binary type code. `connect` and the snapshot messages exist only in JSON.
    pub fn code(self) -> Option<u8> {
        Some(match self {
            MessageType::Auth => 0x01,
            MessageType::AuthSuccess => 0x02,
            MessageType::AuthError => 0x03,
            MessageType::Subscribe => 0x10,
            MessageType::Unsubscribe => 0x11,
            MessageType::SyncRequest => 0x12,
            MessageType::SyncResponse => 0x13,
            MessageType::SyncStep1 => 0x14,
            MessageType::SyncStep2 => 0x15,
            MessageType::Delta => 0x20,
            MessageType::Ack => 0x21,
            MessageType::DeltaBatchChunk => 0x23,
            MessageType::Ping => 0x30,
            MessageType::Pong => 0x31,
            MessageType::AwarenessUpdate => 0x40,
            MessageType::AwarenessSubscribe => 0x41,
            MessageType::AwarenessState => 0x42,
            MessageType::DeltaBatch => 0x50,
            MessageType::Error => 0xFF,
            MessageType::Connect | MessageType::SnapshotRequest | MessageType::SnapshotUpload => {
                return None
            }
        })
    }

    /// Type for an inbound binary code. `0x22` is the Go/Python servers' `delta_batch`
    /// code; accepting it is harmless because no client uses it for anything else.
    pub fn from_code(code: u8) -> Option<MessageType> {
        Some(match code {
            0x01 => MessageType::Auth,
            0x02 => MessageType::AuthSuccess,
            0x03 => MessageType::AuthError,
            0x10 => MessageType::Subscribe,
            0x11 => MessageType::Unsubscribe,
            0x12 => MessageType::SyncRequest,
            0x13 => MessageType::SyncResponse,
            0x14 => MessageType::SyncStep1,
            0x15 => MessageType::SyncStep2,
            0x20 => MessageType::Delta,
            0x21 => MessageType::Ack,
            0x22 | 0x50 => MessageType::DeltaBatch,
            0x23 => MessageType::DeltaBatchChunk,
            0x30 => MessageType::Ping,
            0x31 => MessageType::Pong,
            0x40 => MessageType::AwarenessUpdate,
            0x41 => MessageType::AwarenessSubscribe,
            0x42 => MessageType::AwarenessState,
            0xFF => MessageType::Error,
            _ => return None,
        })
    }

    /// The snake_case `type` string.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Connect => "connect",
            MessageType::Auth => "auth",
            MessageType::AuthSuccess => "auth_success",
            MessageType::AuthError => "auth_error",
            MessageType::Subscribe => "subscribe",
            MessageType::Unsubscribe => "unsubscribe",
            MessageType::SyncRequest => "sync_request",
            MessageType::SyncResponse => "sync_response",
            MessageType::SyncStep1 => "sync_step1",
            MessageType::SyncStep2 => "sync_step2",
            MessageType::Delta => "delta",
            MessageType::Ack => "ack",
            MessageType::DeltaBatchChunk => "delta_batch_chunk",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::AwarenessUpdate => "awareness_update",
            MessageType::AwarenessSubscribe => "awareness_subscribe",
            MessageType::AwarenessState => "awareness_state",
            MessageType::DeltaBatch => "delta_batch",
            MessageType::SnapshotRequest => "snapshot_request",
            MessageType::SnapshotUpload => "snapshot_upload",
            MessageType::Error => "error",
        }
    }

    /// Type for a JSON `type` string (exact, snake_case).
    pub fn from_name(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether a client may send this type (TS validator list, docs/protocol.md §3).
    pub fn is_client_sendable(self) -> bool {
        matches!(
            self,
            MessageType::Connect
                | MessageType::Auth
                | MessageType::Subscribe
                | MessageType::Unsubscribe
                | MessageType::SyncRequest
                | MessageType::SyncStep1
                | MessageType::Delta
                | MessageType::DeltaBatch
                | MessageType::DeltaBatchChunk
                | MessageType::Ack
                | MessageType::AwarenessSubscribe
                | MessageType::AwarenessUpdate
                | MessageType::SnapshotRequest
                | MessageType::SnapshotUpload
                | MessageType::Ping
                | MessageType::Pong
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (i, t) in MessageType::ALL.iter().enumerate() {
            assert_eq!(t.index(), i, "{t:?}");
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_name(t.name()), Some(t));
            if let Some(code) = t.code() {
                assert_eq!(MessageType::from_code(code), Some(t));
            }
        }
        assert_eq!(MessageType::from_code(0x22), Some(MessageType::DeltaBatch));
        assert_eq!(MessageType::from_code(0x50), Some(MessageType::DeltaBatch));
        assert_eq!(MessageType::from_code(0x99), None);
        assert_eq!(MessageType::from_name("SyncRequest"), None);
    }
}
