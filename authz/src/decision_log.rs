//! The decision log: one JSON line per decision (id, time, input with configured attributes
//! redacted, result, deciding policy/version/rule, latency), for audit.
//!
//! Decisions never wait for the disk: lines go through a bounded queue to a writer thread, and a
//! line that finds the queue full is dropped and counted (`gatehouse_authz_decision_log_dropped_total`).
//! The file rotates by size: `decisions.log` → `decisions.log.1` → … → `.{keep_files}`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

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
    tx: SyncSender<String>,
    redact: Vec<Vec<String>>,
}

impl DecisionLog {
    pub fn open(settings: &DecisionLogSettings) -> std::io::Result<Self> {
        let sink = if settings.path == "-" {
            Sink::Stdout(std::io::stdout())
        } else {
            let path = PathBuf::from(&settings.path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = open_append(&path)?;
            let written = file.metadata()?.len();
            Sink::File(RotatingFile {
                out: BufWriter::new(file),
                path,
                written,
                max_bytes: settings.max_file_bytes,
                keep: settings.keep_files,
            })
        };
        let (tx, rx) = sync_channel(settings.queue);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(rx, sink))?;
        Ok(Self {
            tx,
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
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::LOG_DROPS.inc(),
            Err(TrySendError::Disconnected(_)) => {
                metrics::LOG_DROPS.inc();
                tracing::error!("decision log writer is gone");
            }
        }
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

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

enum Sink {
    Stdout(std::io::Stdout),
    File(RotatingFile),
}

struct RotatingFile {
    out: BufWriter<File>,
    path: PathBuf,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let size = line.len() as u64 + 1;
        if self.written > 0 && self.written + size > self.max_bytes {
            self.rotate()?;
        }
        writeln!(self.out, "{line}")?;
        self.written += size;
        Ok(())
    }

    /// `log.{n-1}` → `log.{n}`, …, `log` → `log.1`; beyond `keep` files the oldest is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.out = BufWriter::new(open_append(&self.path)?);
        self.written = 0;
        Ok(())
    }
}

impl Sink {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => writeln!(out, "{line}"),
            Sink::File(f) => f.write_line(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(f) => f.out.flush(),
        }
    }
}

fn write_lines(rx: Receiver<String>, mut sink: Sink) {
    while let Ok(line) = rx.recv() {
        let mut result = sink.write_line(&line);
        // Drain what queued meanwhile, then flush once.
        while let Ok(line) = rx.try_recv() {
            result = result.and(sink.write_line(&line));
        }
        if let Err(e) = result.and(sink.flush()) {
            tracing::error!(error = %e, "decision log write failed");
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

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("decisions.log");
        let mut f = RotatingFile {
            out: BufWriter::new(open_append(&path).unwrap_or_else(|e| panic!("{e}"))),
            path: path.clone(),
            written: 0,
            max_bytes: 100,
            keep: 2,
        };
        for i in 0..20 {
            f.write_line(&format!("{i:040}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        f.out.flush().unwrap_or_else(|e| panic!("{e}"));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        // 41 bytes a line, 100 per file: two lines each; the last line written is in the live file.
        assert!(read(&path).contains(&format!("{:040}", 19)));
        assert_eq!(read(&path).lines().count(), 2);
        assert!(read(&numbered(1)).contains(&format!("{:040}", 17)));
        assert!(read(&numbered(2)).contains(&format!("{:040}", 15)));
        assert!(!numbered(3).exists());
    }
}
