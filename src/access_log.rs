//! One line per request, written by a dedicated thread so a slow stdout never stalls a request.
//!
//! The queue is bounded: when the writer falls behind, lines are dropped and counted in
//! `gatehouse_access_log_dropped_total` rather than buffered without limit.

use gatehouse_service::{LineWriter, Sink};
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
    lines: LineWriter,
}

impl AccessLog {
    /// Starts the writer thread; lines go to standard output.
    pub fn start() -> std::io::Result<Self> {
        let lines = LineWriter::start(
            "access-log",
            Sink::Stdout,
            QUEUE,
            metrics::ACCESS_LOG_DROPPED.clone(),
        )?;
        Ok(Self { lines })
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
        self.lines.write(line);
    }
}
