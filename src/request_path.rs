//! One path for routing and for the upstream: the request path is normalised before any route
//! sees it, and the normalised path is what gets forwarded.
//!
//! Without it, `/api/../documents/42` is routed by an `/api/` prefix route while a backend that
//! normalises serves `/documents/42`; once routes differ in authentication, that is a bypass.
//!
//! Steps, in the order RFC 3986 gives them:
//! 1. percent-escapes of unreserved characters (`ALPHA DIGIT - . _ ~`, §2.3) are decoded, so
//!    `%2e%2e` is `..`; the hex digits of every other escape become upper case (§6.2.2.1);
//!    a malformed escape (`%`, `%4`, `%G1`) is an error;
//! 2. an encoded slash (`%2F`, `%5C`) and a raw backslash are errors unless escaped slashes are
//!    kept: backends differ on whether they separate segments (IIS and many Windows and Java
//!    stacks treat `\` as `/`), so the gateway cannot know which segments the upstream will see;
//!    kept, they are forwarded as written and never split segments here;
//! 3. `//` becomes `/` when slashes are merged;
//! 4. dot segments are removed (§5.2.4); a `..` that would climb above the root is an error,
//!    not silently clamped as the RFC does, since no honest client sends one.
//!
//! Everything else, including non-ASCII bytes and escapes such as `%C3%A9`, is left as it is.
//! The query string is not part of the input.

use std::borrow::Cow;

/// The normalisation settings, built from `paths:` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// `//` → `/`.
    pub merge_slashes: bool,
    /// Forward `%2F`, `%5C` and `\` as written instead of rejecting the request.
    pub keep_escaped_slashes: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            keep_escaped_slashes: false,
        }
    }
}

/// Why a path was refused; each one answers 400. Messages never repeat the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has a malformed percent-escape (a % not followed by two hex digits)")]
    MalformedEscape,
    #[error("the path has an encoded slash or backslash (%2F or %5C)")]
    EscapedSlash,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    #[error("the path does not start with '/'")]
    NotAbsolute,
}

/// The normalised form of `path` (a request path without its query).
///
/// Borrows `path` when normalising leaves it unchanged, so a caller can tell "changed" by
/// `Cow::Owned`. A path with no `%`, no `\`, no `//` and no dot segment is recognised by a single
/// byte scan and returned without allocating: that is nearly every request.
pub fn normalize<'a>(path: &'a str, rules: &PathRules) -> Result<Cow<'a, str>, PathError> {
    if !needs_normalizing(path.as_bytes(), rules.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    // `*` (OPTIONS *) passes the scan above; anything else must be an absolute path.
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    // Invariant: before each segment is handled, `out` ends with '/'.
    let mut out = String::with_capacity(path.len());
    out.push('/');
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let is_last = segments.peek().is_none();
        let start = out.len();
        // Splitting before decoding is sound: no escape decodes to '/' (`%2F` stays encoded).
        decode_segment(raw, rules, &mut out)?;
        match &out[start..] {
            // `/a/.` and `/a/b/..` end in `/a/` (RFC 3986 §5.2.4): the '/' is already there.
            "." => out.truncate(start),
            ".." => {
                out.truncate(start);
                remove_last_segment(&mut out)?;
            }
            // An empty last segment is a trailing slash, already written.
            "" if rules.merge_slashes || is_last => {}
            _ if is_last => {}
            _ => out.push('/'),
        }
    }
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Whether `path` may change or be refused: it holds `%`, `\`, a dot segment, or `//` when
/// slashes are merged. One pass, no allocation.
fn needs_normalizing(path: &[u8], merge_slashes: bool) -> bool {
    let mut segment_start = 0;
    for (i, &byte) in path.iter().enumerate() {
        match byte {
            b'%' | b'\\' => return true,
            b'/' => {
                if is_dot_segment(&path[segment_start..i])
                    || (merge_slashes && i > 0 && segment_start == i)
                {
                    return true;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    is_dot_segment(&path[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// `out` ends with "/seg/"; drops "seg/". Above the root there is nothing to drop.
fn remove_last_segment(out: &mut String) -> Result<(), PathError> {
    let without_slash = &out[..out.len() - 1];
    let Some(previous_slash) = without_slash.rfind('/') else {
        return Err(PathError::AboveRoot);
    };
    out.truncate(previous_slash + 1);
    Ok(())
}

/// Appends `segment` to `out` with unreserved escapes decoded and other escapes upper-cased.
fn decode_segment(segment: &str, rules: &PathRules, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(high), Some(low)) = (
                    bytes.get(i + 1).and_then(|&b| hex_value(b)),
                    bytes.get(i + 2).and_then(|&b| hex_value(b)),
                ) else {
                    return Err(PathError::MalformedEscape);
                };
                let decoded = (high << 4) | low;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else if (decoded == b'/' || decoded == b'\\') && !rules.keep_escaped_slashes {
                    return Err(PathError::EscapedSlash);
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(high)]));
                    out.push(char::from(HEX_UPPER[usize::from(low)]));
                }
                i += 3;
            }
            b'\\' if !rules.keep_escaped_slashes => return Err(PathError::Backslash),
            _ => {
                // Copy up to the next escape in one piece; both ends sit on ASCII bytes (or the
                // end), so the slice keeps any multi-byte character whole.
                let run = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |p| i + 1 + p);
                out.push_str(&segment[i..run]);
                i = run;
            }
        }
    }
    Ok(())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: PathRules = PathRules {
        merge_slashes: true,
        keep_escaped_slashes: false,
    };
    const KEEP: PathRules = PathRules {
        merge_slashes: true,
        keep_escaped_slashes: true,
    };
    const NO_MERGE: PathRules = PathRules {
        merge_slashes: false,
        keep_escaped_slashes: false,
    };

    fn norm(path: &str, rules: PathRules) -> Result<String, PathError> {
        normalize(path, &rules).map(Cow::into_owned)
    }

    fn is_borrowed(path: &str, rules: PathRules) -> bool {
        matches!(normalize(path, &rules), Ok(Cow::Borrowed(p)) if p == path)
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for path in [
            "/",
            "/documents/42",
            "/a/b/",
            "/file.txt",
            "/.well-known/jwks.json",
            "/a/..b/c.",
            "/...",
            "/caf\u{e9}",
            "*",
        ] {
            assert!(is_borrowed(path, DEFAULT), "{path}");
        }
        assert!(is_borrowed("//a///b", NO_MERGE));
    }

    #[test]
    fn paths_that_normalise_to_themselves_stay_borrowed() {
        assert!(is_borrowed("/a%20b", DEFAULT));
        assert!(is_borrowed("/a%2Fb", KEEP));
        assert!(is_borrowed("/a\\b", KEEP));
        assert!(is_borrowed("/caf%C3%A9", DEFAULT));
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(
            norm("/api/../documents/42", DEFAULT).unwrap(),
            "/documents/42"
        );
        assert_eq!(norm("/a/./b", DEFAULT).unwrap(), "/a/b");
        assert_eq!(norm("/a/b/c/./../../g", DEFAULT).unwrap(), "/a/g");
        assert_eq!(norm("/./a", DEFAULT).unwrap(), "/a");
        assert_eq!(norm("/a/../b/", DEFAULT).unwrap(), "/b/");
    }

    #[test]
    fn a_trailing_dot_segment_leaves_a_trailing_slash() {
        // RFC 3986 §5.2.4: "/a/b/.." → "/a/", "/a/." → "/a/".
        assert_eq!(norm("/a/b/..", DEFAULT).unwrap(), "/a/");
        assert_eq!(norm("/a/.", DEFAULT).unwrap(), "/a/");
        assert_eq!(norm("/a/..", DEFAULT).unwrap(), "/");
        assert_eq!(norm("/.", DEFAULT).unwrap(), "/");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in [
            "/..",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e/x",
            "/a/%2E%2E/..",
        ] {
            assert_eq!(norm(path, DEFAULT), Err(PathError::AboveRoot), "{path}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/x", DEFAULT).unwrap(), "/x");
        assert_eq!(norm("/a/%2E./x", DEFAULT).unwrap(), "/x");
        assert_eq!(norm("/a/.%2e/x", DEFAULT).unwrap(), "/x");
        assert_eq!(norm("/a/%2e/x", DEFAULT).unwrap(), "/a/x");
        assert_eq!(norm("/%2E./x", DEFAULT), Err(PathError::AboveRoot));
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_upper_cased() {
        assert_eq!(norm("/%41pi", DEFAULT).unwrap(), "/Api");
        assert_eq!(norm("/%7e%2D%5f%30", DEFAULT).unwrap(), "/~-_0");
        assert_eq!(norm("/a%20b%3f", DEFAULT).unwrap(), "/a%20b%3F");
        assert_eq!(norm("/%25", DEFAULT).unwrap(), "/%25");
        // Non-ASCII stays encoded: only unreserved characters are decoded.
        assert_eq!(norm("/caf%c3%a9", DEFAULT).unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/caf\u{e9}/./x", DEFAULT).unwrap(), "/caf\u{e9}/x");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for path in ["/%", "/a%", "/%4", "/%G1", "/%zz", "/%4g/x", "/%%41"] {
            assert_eq!(
                norm(path, DEFAULT),
                Err(PathError::MalformedEscape),
                "{path}"
            );
            assert_eq!(norm(path, KEEP), Err(PathError::MalformedEscape), "{path}");
        }
    }

    #[test]
    fn escaped_slashes_are_refused_or_kept() {
        for path in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb"] {
            assert_eq!(norm(path, DEFAULT), Err(PathError::EscapedSlash), "{path}");
        }
        assert_eq!(norm("/a%2fb", KEEP).unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%5cb", KEEP).unwrap(), "/a%5Cb");
        // Kept, an encoded slash never splits a segment here.
        assert_eq!(norm("/a/..%2F../b", KEEP).unwrap(), "/a/..%2F../b");
        assert_eq!(norm("/a/b%2F../c", KEEP).unwrap(), "/a/b%2F../c");
    }

    #[test]
    fn raw_backslashes_follow_the_escaped_slash_rule() {
        assert_eq!(norm("/a\\b", DEFAULT), Err(PathError::Backslash));
        assert_eq!(
            norm("/api\\..\\documents", DEFAULT),
            Err(PathError::Backslash)
        );
        assert_eq!(norm("/a\\b/../c", KEEP).unwrap(), "/c");
    }

    #[test]
    fn slashes_merge_when_configured() {
        assert_eq!(norm("//a///b", DEFAULT).unwrap(), "/a/b");
        assert_eq!(norm("/a//", DEFAULT).unwrap(), "/a/");
        assert_eq!(norm("//", DEFAULT).unwrap(), "/");
        assert_eq!(norm("//a///b", NO_MERGE).unwrap(), "//a///b");
        assert_eq!(norm("/a//b/./", NO_MERGE).unwrap(), "/a//b/");
    }

    #[test]
    fn dot_segments_without_merging_follow_the_rfc() {
        // "/a//.." : ".." removes the empty segment between the two slashes.
        assert_eq!(norm("/a//..", NO_MERGE).unwrap(), "/a/");
        assert_eq!(norm("/a//../b", NO_MERGE).unwrap(), "/a/b");
        assert_eq!(norm("//..", NO_MERGE).unwrap(), "/");
        assert_eq!(norm("//../..", NO_MERGE), Err(PathError::AboveRoot));
        assert_eq!(norm("/a//..", DEFAULT).unwrap(), "/");
    }

    #[test]
    fn relative_paths_needing_work_are_refused() {
        assert_eq!(norm("a/../b", DEFAULT), Err(PathError::NotAbsolute));
        assert!(is_borrowed("*", DEFAULT));
    }
}
