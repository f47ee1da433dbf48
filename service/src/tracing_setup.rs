//! The log subscriber every binary installs: `RUST_LOG` filter (default `info`), to stderr,
//! coloured only on a terminal, with Pingora's client-caused error lines counted and thinned out
//! ([`ClientErrorLines`]).
//!
//! Pingora's debug and trace lines quote what a client sent: an unparseable header's first
//! 2 KiB and every parsed request header, `Authorization` and cookies included. Secrets are never
//! logged here, so its crates stay at `info` however verbose `RUST_LOG` is, unless `RUST_LOG`
//! names them itself (an operator's explicit, local choice).

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::client_error_lines::ClientErrorLines;

/// Pingora's crates whose debug/trace output carries request bytes.
const QUOTE_REQUESTS: [&str; 2] = ["pingora_core", "pingora_proxy"];

/// How often the held-back client error lines are summed up in one line (and the next one of
/// each kind is written): an operator reading the log sees a flood within a minute.
const CLIENT_ERROR_WINDOW: Duration = Duration::from_secs(60);

/// Installs the subscriber; `metric_prefix` names the binary's client-error counter
/// (`<prefix>_downstream_connection_errors_total`, in the default registry).
pub fn init(metric_prefix: &str) {
    let client_errors = ClientErrorLines::register(metric_prefix, prometheus::default_registry())
        .expect("metric registers once");
    // Without the reporting thread the layer would hold back lines for ever: go without it.
    let client_errors = match client_errors.report_every(CLIENT_ERROR_WINDOW) {
        Ok(()) => Some(client_errors),
        Err(e) => {
            eprintln!("client error lines are logged one by one: no reporting thread: {e}");
            None
        }
    };
    tracing_subscriber::registry()
        .with(filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with(client_errors)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.unwrap_or("info");
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    // Only a cap: a quieter filter (`warn`) stays as quiet.
    if filter
        .max_level_hint()
        .is_some_and(|max| max <= tracing_subscriber::filter::LevelFilter::INFO)
    {
        return filter;
    }
    for target in QUOTE_REQUESTS {
        if !spec.contains(target) {
            if let Ok(directive) = format!("{target}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_stays_at_info_unless_named() {
        let shown = filter(Some("debug")).to_string();
        assert!(shown.contains("pingora_core=info"), "{shown}");
        assert!(shown.contains("pingora_proxy=info"), "{shown}");
        let named = filter(Some("debug,pingora_proxy=trace")).to_string();
        assert!(named.contains("pingora_proxy=trace"), "{named}");
        assert!(!named.contains("pingora_proxy=info"), "{named}");
        let quiet = filter(Some("warn")).to_string();
        assert!(!quiet.contains("pingora"), "{quiet}");
    }
}
