//! `X-Request-Id`: kept when the client sent a well-formed one, generated otherwise.
//!
//! Held as a header value: it is copied into the upstream request and the response (a reference
//! count each), and read as text by logs and error bodies.

use std::fmt;

use http::HeaderValue;

pub const HEADER: &str = "x-request-id";
pub const HEADER_NAME: http::HeaderName = http::HeaderName::from_static(HEADER);

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

/// A request's id: visible ASCII only (checked or generated), so it reads as text for free.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id when it is well formed, a new one otherwise.
    pub fn from_client(header: Option<&HeaderValue>) -> RequestId {
        match header {
            Some(id) if is_well_formed(id.as_bytes()) => RequestId::unindexed(id.clone()),
            _ => RequestId::generate(),
        }
    }

    /// Marked so that HPACK never adds it to a connection's header table (RFC 7541 §7.1.3): a
    /// value that differs on every response only pushed the reusable entries out, and the
    /// encoder searched and evicted for every response over HTTP/2.
    fn unindexed(mut value: HeaderValue) -> RequestId {
        value.set_sensitive(true);
        RequestId(value)
    }

    /// 128 random bits as 32 lowercase hex characters.
    pub fn generate() -> RequestId {
        let mut text = [0u8; 32];
        let encoded = hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut text);
        // Owned by a reference-counted `Bytes` from the start: a value copied from a slice is
        // promoted (one more allocation) by its first clone, and every request clones it.
        match encoded
            .ok()
            .and_then(|()| HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)).ok())
        {
            Some(id) => RequestId::unindexed(id),
            None => RequestId::default(),
        }
    }

    pub fn as_str(&self) -> &str {
        // Never empty in practice: both constructors hold visible ASCII only.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId(HeaderValue::from_static("-"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_good_ids_and_replaces_bad_ones() {
        let from_client = |raw: &[u8]| {
            let value = HeaderValue::from_bytes(raw).ok();
            RequestId::from_client(value.as_ref()).as_str().to_string()
        };
        assert_eq!(from_client(b"abc-123_x.y:z"), "abc-123_x.y:z");
        for bad in [
            &b""[..],
            b"has space",
            b"quote\"",
            b"new\nline",
            &[b'a'; 129],
        ] {
            let id = from_client(bad);
            assert_eq!(id.len(), 32, "{bad:?} should be replaced");
            assert!(is_well_formed(id.as_bytes()));
        }
        assert_eq!(RequestId::from_client(None).as_str().len(), 32);
        // Never indexed by HPACK, whichever way the id came.
        let kept = HeaderValue::from_static("abc-123");
        assert!(RequestId::from_client(Some(&kept))
            .header_value()
            .is_sensitive());
        assert!(RequestId::generate().header_value().is_sensitive());
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a.as_str(), b.as_str());
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
