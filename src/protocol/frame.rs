//! The 13-byte binary frame header (docs/protocol.md §2.1): type code, big-endian i64
//! timestamp (epoch ms), big-endian u32 payload length, then the JSON payload.

/// Size of the binary header.
pub const HEADER_LEN: usize = 13;

/// A binary frame split into its parts; the payload borrows the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BinaryFrame<'a> {
    pub(crate) code: u8,
    pub(crate) timestamp: i64,
    pub(crate) payload: &'a [u8],
}

/// Why a binary frame could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than the 13-byte header ({0} bytes)")]
    TruncatedHeader(usize),
    #[error("payload length {declared} exceeds the {available} bytes present")]
    TruncatedPayload { declared: usize, available: usize },
}

/// Split a binary frame. Bytes after `13 + N` are ignored, as every upstream peer does.
pub(crate) fn split(bytes: &[u8]) -> Result<BinaryFrame<'_>, FrameError> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::TruncatedHeader(bytes.len()));
    };
    let code = header[0];
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[1..9]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[9..13]);
    let declared = u32::from_be_bytes(len) as usize;
    let payload = rest.get(..declared).ok_or(FrameError::TruncatedPayload {
        declared,
        available: rest.len(),
    })?;
    Ok(BinaryFrame {
        code,
        timestamp: i64::from_be_bytes(ts),
        payload,
    })
}

/// Build a binary frame around an already-serialized JSON payload. Only tests
/// (the codec's and the integration tests) build frames this way: the server's
/// encoder writes header and payload into one buffer itself, so the shipped build
/// leaves this out.
#[cfg(any(test, feature = "test-util"))]
pub fn join(code: u8, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(code);
    out.extend_from_slice(&timestamp.to_be_bytes());
    // Payloads are bounded far below 4 GiB by the frame limit; saturate defensively.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_ping_frame() {
        let bytes = [
            0x30, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0, 0, 0, 2, b'{', b'}',
        ];
        let frame = split(&bytes).expect("valid");
        assert_eq!(frame.code, 0x30);
        assert_eq!(frame.timestamp, 1_700_000_000_000);
        assert_eq!(frame.payload, b"{}");
    }

    #[test]
    fn ignores_trailing_bytes() {
        let mut bytes = join(0x10, 5, b"{\"documentId\":\"d\"}");
        bytes.extend_from_slice(b"garbage");
        let frame = split(&bytes).expect("valid");
        assert_eq!(frame.payload, b"{\"documentId\":\"d\"}");
    }

    #[test]
    fn rejects_short_header() {
        assert_eq!(split(&[0x30; 12]), Err(FrameError::TruncatedHeader(12)));
        assert_eq!(split(&[]), Err(FrameError::TruncatedHeader(0)));
    }

    #[test]
    fn rejects_truncated_payload() {
        let bytes = [0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, b'{', b'}'];
        assert_eq!(
            split(&bytes),
            Err(FrameError::TruncatedPayload {
                declared: 5,
                available: 2
            })
        );
    }

    #[test]
    fn join_writes_big_endian_header() {
        let bytes = join(0x21, 1, b"{}");
        assert_eq!(
            bytes,
            vec![0x21, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'{', b'}']
        );
    }
}
