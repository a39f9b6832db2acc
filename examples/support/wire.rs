//! Binary-protocol constants shared by the benchmark tools (`loadgen`,
//! `minimal_server`): type codes and the frame header of docs/protocol.md §2.1 and
//! §3, written out rather than taken from the crate so the tools speak the wire
//! independently of the server they measure.
#![allow(dead_code, unreachable_pub)]

pub const T_SUBSCRIBE: u8 = 0x10;
pub const T_SYNC_RESPONSE: u8 = 0x13;
pub const T_DELTA: u8 = 0x20;
pub const T_ACK: u8 = 0x21;
pub const T_PING: u8 = 0x30;
pub const T_PONG: u8 = 0x31;
pub const T_ERROR: u8 = 0xFF;
/// u8 type code, i64 big-endian epoch-ms timestamp, u32 big-endian payload length.
pub const HEADER_LEN: usize = 13;
