//! The decision log: one JSON line per decision (id, time, input with configured attributes
//! redacted, result, deciding policy/version/rule, latency), for audit.
//!
//! Decisions never wait for the disk: lines go to the kit's [`LineWriter`] (a bounded queue and a
//! writer thread), and a line that finds the queue full is dropped and counted
//! (`gatehouse_authz_decision_log_dropped_total`). The file rotates by size: `decisions.log` →
//! `decisions.log.1` → … → `.{keep_files}`.
//!
//! A line is serialised on the deciding thread straight into the writer's reused buffer
//! ([`LineWriter::write_with`]): the time is formatted into it, and redaction is applied while
//! the input is written (the paths that reach each key, as a bit set) instead of on a JSON copy
//! of the input. Building that copy, a tree of maps and strings, cost more than the rest of the
//! line.

use std::time::SystemTime;

use gatehouse_service::{LineWriter, Sink};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::config::DecisionLogSettings;
use crate::decision::Decision;
use crate::metrics;
use crate::request::{Principal, RequestContext, Resource};

const REDACTED: &str = "[redacted]";

/// At most this many redaction paths: which of them apply at a point of the input is a bit set.
pub const MAX_REDACTIONS: usize = 64;

/// What was asked: borrowed from the request, so logging copies nothing before serialising.
#[derive(Serialize)]
pub struct Input<'a> {
    pub principal: &'a Principal,
    pub resource: &'a Resource,
    pub action: &'a str,
    pub context: &'a RequestContext,
}

/// One line. Serialised straight into the writer's reused buffer: the time is formatted into
/// it and the input redacted while it is written, so a line allocates nothing of its own.
#[derive(Serialize)]
struct Line<'a> {
    decision_id: &'a str,
    time: Rfc3339Millis,
    result: &'static str,
    reason: &'a str,
    policy_id: Option<&'a str>,
    policy_version: Option<&'a str>,
    rule: Option<&'a str>,
    policy_set: &'a str,
    latency_us: f64,
    input: Redacting<'a, Input<'a>>,
}

/// `2026-11-23T09:00:00.123Z`, written by the serialiser without an intermediate string.
struct Rfc3339Millis(SystemTime);

impl Serialize for Rfc3339Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

#[derive(Clone)]
pub struct DecisionLog {
    lines: LineWriter,
    redactions: Redactions,
}

impl DecisionLog {
    /// Opens the file (errors here, not on the first decision) and starts its writer thread.
    pub fn open(settings: &DecisionLogSettings) -> std::io::Result<Self> {
        if settings.redact.len() > MAX_REDACTIONS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("at most {MAX_REDACTIONS} redaction paths"),
            ));
        }
        let sink = Sink::log(&settings.path, settings.max_file_bytes, settings.keep_files);
        let lines = LineWriter::start(
            "decision-log",
            sink,
            settings.queue,
            metrics::LOG_DROPS.clone(),
        )?;
        Ok(Self {
            lines,
            redactions: Redactions::new(&settings.redact),
        })
    }

    pub fn record(&self, decision: &Decision, input: Input<'_>, policy_set: &str, latency_us: f64) {
        let line = Line {
            decision_id: &decision.decision_id,
            time: Rfc3339Millis(SystemTime::now()),
            result: if decision.allow { "allow" } else { "deny" },
            reason: &decision.reason,
            policy_id: decision.policy_id.as_deref(),
            policy_version: decision.policy_version.as_deref(),
            rule: decision.rule.as_deref(),
            policy_set,
            latency_us,
            input: Redacting(&input, self.redactions.all()),
        };
        let written = self
            .lines
            .write_with(|buf| serde_json::to_writer(buf, &line).map_err(Into::into));
        if let Err(e) = written {
            tracing::error!(error = %e, "decision not serialisable");
        }
    }
}

/// The configured redaction paths (`principal.attributes.email`, `resource.attributes.*`), split
/// into segments.
#[derive(Clone)]
struct Redactions {
    paths: Vec<Vec<String>>,
}

impl Redactions {
    fn new(paths: &[String]) -> Self {
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
    /// other paths would redact inside it.
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

/// A value of the logged input, written with the redaction paths that reach it applied:
/// `[redacted]` replaces what a path names (`*`: every key of an object); only objects have
/// keys, so a path into anything else redacts nothing.
trait Redact: Serialize {
    fn serialize_redacted<S: Serializer>(&self, _: Active<'_>, s: S) -> Result<S::Ok, S::Error> {
        self.serialize(s)
    }
}

/// `value` with `active`'s paths applied; as it is (the derived serialisation) when none reach it.
struct Redacting<'a, T: ?Sized>(&'a T, Active<'a>);

impl<T: Redact + ?Sized> Serialize for Redacting<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.1.paths == 0 {
            self.0.serialize(s)
        } else {
            self.0.serialize_redacted(self.1, s)
        }
    }
}

/// One key of an object, redacted as the active paths say.
fn entry<M: SerializeMap, T: Redact + ?Sized>(
    map: &mut M,
    key: &str,
    value: &T,
    active: Active<'_>,
) -> Result<(), M::Error> {
    match active.under(key) {
        Under::Nothing => map.serialize_entry(key, value),
        Under::Whole => map.serialize_entry(key, REDACTED),
        Under::Inside(inside) => map.serialize_entry(key, &Redacting(value, inside)),
    }
}

impl Redact for str {}
impl Redact for String {}
impl Redact for Vec<String> {}
impl Redact for Option<String> {}
impl Redact for std::net::IpAddr {}
impl Redact for chrono::DateTime<chrono::FixedOffset> {}

impl Redact for Json {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match self {
            Json::Object(map) => map.serialize_redacted(active, s),
            other => other.serialize(s),
        }
    }
}

impl Redact for Map<String, Json> {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (key, value) in self {
            entry(&mut map, key, value, active)?;
        }
        map.end()
    }
}

// The request types, key by key as their derived `Serialize` writes them (names, order, keys
// skipped when absent); `redacted_input_is_the_input_tree_redacted` holds the two together.

impl Redact for Input<'_> {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        entry(&mut map, "principal", self.principal, active)?;
        entry(&mut map, "resource", self.resource, active)?;
        entry(&mut map, "action", self.action, active)?;
        entry(&mut map, "context", self.context, active)?;
        map.end()
    }
}

impl Redact for Principal {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        entry(&mut map, "sub", &self.sub, active)?;
        entry(&mut map, "roles", &self.roles, active)?;
        entry(&mut map, "attributes", &self.attributes, active)?;
        map.end()
    }
}

impl Redact for Resource {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        entry(&mut map, "type", &self.kind, active)?;
        entry(&mut map, "id", &self.id, active)?;
        if self.owner.is_some() {
            entry(&mut map, "owner", &self.owner, active)?;
        }
        entry(&mut map, "attributes", &self.attributes, active)?;
        map.end()
    }
}

impl Redact for RequestContext {
    fn serialize_redacted<S: Serializer>(
        &self,
        active: Active<'_>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(ip) = &self.ip {
            entry(&mut map, "ip", ip, active)?;
        }
        if let Some(time) = &self.time {
            entry(&mut map, "time", time, active)?;
        }
        for (key, value) in &self.extra {
            entry(&mut map, key, value, active)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// How redaction was defined before it was done while serialising: the input as a JSON
    /// tree, each path applied in turn. The reference the serialiser must agree with.
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

    #[test]
    fn redacted_input_is_the_input_tree_redacted() {
        let requests = [
            request(json!({
                "principal": {"sub": "alice", "roles": ["editor", "admin"],
                    "attributes": {"email": "a@x", "level": 3, "nested": {"x": 1, "y": [1, 2]}}},
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
        ];
        let path_sets: &[&[&str]] = &[
            &[],
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
            // Into values that are not objects: nothing to redact.
            &[
                "principal.sub.x",
                "principal.roles.0",
                "context.ip.y",
                "resource.owner.z",
            ],
            // Keys nobody sent: every key the request types write must still be written.
            &["principal.nosuch", "resource.nosuch", "context.nosuch"],
        ];
        for r in &requests {
            for paths in path_sets {
                let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                let redactions = Redactions::new(&paths);
                let input = input(r);
                let mut expected = serde_json::to_value(&input).unwrap_or_default();
                for path in &redactions.paths {
                    redact_tree(&mut expected, path);
                }
                let redacted = Redacting(&input, redactions.all());
                let text = serde_json::to_string(&redacted).unwrap_or_default();
                let got: Json = serde_json::from_str(&text).unwrap_or_default();
                assert_eq!(got, expected, "paths {paths:?}");
            }
        }
    }

    #[test]
    fn a_line_names_the_decision_and_the_redacted_input() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("decisions.log");
        let log = DecisionLog::open(&DecisionLogSettings {
            path: path.display().to_string(),
            queue: 16,
            max_file_bytes: 1 << 20,
            keep_files: 1,
            redact: vec![
                "principal.attributes.email".into(),
                "resource.attributes.*".into(),
            ],
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let r = request(json!({
            "principal": {"sub": "alice", "attributes": {"email": "a@x", "level": 3}},
            "resource": {"type": "document", "attributes": {"ssn": "078-05-1120", "title": "t"}},
            "action": "view",
            "context": {"time": "2026-11-23T10:00:00+01:00"},
        }));
        let decision = Decision {
            decision_id: "0123".into(),
            allow: true,
            reason: "allowed by rule \"r\" of policy \"p\"".into(),
            policy_id: Some("p".into()),
            policy_version: Some("1".into()),
            rule: Some("r".into()),
            explanation: None,
            condition_error: false,
        };
        log.record(&decision, input(&r), "set-1", 1.5);
        log.record(&decision, input(&r), "set-1", 2.5);
        // Dropping the log writes what is queued.
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let line = &lines[0];
        assert_eq!(line["decision_id"], "0123");
        assert_eq!(line["result"], "allow");
        assert_eq!(line["reason"], decision.reason);
        assert_eq!(line["policy_id"], "p");
        assert_eq!(line["policy_version"], "1");
        assert_eq!(line["rule"], "r");
        assert_eq!(line["policy_set"], "set-1");
        assert_eq!(line["latency_us"], 1.5);
        assert_eq!(lines[1]["latency_us"], 2.5);
        let time = line["time"].as_str().unwrap_or_default();
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.len() == 24,
            "{time}"
        );
        assert_eq!(
            line["input"],
            json!({
                "principal": {"sub": "alice", "roles": [], "attributes": {"email": REDACTED, "level": 3}},
                "resource": {"type": "document", "id": "", "attributes": {"ssn": REDACTED, "title": REDACTED}},
                "action": "view",
                "context": {"time": "2026-11-23T10:00:00+01:00"},
            })
        );
        assert!(!text.contains("a@x") && !text.contains("078-05"), "{text}");
    }

    #[test]
    fn more_redaction_paths_than_the_bit_set_holds_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = |n: usize| DecisionLogSettings {
            path: dir.path().join("d.log").display().to_string(),
            queue: 16,
            max_file_bytes: 1 << 20,
            keep_files: 1,
            redact: (0..n).map(|i| format!("context.k{i}")).collect(),
        };
        assert!(DecisionLog::open(&settings(MAX_REDACTIONS)).is_ok());
        assert!(DecisionLog::open(&settings(MAX_REDACTIONS + 1)).is_err());
    }
}
