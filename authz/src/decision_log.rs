//! The decision log: one JSON line per decision (id, time, input with configured attributes
//! redacted, result, deciding policy/version/rule, latency), for audit.
//!
//! Decisions never wait for the disk: lines go to the kit's [`LineWriter`] (a bounded queue and a
//! writer thread), and a line that finds the queue full is dropped and counted
//! (`gatehouse_authz_decision_log_dropped_total`). The file rotates by size: `decisions.log` →
//! `decisions.log.1` → … → `.{keep_files}`.

use gatehouse_service::{LineWriter, Sink};
use serde::Serialize;
use serde_json::Value as Json;

use crate::config::DecisionLogSettings;
use crate::decision::Decision;
use crate::metrics;
use crate::request::{Principal, RequestContext, Resource};

const REDACTED: &str = "[redacted]";

/// What was asked: borrowed from the request, so logging copies nothing before serialising.
#[derive(Serialize)]
pub struct Input<'a> {
    pub principal: &'a Principal,
    pub resource: &'a Resource,
    pub action: &'a str,
    pub context: &'a RequestContext,
}

/// The input as logged: borrowed from the request, or a tree with redacted values.
#[derive(Serialize)]
#[serde(untagged)]
enum Logged<'a> {
    AsAsked(Input<'a>),
    Redacted(Json),
}

#[derive(Serialize)]
struct Line<'a> {
    decision_id: &'a str,
    time: String,
    result: &'static str,
    reason: &'a str,
    policy_id: Option<&'a str>,
    policy_version: Option<&'a str>,
    rule: Option<&'a str>,
    policy_set: &'a str,
    latency_us: f64,
    input: Logged<'a>,
}

#[derive(Clone)]
pub struct DecisionLog {
    lines: LineWriter,
    redact: Vec<Vec<String>>,
}

impl DecisionLog {
    /// Opens the file (errors here, not on the first decision) and starts its writer thread.
    pub fn open(settings: &DecisionLogSettings) -> std::io::Result<Self> {
        let sink = Sink::log(&settings.path, settings.max_file_bytes, settings.keep_files);
        let lines = LineWriter::start(
            "decision-log",
            sink,
            settings.queue,
            metrics::LOG_DROPS.clone(),
        )?;
        Ok(Self {
            lines,
            redact: settings
                .redact
                .iter()
                .map(|p| p.split('.').map(String::from).collect())
                .collect(),
        })
    }

    pub fn record(&self, decision: &Decision, input: Input<'_>, policy_set: &str, latency_us: f64) {
        // Redaction edits a JSON tree; without it the borrowed input is written as it is.
        let input = if self.redact.is_empty() {
            Logged::AsAsked(input)
        } else {
            match serde_json::to_value(&input) {
                Ok(mut tree) => {
                    for path in &self.redact {
                        redact(&mut tree, path);
                    }
                    Logged::Redacted(tree)
                }
                Err(e) => {
                    tracing::error!(error = %e, "decision input not serialisable");
                    return;
                }
            }
        };
        let line = Line {
            decision_id: &decision.decision_id,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            result: if decision.allow { "allow" } else { "deny" },
            reason: &decision.reason,
            policy_id: decision.policy_id.as_deref(),
            policy_version: decision.policy_version.as_deref(),
            rule: decision.rule.as_deref(),
            policy_set,
            latency_us,
            input,
        };
        let Ok(text) = serde_json::to_string(&line) else {
            return;
        };
        self.lines.write(&text);
    }
}

/// Replaces the value at `path` (a trailing `*`: every key of that object) with `[redacted]`.
fn redact(value: &mut Json, path: &[String]) {
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
                redact(v, rest);
            }
        }
    } else if let Some(v) = map.get_mut(first) {
        if rest.is_empty() {
            *v = Json::String(REDACTED.into());
        } else {
            redact(v, rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_paths_and_wildcards() {
        let mut v = serde_json::json!({
            "principal": {"sub": "alice", "attributes": {"email": "a@x", "level": 3}},
            "resource": {"attributes": {"ssn": "123", "title": "t"}},
        });
        for p in [
            "principal.attributes.email",
            "resource.attributes.*",
            "context.nothing.here",
        ] {
            redact(&mut v, &p.split('.').map(String::from).collect::<Vec<_>>());
        }
        assert_eq!(v["principal"]["attributes"]["email"], REDACTED);
        assert_eq!(v["principal"]["attributes"]["level"], 3);
        assert_eq!(v["principal"]["sub"], "alice");
        assert_eq!(v["resource"]["attributes"]["ssn"], REDACTED);
        assert_eq!(v["resource"]["attributes"]["title"], REDACTED);
    }
}
