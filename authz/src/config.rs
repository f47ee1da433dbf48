//! `conf/authz.yaml`: where the service listens, where its policies live and how decisions are
//! logged. Policies hot-reload; this file applies at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gatehouse_service::{LocatedError, LocatedErrors};
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
