//! One decision-log line, written as JSON by hand into the writer's buffer.
//!
//! serde_json wrote the line in about as much time as the decision took: every key went through
//! its string escaper byte by byte, the times and the address through the formatting machinery.
//! Here the keys are literals, a string is copied as it is unless it holds a byte JSON escapes
//! (then serde_json escapes it), the line's time is formatted once per millisecond, and the
//! request's address and time are written digit by digit. The output is byte for byte what
//! serde_json writes for the same line (`tests::lines_are_what_serde_json_writes`).
//!
//! Redaction is applied while writing: each key asks which configured paths reach it (a bit set),
//! instead of building the input as a JSON tree and editing it.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use serde_json::{Map, Value as Json};

use super::Input;
use crate::request::{Ipv4Text, Principal, RequestContext, Resource};

const REDACTED: &str = "[redacted]";

/// At most this many redaction paths: which of them apply at a point of the input is a bit set.
pub const MAX_REDACTIONS: usize = 64;

/// What one line says besides the input.
pub(super) struct Line<'a> {
    pub decision_id: &'a str,
    pub time: SystemTime,
    pub allow: bool,
    pub reason: &'a str,
    pub policy_id: Option<&'a str>,
    pub policy_version: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub policy_set: &'a str,
    pub latency_us: f64,
}

impl Line<'_> {
    /// The line (without its newline), the input redacted as `redactions` say.
    pub fn write(&self, input: &Input<'_>, redactions: &Redactions, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"decision_id\":");
        string(out, self.decision_id);
        out.extend_from_slice(b",\"time\":\"");
        rfc3339_millis(out, self.time);
        out.extend_from_slice(if self.allow {
            b"\",\"result\":\"allow\",\"reason\":"
        } else {
            b"\",\"result\":\"deny\",\"reason\":"
        });
        string(out, self.reason);
        out.extend_from_slice(b",\"policy_id\":");
        optional_string(out, self.policy_id);
        out.extend_from_slice(b",\"policy_version\":");
        optional_string(out, self.policy_version);
        out.extend_from_slice(b",\"rule\":");
        optional_string(out, self.rule);
        out.extend_from_slice(b",\"policy_set\":");
        string(out, self.policy_set);
        out.extend_from_slice(b",\"latency_us\":");
        // serde_json's own number formatting (and `null` for what JSON cannot hold).
        let _ = serde_json::to_writer(&mut *out, &self.latency_us);
        out.extend_from_slice(b",\"input\":");
        write_input(out, input, redactions.all());
        out.push(b'}');
    }
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

    /// Every path, at the top of the input.
    fn all(&self) -> Active<'_> {
        Active {
            redactions: self,
            depth: 0,
            paths: match self.paths.len() {
                MAX_REDACTIONS => u64::MAX,
                n => (1u64 << n) - 1,
            },
        }
    }
}

/// The redaction paths that lead to one point of the input (a bit per path), all `depth`
/// segments deep.
#[derive(Clone, Copy)]
struct Active<'r> {
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

    /// No path: everything below is written as it is.
    fn none(self) -> Self {
        Self { paths: 0, ..self }
    }
}

/// Writes one member of an object: `,"key":` (no comma before the first) and the value,
/// `[redacted]` instead when a path ends at it.
fn member<T: ?Sized>(
    out: &mut Vec<u8>,
    first: &mut bool,
    key: &str,
    value: &T,
    active: Active<'_>,
    write: fn(&mut Vec<u8>, &T, Active<'_>),
) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    string(out, key);
    out.push(b':');
    match active.under(key) {
        Under::Nothing => write(out, value, active.none()),
        Under::Whole => string(out, REDACTED),
        Under::Inside(inside) => write(out, value, inside),
    }
}

// The request types, key by key as their derived `Serialize` writes them (names, order, keys
// skipped when absent): `tests::lines_are_what_serde_json_writes` holds the two together.

fn write_input(out: &mut Vec<u8>, input: &Input<'_>, active: Active<'_>) {
    let first = &mut true;
    out.push(b'{');
    member(
        out,
        first,
        "principal",
        input.principal,
        active,
        write_principal,
    );
    member(
        out,
        first,
        "resource",
        input.resource,
        active,
        write_resource,
    );
    member(out, first, "action", input.action, active, write_str);
    member(out, first, "context", input.context, active, write_context);
    out.push(b'}');
}

fn write_principal(out: &mut Vec<u8>, p: &Principal, active: Active<'_>) {
    let first = &mut true;
    out.push(b'{');
    member(out, first, "sub", p.sub.as_str(), active, write_str);
    member(
        out,
        first,
        "roles",
        p.roles.as_slice(),
        active,
        write_strings,
    );
    member(
        out,
        first,
        "attributes",
        &p.attributes,
        active,
        write_object,
    );
    out.push(b'}');
}

fn write_resource(out: &mut Vec<u8>, r: &Resource, active: Active<'_>) {
    let first = &mut true;
    out.push(b'{');
    member(out, first, "type", r.kind.as_str(), active, write_str);
    member(out, first, "id", r.id.as_str(), active, write_str);
    if let Some(owner) = &r.owner {
        member(out, first, "owner", owner.as_str(), active, write_str);
    }
    member(
        out,
        first,
        "attributes",
        &r.attributes,
        active,
        write_object,
    );
    out.push(b'}');
}

fn write_context(out: &mut Vec<u8>, c: &RequestContext, active: Active<'_>) {
    let first = &mut true;
    out.push(b'{');
    if let Some(ip) = &c.ip {
        member(out, first, "ip", ip, active, write_ip);
    }
    if let Some(time) = &c.time {
        member(out, first, "time", time, active, write_time);
    }
    for (key, value) in &c.extra {
        member(out, first, key, value, active, write_json);
    }
    out.push(b'}');
}

fn write_str(out: &mut Vec<u8>, s: &str, _: Active<'_>) {
    string(out, s);
}

fn write_strings(out: &mut Vec<u8>, items: &[String], _: Active<'_>) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Json>, active: Active<'_>) {
    let first = &mut true;
    out.push(b'{');
    for (key, value) in map {
        member(out, first, key, value, active, write_json);
    }
    out.push(b'}');
}

fn write_json(out: &mut Vec<u8>, value: &Json, active: Active<'_>) {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(true) => out.extend_from_slice(b"true"),
        Json::Bool(false) => out.extend_from_slice(b"false"),
        Json::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Json::String(s) => string(out, s),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Paths name keys: inside a list nothing is redacted.
                write_json(out, item, active.none());
            }
            out.push(b']');
        }
        Json::Object(map) => write_object(out, map, active),
    }
}

fn write_ip(out: &mut Vec<u8>, ip: &IpAddr, _: Active<'_>) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'"');
            out.extend_from_slice(Ipv4Text::new(*v4).as_str().as_bytes());
            out.push(b'"');
        }
        IpAddr::V6(_) => string(out, &ip.to_string()),
    }
}

/// As chrono's `Serialize` writes it: RFC 3339, fractional seconds as needed (3, 6 or 9
/// digits), `Z` for UTC. Years beyond four digits, leap seconds and offsets with seconds go to
/// chrono itself.
fn write_time(out: &mut Vec<u8>, t: &DateTime<FixedOffset>, _: Active<'_>) {
    let offset = t.offset().local_minus_utc();
    let local = t.naive_local();
    let nano = local.nanosecond();
    if !(0..=9999).contains(&local.year()) || nano >= 1_000_000_000 || offset % 60 != 0 {
        let _ = serde_json::to_writer(&mut *out, t);
        return;
    }
    out.push(b'"');
    digits(out, local.year() as u32, 4);
    out.push(b'-');
    digits(out, local.month(), 2);
    out.push(b'-');
    digits(out, local.day(), 2);
    out.push(b'T');
    digits(out, local.hour(), 2);
    out.push(b':');
    digits(out, local.minute(), 2);
    out.push(b':');
    digits(out, local.second(), 2);
    if nano == 0 {
    } else if nano % 1_000_000 == 0 {
        out.push(b'.');
        digits(out, nano / 1_000_000, 3);
    } else if nano % 1_000 == 0 {
        out.push(b'.');
        digits(out, nano / 1_000, 6);
    } else {
        out.push(b'.');
        digits(out, nano, 9);
    }
    if offset == 0 {
        out.push(b'Z');
    } else {
        out.push(if offset < 0 { b'-' } else { b'+' });
        let minutes = offset.unsigned_abs() / 60;
        digits(out, minutes / 60, 2);
        out.push(b':');
        digits(out, minutes % 60, 2);
    }
    out.push(b'"');
}

/// `n` in decimal, zero-padded to `width` digits (`n` has at most `width`).
fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
    }
}

/// A JSON string: copied between quotes when no byte needs escaping (JSON escapes control
/// characters, `"` and `\`), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `2026-11-23T09:00:00.123Z` (humantime's millisecond RFC 3339), formatted once per
/// millisecond on each thread: decisions come microseconds apart.
fn rfc3339_millis(out: &mut Vec<u8>, time: SystemTime) {
    thread_local! {
        /// The millisecond last formatted (since the epoch), and its text.
        static LAST: RefCell<(u128, [u8; 24])> = const { RefCell::new((u128::MAX, [0; 24])) };
    }
    let millis = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(u128::MAX - 1, |d| d.as_millis());
    let cached = LAST.try_with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        if last.0 != millis {
            let mut text = Vec::with_capacity(24);
            use std::io::Write;
            write!(text, "{}", humantime::format_rfc3339_millis(time)).ok()?;
            last.1 = text.try_into().ok()?;
            last.0 = millis;
        }
        out.extend_from_slice(&last.1);
        Some(())
    });
    if !matches!(cached, Ok(Some(()))) {
        out.extend_from_slice(
            humantime::format_rfc3339_millis(time)
                .to_string()
                .as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    /// The line as serde_json wrote it before: the reference for the hand-written one.
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

    fn request(body: Json) -> crate::request::Request {
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn input(r: &crate::request::Request) -> Input<'_> {
        Input {
            principal: &r.principal,
            resource: &r.resource,
            action: &r.action,
            context: &r.context,
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

    fn line<'a>(allow: bool, latency_us: f64) -> Line<'a> {
        Line {
            decision_id: "00ff00ff00ff00ff0000000000000001",
            time: SystemTime::now(),
            allow,
            reason: "allowed by rule \"r\" of policy \"p\"",
            policy_id: if allow { Some("p") } else { None },
            policy_version: if allow { Some("2026-11-23") } else { None },
            rule: if allow { Some("r") } else { None },
            policy_set: "351c9623495b",
            latency_us,
        }
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
                let line = line(allow, latency);
                let mut ours = Vec::new();
                line.write(&input(r), &none, &mut ours);
                let reference = serde_json::to_string(&SerdeLine {
                    decision_id: line.decision_id,
                    time: humantime::format_rfc3339_millis(line.time).to_string(),
                    result: if allow { "allow" } else { "deny" },
                    reason: line.reason,
                    policy_id: line.policy_id,
                    policy_version: line.policy_version,
                    rule: line.rule,
                    policy_set: line.policy_set,
                    latency_us: line.latency_us,
                    input: &input(r),
                })
                .unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&ours), reference);
            }
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
                let mut text = Vec::new();
                line(true, 1.0).write(&input, &redactions, &mut text);
                let got: Json = serde_json::from_slice(&text).unwrap_or_default();
                assert_eq!(got["input"], expected, "paths {paths:?}");
            }
        }
    }

    #[test]
    fn the_line_time_is_humantimes_millisecond_form() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        // The same millisecond twice (from the cache), the next ones, a second boundary.
        for offset_us in [0, 100, 999, 1_000, 1_500, 877_000, 877_001, 10_000_000] {
            let t = base + std::time::Duration::from_micros(offset_us);
            let mut out = Vec::new();
            rfc3339_millis(&mut out, t);
            assert_eq!(
                String::from_utf8_lossy(&out),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }
}
