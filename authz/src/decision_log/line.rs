//! One decision-log line: a borrowed `#[derive(Serialize)]` struct that `serde_json::to_writer`
//! writes straight into the log writer's reused per-thread buffer (no string of its own, no
//! copy of the input).
//!
//! Redaction is applied while serialising: each object's keys ask which configured paths reach
//! them (a bit set), and a value no path reaches is handed to its own derived `Serialize`
//! untouched, instead of building the input as a JSON tree and editing it. serde_json does all
//! the JSON (escaping, numbers, the addresses' and times' text).

use std::time::SystemTime;

use chrono::{DateTime, FixedOffset};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::Input;
use crate::request::{Principal, RequestContext, Resource};

const REDACTED: &str = "[redacted]";

/// At most this many redaction paths: which of them apply at a point of the input is a bit set.
pub const MAX_REDACTIONS: usize = 64;

/// One line, as it is written (field names and order are the log's format).
#[derive(Serialize)]
pub(super) struct Line<'a> {
    pub decision_id: &'a str,
    /// `2026-11-23T09:00:00.123Z` (RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: SystemTime,
    /// `allow` or `deny`.
    pub result: &'static str,
    pub reason: &'a str,
    pub policy_id: Option<&'a str>,
    pub policy_version: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub policy_set: &'a str,
    pub latency_us: f64,
    pub input: Redacted<'a, Input<'a>>,
}

/// humantime's millisecond form, written by serde_json without a `String` in between.
fn rfc3339_millis<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The configured redaction paths (`principal.attributes.email`, `resource.attributes.*`), split
/// into segments.
#[derive(Clone)]
pub(super) struct Redactions {
    paths: Vec<Vec<String>>,
}

impl Redactions {
    pub fn new(paths: &[String]) -> Self {
        Self {
            paths: paths
                .iter()
                .take(MAX_REDACTIONS)
                .map(|p| p.split('.').map(String::from).collect())
                .collect(),
        }
    }

    /// `value` (the whole input) as logged: redacted where these paths say.
    pub fn apply<'a, T: Redact + ?Sized>(&'a self, value: &'a T) -> Redacted<'a, T> {
        Redacted {
            value,
            paths: Active {
                redactions: self,
                depth: 0,
                paths: match self.paths.len() {
                    MAX_REDACTIONS => u64::MAX,
                    n => (1u64 << n) - 1,
                },
            },
        }
    }
}

/// The redaction paths that lead to one point of the input (a bit per path), all `depth`
/// segments deep.
#[derive(Clone, Copy)]
pub(super) struct Active<'r> {
    redactions: &'r Redactions,
    depth: usize,
    paths: u64,
}

/// What the redaction paths make of the value under one key.
enum Under<'r> {
    /// No path goes there: the value as it is.
    Nothing,
    /// A path ends there: `[redacted]` instead of the value.
    Whole,
    /// Paths go further inside.
    Inside(Active<'r>),
}

impl<'r> Active<'r> {
    /// `*` matches every key. A path that ends at `key` redacts the whole value, whatever
    /// other paths would redact inside it. Only objects have keys: a path into anything else
    /// redacts nothing.
    fn under(self, key: &str) -> Under<'r> {
        let mut inside = 0u64;
        let mut bits = self.paths;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let path = &self.redactions.paths[i];
            let Some(segment) = path.get(self.depth) else {
                continue;
            };
            if segment == key || segment == "*" {
                if path.len() == self.depth + 1 {
                    return Under::Whole;
                }
                inside |= 1 << i;
            }
        }
        match inside {
            0 => Under::Nothing,
            paths => Under::Inside(Active {
                redactions: self.redactions,
                depth: self.depth + 1,
                paths,
            }),
        }
    }
}

/// A value as logged: `paths` redact inside it.
pub(super) struct Redacted<'a, T: ?Sized> {
    value: &'a T,
    paths: Active<'a>,
}

impl<T: Redact + ?Sized> Serialize for Redacted<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.paths.paths == 0 {
            self.value.serialize(s)
        } else {
            self.value.serialize_redacted(self.paths, s)
        }
    }
}

/// A part of the input that redaction paths can reach into. Only objects have keys: anything
/// else (strings, lists, addresses, times) is written as it is, whatever the paths.
pub(super) trait Redact: Serialize {
    fn serialize_redacted<S: Serializer>(
        &self,
        _paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        self.serialize(s)
    }
}

/// An object's members written one by one, each as the paths reaching its key say.
struct Members<'r, M> {
    map: M,
    paths: Active<'r>,
}

impl<'r, M: SerializeMap> Members<'r, M> {
    fn start<S: Serializer<SerializeMap = M>>(s: S, paths: Active<'r>) -> Result<Self, S::Error> {
        Ok(Self {
            map: s.serialize_map(None)?,
            paths,
        })
    }

    fn member<T: Redact + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), M::Error> {
        match self.paths.under(key) {
            Under::Nothing => self.map.serialize_entry(key, value),
            Under::Whole => self.map.serialize_entry(key, REDACTED),
            Under::Inside(paths) => self.map.serialize_entry(key, &Redacted { value, paths }),
        }
    }

    fn end(self) -> Result<M::Ok, M::Error> {
        self.map.end()
    }
}

// The request types, key by key as their derived `Serialize` writes them (names, order, keys
// skipped when absent): `tests::redacting_nothing_writes_the_derived_line` holds the two together.

impl Redact for Input<'_> {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = Members::start(s, paths)?;
        m.member("principal", self.principal)?;
        m.member("resource", self.resource)?;
        m.member("action", self.action)?;
        m.member("context", self.context)?;
        m.end()
    }
}

impl Redact for Principal {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = Members::start(s, paths)?;
        m.member("sub", self.sub.as_str())?;
        m.member("roles", self.roles.as_slice())?;
        m.member("attributes", &self.attributes)?;
        m.end()
    }
}

impl Redact for Resource {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = Members::start(s, paths)?;
        m.member("type", self.kind.as_str())?;
        m.member("id", self.id.as_str())?;
        if let Some(owner) = &self.owner {
            m.member("owner", owner.as_str())?;
        }
        m.member("attributes", &self.attributes)?;
        m.end()
    }
}

impl Redact for RequestContext {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = Members::start(s, paths)?;
        if let Some(ip) = &self.ip {
            m.member("ip", ip)?;
        }
        if let Some(time) = &self.time {
            m.member("time", &Rfc3339(time))?;
        }
        for (key, value) in &self.extra {
            m.member(key, value)?;
        }
        m.end()
    }
}

impl Redact for Map<String, Json> {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = Members::start(s, paths)?;
        for (key, value) in self {
            m.member(key, value)?;
        }
        m.end()
    }
}

impl Redact for Json {
    fn serialize_redacted<S: Serializer>(
        &self,
        paths: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match self {
            Json::Object(map) => map.serialize_redacted(paths, s),
            // Paths name keys: inside a list (or a scalar) nothing is redacted.
            other => other.serialize(s),
        }
    }
}

impl Redact for str {}
impl Redact for [String] {}
impl Redact for std::net::IpAddr {}
impl Redact for Rfc3339<'_> {}

/// `context.time` as its derived `Serialize` writes it ([`crate::request::rfc3339`]).
struct Rfc3339<'a>(&'a DateTime<FixedOffset>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::request::rfc3339(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{input, request};
    use super::*;
    use serde_json::json;

    /// The line as serde_json wrote it before lines were serialised into the writer's buffer
    /// (the time an owned `String`, the input whole): the log's format, which must not change.
    #[derive(Serialize)]
    struct SerdeLine<'a> {
        decision_id: &'a str,
        time: String,
        result: &'static str,
        reason: &'a str,
        policy_id: Option<&'a str>,
        policy_version: Option<&'a str>,
        rule: Option<&'a str>,
        policy_set: &'a str,
        latency_us: f64,
        input: &'a Input<'a>,
    }

    /// How redaction was defined before it was done while writing: the input as a JSON tree,
    /// each path applied in turn.
    fn redact_tree(value: &mut Json, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Json::Object(map) = value else {
            return;
        };
        if first == "*" {
            for v in map.values_mut() {
                if rest.is_empty() {
                    *v = Json::String(REDACTED.into());
                } else {
                    redact_tree(v, rest);
                }
            }
        } else if let Some(v) = map.get_mut(first) {
            if rest.is_empty() {
                *v = Json::String(REDACTED.into());
            } else {
                redact_tree(v, rest);
            }
        }
    }

    fn requests() -> Vec<crate::request::Request> {
        let mut requests = vec![
            request(json!({
                "principal": {"sub": "alice", "roles": ["editor", "admin"],
                    "attributes": {"email": "a@x", "level": 3, "nested": {"x": 1, "y": [1, {"z": 2}]}}},
                "resource": {"type": "document", "id": "d1", "owner": "alice",
                    "attributes": {"ssn": "123", "title": "t", "nested": {"a": {"z": 1, "w": 2}, "b": {"z": 3}}}},
                "action": "view",
                "context": {"ip": "203.0.113.9", "time": "2026-11-23T10:00:00+01:00", "tenant": "acme",
                    "deep": {"k": {"j": "v"}}},
            })),
            // No owner, ip, time or attributes: keys skipped when absent stay absent.
            request(json!({
                "principal": {"sub": "bob"},
                "resource": {"type": "invoice"},
                "action": "pay",
            })),
            // What JSON escapes, non-ASCII text, numbers of every kind, an IPv6 address.
            request(json!({
                "principal": {"sub": "ré\"mi\\", "roles": ["tab\there", "nl\n", "\u{1}"],
                    "attributes": {"quote\"key": "v", "n": -12, "u": 18446744073709551615u64,
                        "f": 0.1, "e": 1e300, "z": 0.0, "t": true, "no": false, "nil": null,
                        "empty": {}, "list": []}},
                "resource": {"type": "dóc", "id": "\u{7f}\u{2028}", "owner": "",
                    "attributes": {"": "empty key"}},
                "action": "é",
                "context": {"ip": "2001:db8::1", "time": "2026-07-06T17:30:00.5-09:30"},
            })),
        ];
        // Times as the request parser reads them, each way chrono writes fractions and offsets.
        for time in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00+00:00",
            "2026-11-23T10:00:00.123+14:00",
            "2026-11-23T10:00:00.123456-00:30",
            "2026-11-23T10:00:00.123456789+05:45",
            "2026-11-23T10:00:00.100000001Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60Z",
        ] {
            requests.push(request(json!({
                "principal": {"sub": "a"}, "resource": {"type": "d"}, "action": "v",
                "context": {"time": time, "ip": "0.0.0.0"},
            })));
        }
        requests
    }

    const DECISION_ID: &str = "00ff00ff00ff00ff0000000000000001";
    const REASON: &str = "allowed by rule \"r\" of policy \"p\"";

    /// What the decision log writes for `input` (into a buffer, as `DecisionLog::record` does).
    fn write(
        allow: bool,
        latency_us: f64,
        time: SystemTime,
        input: &Input<'_>,
        redactions: &Redactions,
    ) -> String {
        let line = Line {
            decision_id: DECISION_ID,
            time,
            result: if allow { "allow" } else { "deny" },
            reason: REASON,
            policy_id: allow.then_some("p"),
            policy_version: allow.then_some("2026-11-23"),
            rule: allow.then_some("r"),
            policy_set: "351c9623495b",
            latency_us,
            input: redactions.apply(input),
        };
        let mut out = Vec::new();
        serde_json::to_writer(&mut out, &line).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lines_are_what_serde_json_writes() {
        let none = Redactions::new(&[]);
        for r in &requests() {
            for (allow, latency) in [
                (true, 1.25),
                (false, 0.0),
                (true, 1234.5678),
                (true, f64::NAN),
            ] {
                let time = SystemTime::now();
                let ours = write(allow, latency, time, &input(r), &none);
                let reference = serde_json::to_string(&SerdeLine {
                    decision_id: DECISION_ID,
                    time: humantime::format_rfc3339_millis(time).to_string(),
                    result: if allow { "allow" } else { "deny" },
                    reason: REASON,
                    policy_id: allow.then_some("p"),
                    policy_version: allow.then_some("2026-11-23"),
                    rule: allow.then_some("r"),
                    policy_set: "351c9623495b",
                    latency_us: latency,
                    input: &input(r),
                })
                .unwrap_or_default();
                assert_eq!(ours, reference);
            }
        }
    }

    /// Paths that walk into every object of the input (four levels of `*`) without ending at
    /// any key: every `Redact` impl writes its members, and the line must be byte for byte the
    /// one the derived `Serialize` writes (same keys, same order, same absent keys).
    #[test]
    fn redacting_nothing_writes_the_derived_line() {
        let none = Redactions::new(&[]);
        let everywhere = Redactions::new(&["*.*.*.*.nosuch".to_string()]);
        let time = SystemTime::now();
        for r in &requests() {
            assert_eq!(
                write(true, 1.5, time, &input(r), &everywhere),
                write(true, 1.5, time, &input(r), &none)
            );
        }
    }

    #[test]
    fn redacted_input_is_the_input_tree_redacted() {
        let path_sets: &[&[&str]] = &[
            &["principal.attributes.email"],
            &[
                "principal.attributes.email",
                "resource.attributes.*",
                "context.nothing.here",
            ],
            &["principal.*"],
            &["resource.*"],
            &["context.*"],
            &["principal.attributes", "principal.attributes.email"],
            &["principal.attributes.email", "principal.attributes"],
            &["resource.attributes.*", "resource.attributes.nested.a"],
            &[
                "resource.attributes.nested.*.z",
                "resource.attributes.title",
            ],
            &[
                "context.ip",
                "context.time",
                "context.tenant",
                "context.deep.k.j",
            ],
            // Into values that are not objects (lists included): nothing to redact.
            &[
                "principal.sub.x",
                "principal.roles.0",
                "context.ip.y",
                "resource.owner.z",
            ],
            &[
                "principal.attributes.nested.y.z",
                "principal.attributes.nested.y.*",
            ],
            // Keys nobody sent.
            &["principal.nosuch", "resource.nosuch", "context.nosuch"],
        ];
        for r in &requests() {
            for paths in path_sets {
                let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                let redactions = Redactions::new(&paths);
                let input = input(r);
                let mut expected = serde_json::to_value(&input).unwrap_or_default();
                for path in &redactions.paths {
                    redact_tree(&mut expected, path);
                }
                let text = write(true, 1.0, SystemTime::now(), &input, &redactions);
                let got: Json = serde_json::from_str(&text).unwrap_or_default();
                assert_eq!(got["input"], expected, "paths {paths:?}");
            }
        }
    }

    #[test]
    fn the_line_time_is_humantimes_millisecond_form() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        let none = Redactions::new(&[]);
        let r = &requests()[1];
        for offset_us in [0, 100, 999, 1_000, 1_500, 877_000, 877_001, 10_000_000] {
            let t = base + std::time::Duration::from_micros(offset_us);
            let line: Json =
                serde_json::from_str(&write(true, 1.0, t, &input(r), &none)).unwrap_or_default();
            assert_eq!(
                line["time"],
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }
}
