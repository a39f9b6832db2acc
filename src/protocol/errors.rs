//! The error catalogue (docs/protocol.md §12): the exact strings clients see.
//!
//! TS strings are kept byte-identical; the two Rust additions follow the same shape.

pub(crate) const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
pub(crate) const NOT_AUTHENTICATED: &str = "Not authenticated";
pub(crate) const AUTHENTICATION_REQUIRED: &str = "Authentication required";
pub(crate) const AUTHENTICATION_FAILED: &str = "Authentication failed";
pub const AUTHENTICATION_TIMEOUT: &str = "Authentication timeout";
pub const RATE_LIMITED: &str = "Too many messages. Please slow down.";
pub(crate) const PERMISSION_DENIED: &str = "Permission denied";
pub(crate) const ACCESS_DENIED: &str = "Access denied to this document";
pub(crate) const INVALID_DELTA: &str = "Invalid delta message: missing or empty delta";
pub(crate) const INVALID_DELTA_BATCH: &str = "Invalid delta batch: missing or empty deltas array";
pub(crate) const INVALID_CHUNK: &str = "Invalid chunk";
pub(crate) const INVALID_AWARENESS_STATE: &str = "Invalid awareness state format";
pub(crate) const INVALID_FIELD_NAME: &str = "Invalid field name";
pub(crate) const SUBSCRIBE_FAILED: &str = "Subscribe failed";
pub(crate) const SYNC_REQUEST_FAILED: &str = "Sync request failed";
pub(crate) const DELTA_FAILED: &str = "Delta application failed";
pub(crate) const DELTA_BATCH_FAILED: &str = "Delta batch application failed";
pub(crate) const AWARENESS_SUBSCRIBE_FAILED: &str = "Failed to subscribe to awareness";
pub(crate) const AWARENESS_UPDATE_FAILED: &str = "Failed to update awareness";
pub(crate) const WRITE_BACKLOG_FULL: &str = "Server write queue is full. Please retry.";
pub(crate) const NUL_CHARACTER: &str = "Message contains a NUL character";
pub(crate) const INVALID_CLOCK: &str =
    "Invalid vector clock: entries must be writer ids of 1-255 bytes with integer values from 0 to 9007199254740991, at most 4294967296 ahead of the document";
pub(crate) const AWARENESS_NOT_OWNER: &str = "Awareness client id belongs to another connection";
pub(crate) const SUBSCRIPTION_REVOKED: &str = "Subscription revoked: permission denied";

pub(crate) const CODE_INVALID_MESSAGE: &str = "INVALID_MESSAGE";
pub(crate) const CODE_RATE_LIMIT: &str = "RATE_LIMIT_EXCEEDED";
pub(crate) const CODE_AUTH_REQUIRED: &str = "AUTH_REQUIRED";
pub(crate) const CODE_BACKLOG_FULL: &str = "WRITE_BACKLOG_FULL";
pub(crate) const CODE_CLOCK_LIMIT: &str = "CLOCK_LIMIT";
pub(crate) const CODE_NOT_OWNER: &str = "NOT_OWNER";
pub(crate) const CODE_SUBSCRIPTION_REVOKED: &str = "SUBSCRIPTION_REVOKED";
pub(crate) const CODE_AWARENESS_LIMIT: &str = "AWARENESS_LIMIT";
pub(crate) const CODE_SUBSCRIPTION_LIMIT: &str = "SUBSCRIPTION_LIMIT";

/// `Awareness state too large (<n> bytes, max <max>)`.
pub(crate) fn awareness_state_too_large(size: usize, max: usize) -> String {
    format!("Awareness state too large ({size} bytes, max {max})")
}

/// `Too many awareness clients in this document (max <max>)`.
pub(crate) fn awareness_document_full(max: usize) -> String {
    format!("Too many awareness clients in this document (max {max})")
}

/// `Too many awareness clients on this connection (max <max>)`.
pub(crate) fn awareness_connection_full(max: usize) -> String {
    format!("Too many awareness clients on this connection (max {max})")
}

/// `Too many text states in one batch (<n>, max <max>)`.
pub(crate) fn too_many_text_ops(count: usize, max: usize) -> String {
    format!("Too many text states in one batch ({count}, max {max})")
}

/// `Too many subscriptions (max <max>)`.
pub(crate) fn too_many_subscriptions(max: usize) -> String {
    format!("Too many subscriptions (max {max})")
}

pub(crate) const CODE_TEXT_STATE_INVALID: &str = "TEXT_STATE_INVALID";
pub(crate) const CODE_TEXT_STATE_TOO_LARGE: &str = "TEXT_STATE_TOO_LARGE";

/// `Message nested too deeply (max <n> levels)`.
pub(crate) fn nested_too_deeply(max: usize) -> String {
    format!("Message nested too deeply (max {max} levels)")
}

/// `Vector clock too large (<n> entries, max <max>)`.
pub(crate) fn clock_too_large(entries: usize, max: usize) -> String {
    format!("Vector clock too large ({entries} entries, max {max})")
}

/// `Message too large (<n> bytes, max <max>)`.
pub(crate) fn message_too_large(size: usize, max: usize) -> String {
    format!("Message too large ({size} bytes, max {max})")
}

/// `Invalid message type: <type>`.
pub(crate) fn invalid_message_type(name: &str) -> String {
    format!("Invalid message type: {name}")
}

/// WebSocket close codes and reasons (docs/protocol.md §1, §12).
pub(crate) mod close {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
    /// Try again later: used for a client that reads too slowly to keep up.
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;

    pub(crate) const SERVER_SHUTDOWN: &str = "Server shutdown";
    pub(crate) const TOO_MANY_FROM_IP: &str = "Too many connections from your IP";
    pub(crate) const AT_CAPACITY: &str = "Server at maximum capacity";
    pub(crate) const MESSAGE_TOO_LARGE: &str = "Message too large";
    pub(crate) const HEARTBEAT_TIMEOUT: &str = "Heartbeat timeout";
    pub(crate) const SLOW_CLIENT: &str = "Client too slow";
    pub(crate) const TOKEN_EXPIRED: &str = "Token expired";
}
