//! Fuzz target: one WebSocket data frame through the decoder and the message parser.
//! Any bytes, as a text or a binary frame: never a panic, and what decodes is
//! consistent (a binary frame's payload lies within the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use synckit::{decode_frame, ClientMessage, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let is_text = selector & 1 == 1;
    if is_text && std::str::from_utf8(bytes).is_err() {
        // A text frame is UTF-8 by the time it reaches the decoder.
        return;
    }
    if let Ok(raw) = decode_frame(is_text, bytes) {
        assert!(raw.payload_len <= bytes.len());
        assert_eq!(raw.encoding, Encoding::detect(is_text, bytes));
        let _ = ClientMessage::parse(raw);
    }
});
