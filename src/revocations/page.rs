//! One answer of the revocation feed (issue #13's contract), read into what the follower needs.
//!
//! ```json
//! {"feed": "3f9c…", "cursor": "42", "more": false, "reset": false,
//!  "entries": [{"kind": "jti", "jti": "b1c2…", "exp": 1764400000},
//!              {"kind": "subject", "sub": "alice", "before": 1764399000, "exp": 1764400900}]}
//! ```
//!
//! Entries are read one by one: an unknown `kind` is skipped (forward compatibility), and so is
//! an entry of a known kind that lacks a field, so one bad entry cannot wedge the feed at a
//! cursor it would be asked for again and again. Both are counted for the log.

use serde::Deserialize;
use serde_json::Value;

/// Feed ids and cursors are short tokens; a longer one is a broken answer, not something to
/// echo into every later request URL.
const MAX_TOKEN_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Jti { jti: String, exp: u64 },
    Subject { sub: String, before: u64, exp: u64 },
}

#[derive(Debug)]
pub struct Page {
    pub feed: String,
    pub cursor: String,
    pub more: bool,
    pub reset: bool,
    pub entries: Vec<Entry>,
    /// Entries whose `kind` this gateway does not know.
    pub unknown: usize,
    /// Entries of a known kind with a missing or mistyped field.
    pub malformed: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("not a feed answer: {0}")]
    Json(String),
    #[error("`{0}` is empty or longer than {MAX_TOKEN_CHARS} characters")]
    Token(&'static str),
}

#[derive(Deserialize)]
struct Document {
    feed: String,
    cursor: String,
    #[serde(default)]
    more: bool,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    entries: Vec<Value>,
}

impl Page {
    pub fn parse(body: &[u8]) -> Result<Page, PageError> {
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| PageError::Json(e.to_string()))?;
        for (name, value) in [("feed", &doc.feed), ("cursor", &doc.cursor)] {
            if value.is_empty() || value.chars().count() > MAX_TOKEN_CHARS {
                return Err(PageError::Token(name));
            }
        }
        let mut page = Page {
            feed: doc.feed,
            cursor: doc.cursor,
            more: doc.more,
            reset: doc.reset,
            entries: Vec::with_capacity(doc.entries.len()),
            unknown: 0,
            malformed: 0,
        };
        for value in &doc.entries {
            match entry(value) {
                Read::Entry(e) => page.entries.push(e),
                Read::Unknown => page.unknown += 1,
                Read::Malformed => page.malformed += 1,
            }
        }
        Ok(page)
    }
}

enum Read {
    Entry(Entry),
    Unknown,
    Malformed,
}

fn entry(value: &Value) -> Read {
    let text = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // NumericDate may carry a fraction (RFC 7519 §2); whole seconds are enough here.
    let time = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_f64)
            .filter(|t| *t >= 0.0)
            .map(|t| t as u64)
    };
    let read = match value.get("kind").and_then(Value::as_str) {
        Some("jti") => text("jti")
            .zip(time("exp"))
            .map(|(jti, exp)| Entry::Jti { jti, exp }),
        Some("subject") => match (text("sub"), time("before"), time("exp")) {
            (Some(sub), Some(before), Some(exp)) => Some(Entry::Subject { sub, before, exp }),
            _ => None,
        },
        Some(_) => return Read::Unknown,
        None => None,
    };
    read.map_or(Read::Malformed, Read::Entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_example() {
        let body = br#"{"feed": "3f9c", "cursor": "42", "more": false, "reset": false,
            "entries": [
              {"kind": "jti", "jti": "b1c2", "exp": 1764400000},
              {"kind": "subject", "sub": "alice", "before": 1764399000, "exp": 1764400900}
            ]}"#;
        let page = Page::parse(body).unwrap();
        assert_eq!((page.feed.as_str(), page.cursor.as_str()), ("3f9c", "42"));
        assert!(!page.more && !page.reset);
        assert_eq!(
            page.entries,
            vec![
                Entry::Jti {
                    jti: "b1c2".into(),
                    exp: 1764400000
                },
                Entry::Subject {
                    sub: "alice".into(),
                    before: 1764399000,
                    exp: 1764400900
                }
            ]
        );
    }

    #[test]
    fn unknown_kinds_and_broken_entries_are_skipped_not_fatal() {
        let body = br#"{"feed": "f", "cursor": "3", "more": true, "entries": [
              {"kind": "session", "sid": "s1", "exp": 5, "new_field": [1]},
              {"kind": "jti", "exp": 5},
              {"kind": "subject", "sub": "bob", "exp": 5},
              {"jti": "no-kind", "exp": 5},
              {"kind": "jti", "jti": "ok", "exp": 5, "extra": true}
            ], "future_field": {}}"#;
        let page = Page::parse(body).unwrap();
        assert!(page.more && !page.reset);
        assert_eq!((page.unknown, page.malformed), (1, 3));
        assert_eq!(
            page.entries,
            vec![Entry::Jti {
                jti: "ok".into(),
                exp: 5
            }]
        );
    }

    #[test]
    fn a_broken_answer_is_an_error() {
        assert!(matches!(Page::parse(b"<html>"), Err(PageError::Json(_))));
        assert!(matches!(
            Page::parse(br#"{"cursor": "1"}"#),
            Err(PageError::Json(_))
        ));
        assert_eq!(
            Page::parse(br#"{"feed": "", "cursor": "1"}"#).unwrap_err(),
            PageError::Token("feed")
        );
        let long = format!(r#"{{"feed": "f", "cursor": "{}"}}"#, "9".repeat(300));
        assert_eq!(
            Page::parse(long.as_bytes()).unwrap_err(),
            PageError::Token("cursor")
        );
    }
}
