//! The audit log: one JSON line per security event (logins, tokens, refreshes, revocations, key
//! rotations, logouts). It names who, which client, from where, and why — never a password,
//! secret or token: events are built from typed fields, so there is no field to put one in.
//!
//! A writer thread appends the lines. Unlike the access log nothing is dropped: when the queue is
//! full the request waits, because an audit trail with holes is worse than a slower login.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use serde::Serialize;

use crate::request::Request;

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
    tx: SyncSender<String>,
}

impl AuditLog {
    /// `destination` is a file path (appended to, created 0600) or `-` for standard output.
    pub fn open(destination: &str) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if destination == "-" {
            Box::new(std::io::stdout())
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = std::path::Path::new(destination).parent() {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(destination)?,
            )
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(Self { tx })
    }

    pub fn record(&self, mut event: Event<'_>) {
        event.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        match serde_json::to_string(&event) {
            Ok(line) => {
                if self.tx.send(line).is_err() {
                    tracing::error!(event = event.event, "audit log writer is gone");
                }
            }
            Err(e) => tracing::error!(error = %e, "audit event not serialisable"),
        }
    }
}

fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "audit log write failed");
        }
    }
}
