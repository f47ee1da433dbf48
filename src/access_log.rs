//! One line per request, written by a dedicated thread so a slow stdout never stalls a request.
//!
//! The queue is bounded: when the writer falls behind, lines are dropped and counted in
//! `gatehouse_access_log_dropped_total` rather than buffered without limit.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use serde::Serialize;

use crate::config::file::AccessLogFormat;
use crate::metrics;

const QUEUE: usize = 16 * 1024;

/// Everything one access-log line says. Borrowed: serialised once, on the request's thread.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: Option<String>,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl Entry<'_> {
    fn text(&self) -> String {
        format!(
            "{} {} \"{} {}{}\" {} {} {:.3}ms route={} upstream={} request_id={}{}",
            self.time,
            self.client_ip,
            self.method,
            self.host,
            self.path,
            self.status,
            self.bytes,
            self.duration_ms,
            self.route,
            self.upstream.as_deref().unwrap_or("-"),
            self.request_id,
            self.error
                .map(|e| format!(" error={e}"))
                .unwrap_or_default(),
        )
    }
}

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
}

impl AccessLog {
    /// Starts the writer thread; lines go to standard output.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx))?;
        Ok(Self { tx })
    }

    pub fn write(&self, format: AccessLogFormat, entry: &Entry<'_>) {
        let line = match format {
            AccessLogFormat::Off => return,
            AccessLogFormat::Text => entry.text(),
            AccessLogFormat::Json => match serde_json::to_string(entry) {
                Ok(l) => l,
                Err(_) => return,
            },
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::ACCESS_LOG_DROPPED.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_lines(rx: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        // Batch whatever queued up meanwhile, then flush once.
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
