//! The audit log: one JSON line per security event (logins, tokens, refreshes, revocations, key
//! rotations, logouts). It names who, which client, from where, and why — never a password,
//! secret or token: events are built from typed fields, so there is no field to put one in.
//!
//! The lines go through the kit's [`LineWriter`]: a bounded queue drained by a writer thread.
//! A request never waits on the disk: when the queue is full (a stalled disk, a blocked stdout)
//! the event is dropped and counted in `gatehouse_identity_audit_log_dropped_total` instead of
//! stalling an async worker, and with it every request that worker serves. The trade-off is
//! that a full queue leaves a hole in the trail; the counter says how large, so alert on any
//! increase of it.

use gatehouse_service::{LineWriter, Sink};

use crate::config::AuditRotationFile;
use serde::Serialize;

use crate::metrics;
use crate::request::Request;

/// Lines waiting for the writer; a burst beyond this while the disk stalls is dropped.
const QUEUE: usize = 4096;

#[derive(Debug, Default, Serialize)]
pub struct Event<'a> {
    pub time: String,
    pub event: &'a str,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Token id (`jti`): identifies a token without being one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_kid: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// An event caused by `req`: it names the client IP and user agent.
    pub fn of(req: &'a Request, event: &'a str, outcome: &'a str) -> Self {
        Self {
            event,
            outcome,
            ip: req.peer_ip.map(|ip| ip.to_string()),
            user_agent: req.user_agent(),
            ..Self::default()
        }
    }
}

#[derive(Clone)]
pub struct AuditLog {
    lines: LineWriter,
}

impl AuditLog {
    /// `destination` is a file path (appended to, created 0600, rotated by size) or `-` for
    /// standard output.
    pub fn open(destination: &str, rotation: AuditRotationFile) -> std::io::Result<Self> {
        let sink = Sink::log(destination, rotation.max_file_bytes, rotation.keep_files);
        let lines =
            LineWriter::start("audit-log", sink, QUEUE, metrics::AUDIT_LOG_DROPPED.clone())?;
        Ok(Self { lines })
    }

    /// Queues the event; never blocks (see the module comment).
    pub fn record(&self, mut event: Event<'_>) {
        event.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let written = self
            .lines
            .write_with(|buf| serde_json::to_writer(buf, &event).map_err(Into::into));
        if let Err(e) = written {
            tracing::error!(error = %e, "audit event not serialisable");
        }
    }
}
