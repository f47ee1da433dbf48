//! The upstream request head and the client's response head, edited as plain `http` parts.
//!
//! Pingora's heads come sized to exactly the headers read, plus a second map with each name's
//! original case. Every `insert_header` parses its name again, allocates it, and inserts into
//! both maps, growing each from full. The gateway adds four to seven headers to every request
//! and one to three to every response, so it edits the parts instead: static names, one map,
//! room reserved once.
//!
//! What changes on the wire: header names go out in lower case (Pingora titles the common ones,
//! such as `Host`, `Content-Type` and `Content-Length`). Heads carried over HTTP/2 already went
//! out so, and HAProxy and Envoy send every head so; header names are case-insensitive (RFC 9110
//! §5.1). The request target and the response's reason phrase are kept byte for byte.

use http::{request, response};
use http::{HeaderMap, HeaderName, Uri};
use pingora::http::{RequestHeader, ResponseHeader};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// On responses of routes with `headers_on_success` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub struct RequestParts {
    parts: request::Parts,
    /// The client's request target when the URI does not reproduce it byte for byte (an
    /// absolute-form or non-UTF-8 target).
    raw_target: Option<Box<[u8]>>,
    /// Pingora's HTTP/2 END_STREAM choice (`None` for HTTP/1).
    send_end_stream: Option<bool>,
}

impl RequestParts {
    /// Takes the head out of `header`, with room for `added` more headers. Pingora sizes a head
    /// with some room to spare, so asking for more than will be added can cost a grow.
    pub fn take(header: &mut RequestHeader, added: usize) -> RequestParts {
        let from_uri = header.uri.path_and_query().map(|pq| pq.as_str().as_bytes());
        let raw_target = (from_uri != Some(header.raw_path())).then(|| header.raw_path().into());
        let send_end_stream = header.send_end_stream();
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let mut parts = request::Parts::from(std::mem::replace(header, placeholder));
        parts.headers.reserve(added);
        RequestParts {
            parts,
            raw_target,
            send_end_stream,
        }
    }

    pub fn headers(&mut self) -> &mut HeaderMap {
        &mut self.parts.headers
    }

    pub fn uri(&self) -> &Uri {
        &self.parts.uri
    }

    /// Replaces the target; the client's raw bytes no longer apply.
    pub fn set_uri(&mut self, uri: Uri) {
        self.parts.uri = uri;
        self.raw_target = None;
    }

    /// Puts the edited head back into `header`, for Pingora to send.
    pub fn put(self, header: &mut RequestHeader) -> pingora::Result<()> {
        let mut rebuilt = RequestHeader::from(self.parts);
        if let Some(raw) = self.raw_target {
            rebuilt.set_raw_path(&raw)?;
        }
        if let Some(end) = self.send_end_stream {
            rebuilt.set_send_end_stream(end);
        }
        *header = rebuilt;
        Ok(())
    }
}

/// The response head, as [`RequestParts`] is the request's.
pub struct ResponseParts {
    parts: response::Parts,
    /// Only a reason phrase other than the status code's own: Pingora writes that one itself.
    reason_phrase: Option<String>,
}

impl ResponseParts {
    /// Takes the head out of `header`, with room for `added` more headers.
    pub fn take(header: &mut ResponseHeader, added: usize) -> ResponseParts {
        let reason_phrase = header
            .get_reason_phrase()
            .filter(|reason| Some(*reason) != header.status.canonical_reason())
            .map(str::to_owned);
        let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
        let mut parts = response::Parts::from(std::mem::replace(header, placeholder));
        parts.headers.reserve(added);
        ResponseParts {
            parts,
            reason_phrase,
        }
    }

    pub fn headers(&mut self) -> &mut HeaderMap {
        &mut self.parts.headers
    }

    /// Puts the edited head back into `header`, for Pingora to send.
    pub fn put(self, header: &mut ResponseHeader) -> pingora::Result<()> {
        let mut rebuilt = ResponseHeader::from(self.parts);
        if let Some(reason) = self.reason_phrase {
            rebuilt.set_reason_phrase(Some(&reason))?;
        }
        *header = rebuilt;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn wire_response(header: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        header.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn wire(header: &RequestHeader) -> String {
        let mut buf = Vec::new();
        header.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn headers_added_through_the_parts_reach_the_wire_and_the_target_is_kept() {
        for target in [
            &b"/a/b?c=d"[..],
            b"http://example.com/x?y",
            b"/caf\xc3\xa9",
            b"/\xff",
        ] {
            let mut header = RequestHeader::build("GET", target, None).unwrap();
            header.insert_header("Host", "example.com").unwrap();
            header.insert_header("X-Mixed-Case", "1").unwrap();
            let raw = header.raw_path().to_vec();
            let mut head = RequestParts::take(&mut header, 0);
            head.headers()
                .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            head.put(&mut header).unwrap();
            assert_eq!(header.raw_path(), raw, "target {target:?}");
            let wire = wire(&header);
            assert!(wire.contains("Host: example.com\r\n"), "{wire}");
            assert!(wire.contains("x-mixed-case: 1\r\n"), "{wire}");
            assert!(wire.contains("x-forwarded-proto: https\r\n"), "{wire}");
        }
    }

    #[test]
    fn a_response_keeps_its_headers_and_reason_phrase() {
        let mut header = ResponseHeader::build(299, None).unwrap();
        header.insert_header("Content-Type", "text/plain").unwrap();
        header.insert_header("X-Upstream-Thing", "1").unwrap();
        header.set_reason_phrase(Some("Fine Indeed")).unwrap();
        let mut head = ResponseParts::take(&mut header, 1);
        head.headers()
            .insert(X_FORWARDED_HOST, HeaderValue::from_static("a"));
        head.put(&mut header).unwrap();
        assert_eq!(header.status, 299);
        assert_eq!(header.get_reason_phrase(), Some("Fine Indeed"));
        let wire = wire_response(&header);
        for line in [
            "Content-Type: text/plain\r\n",
            "x-upstream-thing: 1\r\n",
            "x-forwarded-host: a\r\n",
        ] {
            assert!(wire.contains(line), "{wire}");
        }
    }

    #[test]
    fn a_new_uri_replaces_the_raw_target() {
        let mut header = RequestHeader::build("GET", b"http://example.com/api/x", None).unwrap();
        let mut head = RequestParts::take(&mut header, 0);
        head.set_uri(Uri::from_static("/x"));
        head.put(&mut header).unwrap();
        assert_eq!(header.raw_path(), b"/x");
    }
}
