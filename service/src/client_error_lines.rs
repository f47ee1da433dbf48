//! Pingora 0.9 logs one ERROR line for each client connection that fails before a request is
//! read: a reset or garbled TLS handshake, a handshake left hanging, a broken HTTP/2 preface, a
//! request header cut short. A client makes one such line per TCP connection, at its own pace: a
//! 15 s flood of reset handshakes wrote 14,804 of them. Pingora offers no hook for these, so this
//! layer recognises the lines, counts each in a metric, lets the first of each kind through (the
//! operator sees what is happening, e.g. every client refusing the certificate) and holds back the
//! rest until [`ClientErrorLines::report_held_back`] says how many there were and opens the next
//! window. Pingora's other lines, `Accept() failed` among them, are untouched. A server that
//! runs TLS handshakes itself logs their failures under [`CLIENT_HANDSHAKE_TARGET`], and they are
//! treated the same.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// The target of a server's own ERROR line about a client's failed TLS handshake: "TLS handshake
/// failed…" or "TLS handshake timed out…".
pub const CLIENT_HANDSHAKE_TARGET: &str = "gatehouse::client_handshake";

/// What a client did to make Pingora (or the server, for TLS handshakes) log an error line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    TlsHandshake,
    TlsHandshakeTimeout,
    H2Handshake,
    RequestHeaderRead,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::TlsHandshake,
        Kind::TlsHandshakeTimeout,
        Kind::H2Handshake,
        Kind::RequestHeaderRead,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::TlsHandshake => "tls_handshake",
            Kind::TlsHandshakeTimeout => "tls_handshake_timeout",
            Kind::H2Handshake => "h2_handshake",
            Kind::RequestHeaderRead => "request_header_read",
        }
    }

    /// Pingora 0.9's texts: `services/listening.rs` (handshakes), `apps/mod.rs` (HTTP/2 preface)
    /// and `pingora-proxy`'s `handle_new_request` (the only line naming the session type).
    fn of(target: &str, message: &str) -> Option<Kind> {
        match target {
            CLIENT_HANDSHAKE_TARGET => {
                if message.starts_with("TLS handshake timed out") {
                    Some(Kind::TlsHandshakeTimeout)
                } else {
                    Some(Kind::TlsHandshake)
                }
            }
            "pingora_core::services::listening" => {
                if message.starts_with("Downstream handshake error") {
                    Some(Kind::TlsHandshake)
                } else if message.starts_with("Downstream handshake timeout") {
                    Some(Kind::TlsHandshakeTimeout)
                } else {
                    None
                }
            }
            "pingora_core::apps" if message.starts_with("H2 handshake error") => {
                Some(Kind::H2Handshake)
            }
            "pingora_proxy"
                if message.starts_with("Fail to proxy: ")
                    && message.contains(", downstream session type: ") =>
            {
                Some(Kind::RequestHeaderRead)
            }
            _ => None,
        }
    }
}

struct Tally {
    counted: IntCounter,
    shown: AtomicBool,
    held_back: AtomicU64,
}

/// The layer; clones share their counts.
#[derive(Clone)]
pub struct ClientErrorLines {
    tallies: Arc<[Tally; 4]>,
    metric: Arc<str>,
}

impl ClientErrorLines {
    /// Registers `<prefix>_downstream_connection_errors_total{kind}` in `registry`.
    pub fn register(prefix: &str, registry: &Registry) -> prometheus::Result<Self> {
        let metric = format!("{prefix}_downstream_connection_errors_total");
        let counter = IntCounterVec::new(
            Opts::new(
                metric.as_str(),
                "Client connections that failed before a request was read, by kind \
                 (tls_handshake, tls_handshake_timeout, h2_handshake, request_header_read).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(counter.clone()))?;
        let tallies = Kind::ALL.map(|kind| Tally {
            counted: counter.with_label_values(&[kind.label()]),
            shown: AtomicBool::new(false),
            held_back: AtomicU64::new(0),
        });
        Ok(ClientErrorLines {
            tallies: Arc::new(tallies),
            metric: metric.into(),
        })
    }

    /// Calls [`Self::report_held_back`] every `every`, on a thread of its own.
    pub fn report_every(&self, every: Duration) -> std::io::Result<()> {
        let lines = self.clone();
        std::thread::Builder::new()
            .name("client-error-lines".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                lines.report_held_back();
            })
            .map(drop)
    }

    /// Logs how many lines of each kind were held back since the last call, and lets the next
    /// line of each kind through.
    pub fn report_held_back(&self) {
        for kind in Kind::ALL {
            let tally = &self.tallies[kind as usize];
            let held_back = tally.held_back.swap(0, Ordering::Relaxed);
            tally.shown.store(false, Ordering::Relaxed);
            if held_back > 0 {
                tracing::warn!(
                    kind = kind.label(),
                    held_back,
                    "{held_back} more client connection errors like the one logged before were \
                     not logged one by one; each is counted in {}",
                    self.metric
                );
            }
        }
    }

    /// Whether `event` is written: false for a recognised line after the first of its kind.
    fn admit(&self, event: &Event<'_>) -> bool {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() != Level::ERROR
            || !(meta.target().starts_with("pingora_") || meta.target() == CLIENT_HANDSHAKE_TARGET)
        {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let Some(kind) = Kind::of(meta.target(), &message.0) else {
            return true;
        };
        let tally = &self.tallies[kind as usize];
        tally.counted.inc();
        if !tally.shown.swap(true, Ordering::Relaxed) {
            return true;
        }
        tally.held_back.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl<S: Subscriber> Layer<S> for ClientErrorLines {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        self.admit(event)
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    // Lines as Pingora 0.9 wrote them against real clients.
    const RESET_HANDSHAKE: &str = "Downstream handshake error from 127.0.0.1:36650:  \
        TLSHandshakeFailure context: TLS accept() failed:  TLSHandshakeFailure context: tls \
        connect error: Connection reset by peer (os error 104)";
    const CUT_HEADER: &str = "Fail to proxy: Downstream ConnectionClosed context: while reading \
        request headers, bytes already read: 1, downstream session type: h1";
    const BAD_PREFACE: &str = "H2 handshake error  HandshakeError context: while h2 handshaking \
        with client cause: connection error detected: unspecific protocol error detected";
    const UPSTREAM_FAILURE: &str = "Fail to proxy: Upstream ConnectRefused context: ..., status: \
        502, tries: 1, retry: false, GET /, Host: a";

    #[test]
    fn pingora_lines_are_recognised_by_target_and_text() {
        let listening = "pingora_core::services::listening";
        assert_eq!(
            Kind::of(listening, RESET_HANDSHAKE),
            Some(Kind::TlsHandshake)
        );
        assert_eq!(
            Kind::of(listening, "Downstream handshake timeout"),
            Some(Kind::TlsHandshakeTimeout)
        );
        assert_eq!(
            Kind::of("pingora_core::apps", BAD_PREFACE),
            Some(Kind::H2Handshake)
        );
        assert_eq!(
            Kind::of("pingora_proxy", CUT_HEADER),
            Some(Kind::RequestHeaderRead)
        );
        // What the operator must always see.
        assert_eq!(
            Kind::of(listening, "Accept() failed Too many open files"),
            None
        );
        assert_eq!(Kind::of("pingora_proxy", UPSTREAM_FAILURE), None);
        assert_eq!(Kind::of("gatehouse::proxy", RESET_HANDSHAKE), None);
    }

    #[test]
    fn a_servers_own_handshake_lines_are_recognised_by_target() {
        assert_eq!(
            Kind::of(
                CLIENT_HANDSHAKE_TARGET,
                "TLS handshake failed from 127.0.0.1:1: peer sent no certificates"
            ),
            Some(Kind::TlsHandshake)
        );
        assert_eq!(
            Kind::of(
                CLIENT_HANDSHAKE_TARGET,
                "TLS handshake timed out from 127.0.0.1:1: not complete within the \
                 request-header timeout"
            ),
            Some(Kind::TlsHandshakeTimeout)
        );
        assert_eq!(
            Kind::of("gatehouse::tls", "TLS handshake failed from 127.0.0.1:1"),
            None
        );
    }

    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        fn lines_with(&self, text: &str) -> usize {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|line| line.contains(text))
                .count()
        }
    }

    fn sample(registry: &Registry, kind: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == "test_downstream_connection_errors_total")
            .flat_map(|family| family.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == kind))
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }

    #[test]
    fn the_first_line_of_each_kind_is_written_every_line_is_counted_and_the_rest_reported() {
        let registry = Registry::new();
        let lines = ClientErrorLines::register("test", &registry).expect("registers");
        let written = Written::default();
        let sink = written.clone();
        let subscriber = tracing_subscriber::registry().with(lines.clone()).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                tracing::error!(target: "pingora_core::services::listening", "{RESET_HANDSHAKE}");
            }
            for _ in 0..3 {
                tracing::error!(target: "pingora_proxy", "{CUT_HEADER}");
                tracing::error!(target: "pingora_proxy", "{UPSTREAM_FAILURE}");
                tracing::error!(target: "pingora_core::services::listening", "Accept() failed");
            }
            assert_eq!(written.lines_with("Downstream handshake error"), 1);
            assert_eq!(written.lines_with("while reading request headers"), 1);
            assert_eq!(written.lines_with("status: 502"), 3);
            assert_eq!(written.lines_with("Accept() failed"), 3);
            assert_eq!(sample(&registry, "tls_handshake"), 5);
            assert_eq!(sample(&registry, "request_header_read"), 3);
            assert_eq!(sample(&registry, "h2_handshake"), 0);

            lines.report_held_back();
            assert_eq!(
                written.lines_with("held_back=4"),
                1,
                "the handshake summary"
            );
            assert_eq!(written.lines_with("held_back=2"), 1, "the header summary");
            assert_eq!(
                written.lines_with("each is counted in test_downstream_connection_errors_total"),
                2
            );
            // A kind with nothing held back says nothing.
            assert_eq!(written.lines_with("h2_handshake"), 0);

            // The next window lets one line through again.
            tracing::error!(target: "pingora_core::services::listening", "{RESET_HANDSHAKE}");
            tracing::error!(target: "pingora_core::services::listening", "{RESET_HANDSHAKE}");
            assert_eq!(written.lines_with("Downstream handshake error"), 2);
            assert_eq!(sample(&registry, "tls_handshake"), 7);
            lines.report_held_back();
            assert_eq!(written.lines_with("held_back=1"), 1);
        });
    }
}
