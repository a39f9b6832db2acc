//! The SyncKit wire protocol: message types, the binary and JSON encodings, limits.
//!
//! Pure functions over bytes, no I/O. Decoding distinguishes a frame that is
//! *incomplete* (shorter than its header says), *invalid* (not a JSON object, missing
//! `type`) and of *unknown type*; all three are answered by the caller with
//! `error "Invalid message format"` per docs/protocol.md §2.1/§12.

pub mod decode;
pub(crate) mod delta_members;
pub(crate) mod document_id;
pub mod encode;
pub mod errors;
pub mod frame;
pub mod message;
mod message_type;
pub mod ws_frame;

pub use decode::{decode_frame, DecodeError, Encoding, RawMessage};
pub use encode::{encode, EncodedFrame};
pub use message::{ClientMessage, ServerMessage};
pub use message_type::MessageType;
pub use ws_frame::Framed;
