//! `conf/authz.yaml`: where the service listens, where its policies live and how decisions are
//! logged. Policies hot-reload; this file applies at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gatehouse_service::{LocatedError, LocatedErrors, Timeouts};
use serde::Deserialize;

use crate::yaml::Source;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: String,
    admin: String,
    policies: PathBuf,
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "default_max_batch")]
    max_batch_checks: usize,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    decision_log: Option<DecisionLogFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionLogFile {
    path: String,
    #[serde(default = "default_queue")]
    queue: usize,
    #[serde(default = "default_max_file_bytes")]
    max_file_bytes: u64,
    #[serde(default = "default_keep_files")]
    keep_files: usize,
    #[serde(default)]
    redact: Vec<String>,
}

fn default_threads() -> usize {
    2
}
fn default_max_body() -> usize {
    256 * 1024
}
fn default_max_batch() -> usize {
    100
}
fn default_queue() -> usize {
    8192
}
fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_keep_files() -> usize {
    5
}

/// The compiled settings. Paths are resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub policies: PathBuf,
    pub threads: usize,
    pub max_body_bytes: usize,
    pub max_batch_checks: usize,
    /// How long a client may take to send a request's header and its body, on both listeners.
    pub timeouts: Timeouts,
    pub decision_log: Option<DecisionLogSettings>,
}

#[derive(Debug, Clone)]
pub struct DecisionLogSettings {
    /// A file, or `-` for standard output.
    pub path: String,
    pub queue: usize,
    pub max_file_bytes: u64,
    pub keep_files: usize,
    /// Dotted paths into the logged input (`principal.attributes.email`); a trailing `*`
    /// redacts every key of that object.
    pub redact: Vec<String>,
}

/// Reads and checks `authz.yaml`: every problem found, each with the file and the key at fault
/// (and the line, for what does not parse).
pub fn load(path: &Path) -> Result<Settings, LocatedErrors> {
    let file: File = Source::read(path)
        .and_then(|source| source.parse())
        .map_err(LocatedErrors::from)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut errors = Vec::new();
    let problem = |key: &str, message: String| LocatedError::new(path, key, message);
    let listen = address(&file.listen)
        .map_err(|m| errors.push(problem("listen", m)))
        .ok();
    let admin = address(&file.admin)
        .map_err(|m| errors.push(problem("admin", m)))
        .ok();
    let positive = [
        ("threads", file.threads),
        ("max_body_bytes", file.max_body_bytes),
        ("max_batch_checks", file.max_batch_checks),
    ];
    for (key, value) in positive {
        if value == 0 {
            errors.push(problem(key, "must be at least 1".into()));
        }
    }
    // A zero deadline would refuse every request.
    for name in file.timeouts.zero() {
        errors.push(problem(
            &format!("timeouts.{name}"),
            "must be longer than 0s".into(),
        ));
    }
    let decision_log = file.decision_log.map(|log| {
        if log.queue == 0 {
            errors.push(problem("decision_log.queue", "must be at least 1".into()));
        }
        if log.max_file_bytes < 4096 {
            errors.push(problem(
                "decision_log.max_file_bytes",
                "at least 4096".into(),
            ));
        }
        if log.redact.len() > crate::decision_log::MAX_REDACTIONS {
            errors.push(problem(
                "decision_log.redact",
                format!(
                    "{} paths; at most {}",
                    log.redact.len(),
                    crate::decision_log::MAX_REDACTIONS
                ),
            ));
        }
        for (i, redacted) in log.redact.iter().enumerate() {
            let first = redacted.split('.').next().unwrap_or("");
            if !matches!(first, "principal" | "resource" | "context") {
                errors.push(problem(
                    &format!("decision_log.redact[{i}]"),
                    format!("{redacted:?} must start with principal., resource. or context."),
                ));
            }
        }
        DecisionLogSettings {
            path: if log.path == "-" {
                log.path
            } else {
                base.join(&log.path).display().to_string()
            },
            queue: log.queue,
            max_file_bytes: log.max_file_bytes,
            keep_files: log.keep_files,
            redact: log.redact,
        }
    });
    match (listen, admin) {
        (Some(listen), Some(admin)) if errors.is_empty() => Ok(Settings {
            listen,
            admin,
            policies: base.join(&file.policies),
            threads: file.threads,
            max_body_bytes: file.max_body_bytes,
            max_batch_checks: file.max_batch_checks,
            timeouts: file.timeouts,
            decision_log,
        }),
        _ => Err(LocatedErrors(errors)),
    }
}

fn address(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an address like 127.0.0.1:9500"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Settings, LocatedErrors> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("authz.yaml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        load(&path)
    }

    const BASE: &str = "listen: 127.0.0.1:9500\nadmin: 127.0.0.1:9501\npolicies: policies\n";

    #[test]
    fn timeouts_default_to_the_kit_s_and_can_be_set() {
        let s = load_text(BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.timeouts, Timeouts::default());
        let s = load_text(&format!("{BASE}timeouts:\n  header: 1s\n  body: 500ms\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.timeouts.header, std::time::Duration::from_secs(1));
        assert_eq!(s.timeouts.body, std::time::Duration::from_millis(500));
    }

    #[test]
    fn problems_name_the_key_and_syntax_errors_the_line() {
        let e = load_text(&format!("{BASE}timeouts:\n  header: 0s\n"))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key_path, "timeouts.header");
        assert!(e.0[0]
            .to_string()
            .ends_with("authz.yaml: timeouts.header: must be longer than 0s"));

        let e = load_text(&format!("{BASE}timeouts:\n  headers: 1s\n"))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            (e.0[0].line, e.0[0].key_path.as_str()),
            (Some(5), "timeouts"),
            "{e}"
        );
        assert!(e.0[0].message.contains("unknown field `headers`"), "{e}");
    }
}
