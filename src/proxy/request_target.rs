//! Puts the normalised path ([`crate::request_path`]) into the request header itself, so that
//! routing, `strip_prefix`, the upstream request (Pingora clones this header to build it) and
//! the access log all read one path.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};
use pingora::http::RequestHeader;

use crate::request_path::{self, PathError, PathRules};

/// Why a request target was refused: each answers 400 `bad_path`.
#[derive(Debug, thiserror::Error)]
pub enum BadTarget {
    #[error(transparent)]
    Path(#[from] PathError),
    /// The URI holds a lossy rendering of a non-UTF-8 target; rewriting it would forward
    /// replacement characters instead of the client's bytes (Pingora refuses the same when it
    /// reconciles an authority).
    #[error("the path is not valid UTF-8 and needs normalising")]
    NotUtf8,
    #[error("the normalised path is not a valid request target")]
    Unbuildable,
}

/// Normalises the path of `req` in place. An unchanged path leaves the header untouched, so the
/// target goes upstream byte-identical; a changed one replaces the URI, keeping its query and,
/// for HTTP/2, its scheme and authority.
pub fn normalize(req: &mut RequestHeader, rules: &PathRules) -> Result<(), BadTarget> {
    let normalized = match request_path::normalize(req.uri.path(), rules)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(path) => path,
    };
    if !req.raw_path_is_utf8() {
        return Err(BadTarget::NotUtf8);
    }
    let path_and_query = match req.uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| BadTarget::Unbuildable)?);
    let uri = Uri::from_parts(parts).map_err(|_| BadTarget::Unbuildable)?;
    req.set_uri(uri);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(target: &[u8]) -> RequestHeader {
        RequestHeader::build("GET", target, None).unwrap()
    }

    #[test]
    fn a_changed_path_keeps_its_query() {
        let mut req = header(b"/api/../documents/42?x=%2e%2e&y=/..");
        normalize(&mut req, &PathRules::default()).unwrap();
        assert_eq!(req.raw_path(), b"/documents/42?x=%2e%2e&y=/..");
    }

    #[test]
    fn an_unchanged_path_is_not_rebuilt() {
        let mut req = header(b"/a%20b?q=1");
        normalize(&mut req, &PathRules::default()).unwrap();
        assert_eq!(req.raw_path(), b"/a%20b?q=1");
    }

    #[test]
    fn an_http2_uri_keeps_scheme_and_authority() {
        let mut req = header(b"/");
        req.set_uri("https://example.test/a/./b?q".parse().unwrap());
        normalize(&mut req, &PathRules::default()).unwrap();
        assert_eq!(req.uri.to_string(), "https://example.test/a/b?q");
    }

    #[test]
    fn absolute_form_becomes_origin_form_when_rewritten() {
        let mut req = header(b"http://example.test/a/../b?q");
        normalize(&mut req, &PathRules::default()).unwrap();
        assert_eq!(req.raw_path(), b"/b?q");
    }

    #[test]
    fn a_non_utf8_path_that_needs_rewriting_is_refused() {
        let mut req = header(b"/a/../\xff");
        let result = normalize(&mut req, &PathRules::default());
        assert!(matches!(result, Err(BadTarget::NotUtf8)), "{result:?}");
        let mut req = header(b"/a/\xff");
        normalize(&mut req, &PathRules::default()).unwrap();
        assert_eq!(
            req.raw_path(),
            b"/a/\xff",
            "unchanged: forwarded as received"
        );
    }
}
