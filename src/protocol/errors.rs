//! The error catalogue (docs/protocol.md §12): the exact strings clients see.
//!
//! TS strings are kept byte-identical; the two Rust additions follow the same shape.

pub const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
pub const NOT_AUTHENTICATED: &str = "Not authenticated";
pub const AUTHENTICATION_REQUIRED: &str = "Authentication required";
pub const AUTHENTICATION_FAILED: &str = "Authentication failed";
pub const AUTHENTICATION_TIMEOUT: &str = "Authentication timeout";
pub const RATE_LIMITED: &str = "Too many messages. Please slow down.";
pub const PERMISSION_DENIED: &str = "Permission denied";
pub const ACCESS_DENIED: &str = "Access denied to this document";
pub const INVALID_DELTA: &str = "Invalid delta message: missing or empty delta";
pub const INVALID_DELTA_BATCH: &str = "Invalid delta batch: missing or empty deltas array";
pub const INVALID_CHUNK: &str = "Invalid chunk";
pub const INVALID_AWARENESS_STATE: &str = "Invalid awareness state format";
pub const INVALID_FIELD_NAME: &str = "Invalid field name";
pub const SUBSCRIBE_FAILED: &str = "Subscribe failed";
pub const SYNC_REQUEST_FAILED: &str = "Sync request failed";
pub const SYNC_STEP1_FAILED: &str = "SyncStep1 failed";
pub const DELTA_FAILED: &str = "Delta application failed";
pub const DELTA_BATCH_FAILED: &str = "Delta batch application failed";
pub const AWARENESS_SUBSCRIBE_FAILED: &str = "Failed to subscribe to awareness";
pub const AWARENESS_UPDATE_FAILED: &str = "Failed to update awareness";
pub const WRITE_BACKLOG_FULL: &str = "Server write queue is full. Please retry.";
pub const INTERNAL_ERROR: &str = "Internal server error";
pub const NUL_CHARACTER: &str = "Message contains a NUL character";
pub const INVALID_CLOCK: &str =
    "Invalid vector clock: entries must be writer ids of 1-255 bytes with integer values from 0 to 9007199254740991, at most 4294967296 ahead of the document";
pub const AWARENESS_NOT_OWNER: &str = "Awareness client id belongs to another connection";
pub const SUBSCRIPTION_REVOKED: &str = "Subscription revoked: permission denied";

pub const CODE_INVALID_MESSAGE: &str = "INVALID_MESSAGE";
pub const CODE_RATE_LIMIT: &str = "RATE_LIMIT_EXCEEDED";
pub const CODE_AUTH_REQUIRED: &str = "AUTH_REQUIRED";
pub const CODE_ACCESS_DENIED: &str = "ACCESS_DENIED";
pub const CODE_BACKLOG_FULL: &str = "WRITE_BACKLOG_FULL";
pub const CODE_CLOCK_LIMIT: &str = "CLOCK_LIMIT";
pub const CODE_NOT_OWNER: &str = "NOT_OWNER";
pub const CODE_SUBSCRIPTION_REVOKED: &str = "SUBSCRIPTION_REVOKED";
pub const CODE_AWARENESS_LIMIT: &str = "AWARENESS_LIMIT";
pub const CODE_SUBSCRIPTION_LIMIT: &str = "SUBSCRIPTION_LIMIT";

/// `Awareness state too large (<n> bytes, max <max>)`.
pub fn awareness_state_too_large(size: usize, max: usize) -> String {
    format!("Awareness state too large ({size} bytes, max {max})")
}

/// `Too many awareness clients in this document (max <max>)`.
pub fn awareness_document_full(max: usize) -> String {
    format!("Too many awareness clients in this document (max {max})")
}

/// `Too many awareness clients on this connection (max <max>)`.
pub fn awareness_connection_full(max: usize) -> String {
    format!("Too many awareness clients on this connection (max {max})")
}

/// `Too many text states in one batch (<n>, max <max>)`.
pub fn too_many_text_ops(count: usize, max: usize) -> String {
    format!("Too many text states in one batch ({count}, max {max})")
}

/// `Too many subscriptions (max <max>)`.
pub fn too_many_subscriptions(max: usize) -> String {
    format!("Too many subscriptions (max {max})")
}

pub const CODE_TEXT_STATE_INVALID: &str = "TEXT_STATE_INVALID";
pub const CODE_TEXT_STATE_TOO_LARGE: &str = "TEXT_STATE_TOO_LARGE";

/// `Message nested too deeply (max <n> levels)`.
pub fn nested_too_deeply(max: usize) -> String {
    format!("Message nested too deeply (max {max} levels)")
}

/// `Vector clock too large (<n> entries, max <max>)`.
pub fn clock_too_large(entries: usize, max: usize) -> String {
    format!("Vector clock too large ({entries} entries, max {max})")
}

/// `Message too large (<n> bytes, max <max>)`.
pub fn message_too_large(size: usize, max: usize) -> String {
    format!("Message too large ({size} bytes, max {max})")
}

/// `Invalid message type: <type>`.
pub fn invalid_message_type(name: &str) -> String {
    format!("Invalid message type: {name}")
}

/// WebSocket close codes and reasons (docs/protocol.md §1, §12).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Try again later: used for a client that reads too slowly to keep up.
    pub const TRY_AGAIN_LATER: u16 = 1013;

    pub const SERVER_SHUTDOWN: &str = "Server shutdown";
    pub const TOO_MANY_FROM_IP: &str = "Too many connections from your IP";
    pub const AT_CAPACITY: &str = "Server at maximum capacity";
    pub const MESSAGE_TOO_LARGE: &str = "Message too large";
    pub const HEARTBEAT_TIMEOUT: &str = "Heartbeat timeout";
    pub const SLOW_CLIENT: &str = "Client too slow";
    pub const TOKEN_EXPIRED: &str = "Token expired";
}
