//! The decision log: one JSON line per decision (id, time, input with configured attributes
//! redacted, result, deciding policy/version/rule, latency), for audit.
//!
//! Decisions never wait for the disk: lines go to the kit's [`LineWriter`] (a bounded queue and a
//! writer thread), and a line that finds the queue full is dropped and counted
//! (`gatehouse_authz_decision_log_dropped_total`). The file rotates by size: `decisions.log` →
//! `decisions.log.1` → … → `.{keep_files}`.
//!
//! A line is serialised on the deciding thread by serde_json straight into the writer's reused
//! buffer ([`LineWriter::write_with`]), with redaction applied on the way ([`line`]): no copy of
//! the input, no string of its own.

mod line;

use std::time::SystemTime;

use gatehouse_service::{LineWriter, Sink};
use serde::Serialize;

use crate::config::DecisionLogSettings;
use crate::decision::Decision;
use crate::metrics;
use crate::request::{Principal, RequestContext, Resource};

pub use line::MAX_REDACTIONS;
use line::{Line, Redactions};

/// What was asked: borrowed from the request, so logging copies nothing before serialising.
#[derive(Serialize)]
pub struct Input<'a> {
    pub principal: &'a Principal,
    pub resource: &'a Resource,
    pub action: &'a str,
    pub context: &'a RequestContext,
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

    /// Logs `decision`, made at `time` (the caller's clock read, shared with its latency metric).
    pub fn record(
        &self,
        decision: &Decision,
        input: Input<'_>,
        policy_set: &str,
        time: SystemTime,
        latency_us: f64,
    ) {
        let line = Line {
            decision_id: &decision.decision_id,
            time,
            result: if decision.allow { "allow" } else { "deny" },
            reason: &decision.reason,
            policy_id: decision.policy_id.as_deref(),
            policy_version: decision.policy_version.as_deref(),
            rule: decision.rule.as_deref(),
            policy_set,
            latency_us,
            input: self.redactions.apply(&input),
        };
        // Into memory, from types whose `Serialize` cannot fail (string keys, non-finite
        // numbers written as null): an error here would be a bug, not a full disk.
        if let Err(e) = self
            .lines
            .write_with(|buf| serde_json::to_writer(buf, &line).map_err(std::io::Error::from))
        {
            tracing::error!(error = %e, "decision-log line not serialisable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as Json};

    const REDACTED: &str = "[redacted]";

    /// Shared with `line`'s tests.
    pub(super) fn request(body: Json) -> crate::request::Request {
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn input(r: &crate::request::Request) -> Input<'_> {
        Input {
            principal: &r.principal,
            resource: &r.resource,
            action: &r.action,
            context: &r.context,
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
        log.record(&decision, input(&r), "set-1", SystemTime::now(), 1.5);
        log.record(&decision, input(&r), "set-1", SystemTime::now(), 2.5);
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
