//! Document id rules (docs/protocol.md §11.3, capped at 255 for the storage column).

/// Longest accepted id: `documents.id` is `VARCHAR(255)`, so 256 (the TS validator's
/// limit) would be accepted on the wire and then fail to persist.
const MAX_DOCUMENT_ID_LEN: usize = 255;

/// Why a document id was rejected; `Display` is the TS error string, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DocumentIdError {
    #[error("Invalid document ID")]
    Missing,
    #[error("Document ID too long")]
    TooLong,
    #[error("Document ID contains invalid characters")]
    InvalidCharacters,
}

/// Validate `^[A-Za-z0-9_:-]+$` with 1..=255 characters.
pub(crate) fn validate(id: Option<&str>) -> Result<&str, DocumentIdError> {
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or(DocumentIdError::Missing)?;
    if id.len() > MAX_DOCUMENT_ID_LEN {
        return Err(DocumentIdError::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
    {
        return Err(DocumentIdError::InvalidCharacters);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_upstream_test_ids() {
        for id in [
            "doc-1700000000000-3",
            "corruption-1-abc",
            "test-doc-1",
            "room:a",
            "A_b",
        ] {
            assert_eq!(validate(Some(id)), Ok(id));
        }
    }

    #[test]
    fn rejects_bad_ids_with_ts_messages() {
        assert_eq!(validate(None), Err(DocumentIdError::Missing));
        assert_eq!(validate(Some("")), Err(DocumentIdError::Missing));
        assert_eq!(
            validate(Some(&"a".repeat(256))),
            Err(DocumentIdError::TooLong)
        );
        assert!(validate(Some(&"a".repeat(255))).is_ok());
        assert_eq!(
            validate(Some("a b")),
            Err(DocumentIdError::InvalidCharacters)
        );
        assert_eq!(validate(Some("é")), Err(DocumentIdError::InvalidCharacters));
        assert_eq!(DocumentIdError::TooLong.to_string(), "Document ID too long");
    }
}
