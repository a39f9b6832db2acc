//! WebSocket frames as the server writes them (RFC 6455 §5.2): final, unmasked,
//! uncompressed. The connection's writer sends these bytes itself; the WebSocket
//! library only reads. A broadcast window is framed once into one buffer
//! ([`Framed`]) that every subscriber with that encoding writes as it is, so a
//! delivery costs one reference count and a share of a socket write, not a framing
//! pass and a copy per frame (ARCHITECTURE.md, "Delivery").

use bytes::{BufMut, Bytes, BytesMut};

use super::EncodedFrame;

const FIN: u8 = 0x80;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// The most a close frame's reason may hold: a control frame's payload is at most
/// 125 bytes, two of which are the code.
const MAX_CLOSE_REASON: usize = 123;

/// The most a ping or pong payload may hold (a control frame's limit).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Header bytes (2, 4 or 10) of a frame whose payload is `len` bytes long.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(FIN | opcode);
    if let Ok(short @ 0..=125) = u8::try_from(len) {
        buf.put_u8(short);
    } else if let Ok(medium) = u16::try_from(len) {
        buf.put_u8(126);
        buf.put_u16(medium);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

fn put_frame(buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
    put_header(buf, opcode, payload.len());
    buf.put_slice(payload);
}

fn opcode_and_payload(frame: &EncodedFrame) -> (u8, &[u8]) {
    match frame {
        EncodedFrame::Binary(bytes) => (OPCODE_BINARY, bytes),
        EncodedFrame::Text(text) => (OPCODE_TEXT, text.as_bytes()),
    }
}

/// One data frame on the wire.
pub(crate) fn data(frame: &EncodedFrame) -> Bytes {
    let (opcode, payload) = opcode_and_payload(frame);
    let mut buf = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_frame(&mut buf, opcode, payload);
    buf.freeze()
}

/// A close frame: the code and as much of the reason as fits (cut at a character
/// boundary); `None` is a close with no code (the answer to one).
pub(crate) fn close(code: Option<u16>, reason: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + MAX_CLOSE_REASON);
    match code {
        Some(code) => {
            let mut cut = reason.len().min(MAX_CLOSE_REASON);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            let reason = &reason.as_bytes()[..cut];
            put_header(&mut buf, OPCODE_CLOSE, 2 + reason.len());
            buf.put_u16(code);
            buf.put_slice(reason);
        }
        None => put_header(&mut buf, OPCODE_CLOSE, 0),
    }
    buf.freeze()
}

/// A protocol ping with no payload.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[FIN | OPCODE_PING, 0])
}

/// The pong answering a ping: its payload echoed (RFC 6455 §5.5.3).
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut buf = BytesMut::with_capacity(2 + payload.len());
    put_frame(&mut buf, OPCODE_PONG, payload);
    buf.freeze()
}

/// A run of data frames framed once into one buffer, shared by every connection
/// that sends it.
#[derive(Debug, Clone)]
pub struct Framed {
    wire: Bytes,
    payload_len: usize,
}

impl Framed {
    /// Frame `frames` back to back.
    pub(crate) fn new(frames: &[EncodedFrame]) -> Framed {
        let (wire_len, payload_len) = frames.iter().fold((0, 0), |(wire, payload), frame| {
            let len = frame.len();
            (wire + header_len(len) + len, payload + len)
        });
        let mut buf = BytesMut::with_capacity(wire_len);
        for frame in frames {
            let (opcode, payload) = opcode_and_payload(frame);
            put_frame(&mut buf, opcode, payload);
        }
        Framed {
            wire: buf.freeze(),
            payload_len,
        }
    }

    /// The frames' bytes as the socket gets them.
    pub(crate) fn into_wire(self) -> Bytes {
        self.wire
    }

    /// The payload bytes in all (what `bytes_out` counts).
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The frames again, read back from the wire bytes (for tests that look at what
    /// a connection was sent).
    #[cfg(any(test, feature = "test-util"))]
    pub fn frames(&self) -> Vec<EncodedFrame> {
        let mut frames = Vec::new();
        let mut rest = &self.wire[..];
        while let [first, second, tail @ ..] = rest {
            let (len, tail) = match second & 0x7F {
                126 => (
                    usize::from(u16::from_be_bytes([tail[0], tail[1]])),
                    &tail[2..],
                ),
                127 => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&tail[..8]);
                    (
                        usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX),
                        &tail[8..],
                    )
                }
                short => (usize::from(short), tail),
            };
            let (payload, tail) = tail.split_at(len);
            frames.push(if first & 0x0F == OPCODE_TEXT {
                EncodedFrame::Text(String::from_utf8_lossy(payload).into_owned())
            } else {
                EncodedFrame::Binary(Bytes::copy_from_slice(payload))
            });
            rest = tail;
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;

    /// Read `wire` as a client would, with the WebSocket library as the oracle.
    fn client_reads(wire: &[u8]) -> Vec<Message> {
        let stream = std::io::Cursor::new(wire.to_vec());
        let mut config = WebSocketConfig::default();
        config.max_frame_size = None;
        config.max_message_size = None;
        let mut ws = WebSocket::from_raw_socket(ReadOnly(stream), Role::Client, Some(config));
        let mut messages = Vec::new();
        while let Ok(message) = ws.read() {
            let closed = matches!(message, Message::Close(_));
            messages.push(message);
            if closed {
                break;
            }
        }
        messages
    }

    /// A byte source the library may also "write" its automatic replies into.
    struct ReadOnly(std::io::Cursor<Vec<u8>>);

    impl std::io::Read for ReadOnly {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl std::io::Write for ReadOnly {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_reads_every_length_form_and_kind() {
        let frames = [
            EncodedFrame::Binary(Bytes::from(vec![1u8; 0])),
            EncodedFrame::Binary(Bytes::from(vec![2u8; 125])),
            EncodedFrame::Text("é".repeat(63)),
            EncodedFrame::Binary(Bytes::from(vec![3u8; 0xFFFF])),
            EncodedFrame::Binary(Bytes::from(vec![4u8; 0x1_0000])),
            EncodedFrame::Text("x".repeat(70_000)),
        ];
        let framed = Framed::new(&frames);
        let mut wire = framed.clone().into_wire().to_vec();
        wire.extend_from_slice(&ping());
        wire.extend_from_slice(&pong(b"hi"));
        wire.extend_from_slice(&data(&frames[1]));
        wire.extend_from_slice(&close(Some(1008), "Token expired"));
        let read = client_reads(&wire);
        let mut expected: Vec<Message> = frames
            .iter()
            .map(|f| match f {
                EncodedFrame::Binary(b) => Message::Binary(b.clone()),
                EncodedFrame::Text(t) => Message::Text(t.clone().into()),
            })
            .collect();
        expected.push(Message::Ping(Bytes::new()));
        expected.push(Message::Pong(Bytes::from_static(b"hi")));
        expected.push(Message::Binary(Bytes::from(vec![2u8; 125])));
        assert_eq!(read[..expected.len()], expected[..]);
        match &read[expected.len()] {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert_eq!(frame.reason.as_str(), "Token expired");
            }
            other => panic!("expected a close, got {other:?}"),
        }
        assert_eq!(
            framed.payload_len(),
            frames.iter().map(EncodedFrame::len).sum::<usize>()
        );
        assert_eq!(framed.frames(), frames);
    }

    #[test]
    fn close_reasons_are_cut_to_fit_a_control_frame() {
        let long = "ü".repeat(100); // 200 bytes
        let frame = close(Some(1000), &long);
        assert!(frame.len() <= 2 + 125, "{}", frame.len());
        let read = client_reads(&frame);
        match &read[..] {
            [Message::Close(Some(f))] => {
                assert_eq!(u16::from(f.code), 1000);
                assert!(f.reason.len() <= MAX_CLOSE_REASON);
                assert!(f.reason.chars().all(|c| c == 'ü'));
            }
            other => panic!("expected one close, got {other:?}"),
        }
        assert!(matches!(
            &client_reads(&close(None, ""))[..],
            [Message::Close(None)]
        ));
    }

    #[test]
    fn pongs_echo_at_most_a_control_payload() {
        let read = client_reads(&pong(&[7u8; 300]));
        assert!(matches!(&read[..], [Message::Pong(p)] if p.len() == MAX_CONTROL_PAYLOAD));
    }
}
