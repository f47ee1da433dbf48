//! One line per request, written by a dedicated thread so a slow stdout never stalls a request.
//!
//! The queue is bounded: when the writer falls behind, lines are dropped and counted in
//! `gatehouse_access_log_dropped_total` rather than buffered without limit.

use std::borrow::Cow;

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
    /// Path and query, credentials in the query redacted ([`loggable_path`]).
    pub path: Cow<'a, str>,
    pub route: &'a str,
    pub upstream: Option<String>,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// `sub` of the verified token (never the token itself).
    pub subject: Option<&'a str>,
    /// The auth stage's outcome on routes with auth (`verified`, `expired`, …).
    pub auth: Option<&'a str>,
    /// The authorization stage's result on routes with authz (`allow`, `deny`, `error`, `fail_open`).
    pub authz: Option<&'a str>,
    /// Whether that result came from the decision cache.
    pub authz_cached: Option<bool>,
    /// The deciding decision's id (as in the policy service's decision log).
    pub decision_id: Option<&'a str>,
}

impl Entry<'_> {
    fn write_text(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        write!(
            out,
            "{} {} \"{} {}{}\" {} {} {:.3}ms route={} upstream={} request_id={} subject={} auth={} authz={} decision_id={}",
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
            self.subject.unwrap_or("-"),
            self.auth.unwrap_or("-"),
            self.authz.unwrap_or("-"),
            self.decision_id.unwrap_or("-"),
        )?;
        if let Some(e) = self.error {
            write!(out, " error={e}")?;
        }
        Ok(())
    }
}

/// Query parameters that carry credentials (RFC 6750 §2.3, OAuth codes and secrets): their
/// values are never written to the log.
const SECRET_PARAMS: [&str; 7] = [
    "access_token",
    "id_token",
    "refresh_token",
    "code",
    "client_secret",
    "password",
    "token",
];

/// `path_and_query` with the values of [`SECRET_PARAMS`] replaced by `[redacted]`; borrowed,
/// with no work beyond one scan, when there is nothing to redact.
pub fn loggable_path(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let secret = |pair: &str| SECRET_PARAMS.contains(&pair.split('=').next().unwrap_or(pair));
    if !query.split('&').any(secret) {
        return Cow::Borrowed(path_and_query);
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if secret(pair) => format!("{key}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", query.join("&")))
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

    /// Serialises the line into the writer's reused buffer (no string of its own) and queues it.
    pub fn write(&self, format: AccessLogFormat, entry: &Entry<'_>) {
        // Neither can fail: the entry is plain strings and numbers, the buffer memory.
        let _ = match format {
            AccessLogFormat::Off => return,
            AccessLogFormat::Text => self.lines.write_with(|buf| entry.write_text(buf)),
            AccessLogFormat::Json => self
                .lines
                .write_with(|buf| serde_json::to_writer(buf, entry).map_err(Into::into)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn credentials_in_the_query_are_redacted_and_the_rest_kept() {
        assert_eq!(loggable_path("/a/b"), "/a/b");
        assert_eq!(loggable_path("/a?page=2&x"), "/a?page=2&x");
        assert_eq!(
            loggable_path("/cb?code=abc&state=s&access_token=eyJ.x.y"),
            "/cb?code=[redacted]&state=s&access_token=[redacted]"
        );
    }
}
