//! `X-Request-Id`: kept when the client sent a well-formed one, generated otherwise.

pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we keep; longer ones are replaced rather than truncated.
const MAX_LEN: usize = 128;

/// A client id is kept only when it is short and made of characters that cannot break a log line
/// or a header (no spaces, quotes or control characters).
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits as 32 lowercase hex characters.
pub fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub fn from_client(header: Option<&[u8]>) -> String {
    match header {
        Some(id) if is_well_formed(id) => String::from_utf8_lossy(id).into_owned(),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_good_ids_and_replaces_bad_ones() {
        assert_eq!(from_client(Some(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"",
            b"new\nline",
            &[b'a'; 129],
        ] {
            let id = from_client(Some(bad));
            assert_eq!(id.len(), 32, "{bad:?} should be replaced");
            assert!(is_well_formed(id.as_bytes()));
        }
        assert_ne!(generate(), generate());
    }
}
