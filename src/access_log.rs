//! One line per request, written by a dedicated thread so a slow stdout never stalls a request.
//!
//! The queue is bounded: when the writer falls behind, lines are dropped and counted in
//! `gatehouse_access_log_dropped_total` rather than buffered without limit.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::net::{IpAddr, SocketAddr};

use gatehouse_service::{LineWriter, Sink};
use serde::Serialize;

use crate::config::file::AccessLogFormat;
use crate::metrics;

const QUEUE: usize = 16 * 1024;

/// Everything one access-log line says. Borrowed, and formatted straight into the writer's
/// buffer (the time and addresses too): a line costs no allocation of its own.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "as_text")]
    pub time: humantime::Rfc3339Timestamp,
    pub request_id: &'a str,
    #[serde(serialize_with = "as_text")]
    pub client_ip: OrDash<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query, credentials in the query redacted ([`loggable_path`]).
    pub path: Cow<'a, str>,
    pub route: &'a str,
    pub upstream: Option<SocketAddr>,
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

/// A value's text, or `-` when there is none.
#[derive(Debug)]
pub struct OrDash<T>(pub Option<T>);

impl<T: Display> Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn as_text<S: serde::Serializer>(value: &impl Display, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(value)
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
            OrDash(self.upstream),
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
    use super::*;

    fn entry(client_ip: Option<IpAddr>, upstream: Option<SocketAddr>) -> Entry<'static> {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        Entry {
            time: humantime::format_rfc3339_millis(time),
            request_id: "rid",
            client_ip: OrDash(client_ip),
            method: "GET",
            host: "example.com",
            path: Cow::Borrowed("/a?b=\"c\""),
            route: "all",
            upstream,
            status: 200,
            bytes: 6,
            duration_ms: 1.5,
            error: None,
            subject: None,
            auth: None,
            authz: None,
            authz_cached: None,
            decision_id: None,
        }
    }

    #[test]
    fn lines_format_times_and_addresses_in_place() {
        let ip = "2001:db8::1".parse().ok();
        let upstream = "127.0.0.1:8000".parse().ok();
        let json = serde_json::to_value(entry(ip, upstream)).expect("an entry serialises");
        assert_eq!(json["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["client_ip"], "2001:db8::1");
        assert_eq!(json["upstream"], "127.0.0.1:8000");
        assert_eq!(json["path"], "/a?b=\"c\"");

        let json = serde_json::to_value(entry(None, None)).expect("an entry serialises");
        assert_eq!(json["client_ip"], "-");
        assert_eq!(json["upstream"], serde_json::Value::Null);

        let mut text = Vec::new();
        entry(None, upstream)
            .write_text(&mut text)
            .expect("a text line");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.starts_with("2023-11-14T22:13:20.123Z - \"GET example.com/a?b=\"c\"\" 200 6 1.500ms route=all upstream=127.0.0.1:8000 "),
            "{text}"
        );
    }

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
