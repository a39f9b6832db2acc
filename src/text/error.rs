//! Why a text state was refused; the message is what the client's `error` reply says.

/// A text state the engine refuses. Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text state too large: {bytes} bytes, the limit is {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("text state has too many blocks: {blocks}, the limit is {limit}")]
    TooManyBlocks { blocks: usize, limit: usize },
    #[error("text state is not a SyncText state: {0}")]
    Malformed(String),
    #[error("text state block {block}: {what} above 2^53-1")]
    HugeNumber { block: String, what: &'static str },
    #[error("text state block {block}: empty text")]
    EmptyBlock { block: String },
    #[error("text state block {block}: length {len} inconsistent with its clock")]
    BadLength { block: String, len: u64 },
    #[error("text state block {block}: its id differs from its key {key}")]
    KeyMismatch { block: String, key: String },
    #[error("text state block {block}: duplicate id")]
    Duplicate { block: String },
    #[error("text state block {block}: its clocks overlap block {other}")]
    Overlap { block: String, other: String },
    #[error("text state block {block}: its {side} origin is the block itself")]
    SelfReference { block: String, side: &'static str },
    #[error("text state block {block}: its {side} origin {origin} names no block (and no earlier clock)")]
    Dangling {
        block: String,
        side: &'static str,
        origin: String,
    },
    #[error(
        "text state block {block}: its {side} origin {origin} is not earlier than the block (an origin cycle or forward reference)"
    )]
    NotCausal {
        block: String,
        side: &'static str,
        origin: String,
    },
}

impl TextError {
    /// Whether the refusal is about size (the limits) rather than content.
    pub(crate) fn is_size(&self) -> bool {
        matches!(
            self,
            TextError::TooLarge { .. } | TextError::TooManyBlocks { .. }
        )
    }
}
