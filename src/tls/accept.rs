//! The TLS listeners' handshakes, run by the gateway instead of by Pingora's listener.
//!
//! Pingora's `TlsSettings` builds rustls' `ServerConfig` itself, with rustls' defaults for
//! resumption (a 256-entry session cache in memory, two TLS 1.3 tickets per handshake), and gives
//! every handshake 60 s. The gateway's listeners accept plain TCP and run the handshake here, so
//! that:
//! - resumption (unless a listener sets `session_tickets: false`) uses stateless tickets, sealed
//!   with a key kept in memory and rotated by rustls every 6 hours: any number of returning
//!   clients resume, and no cache is shared between threads;
//! - the handshake and the first request header share one deadline, the request-header timeout,
//!   so a client that opens a connection and stalls mid-handshake is closed as soon as one that
//!   stalls mid-header.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_service::client_error_lines::CLIENT_HANDSHAKE_TARGET;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio::time::Instant;

/// TLS 1.3 tickets sent after each handshake. A ticket is single-use, but each resumption brings
/// the next one, so a client that resumes one connection at a time never runs out; a second
/// ticket per handshake measured slower (sealed and sent, mostly for nothing).
const TLS13_TICKETS: usize = 1;

/// Runs TLS handshakes for one listener.
pub struct TlsAccept {
    acceptor: Acceptor,
}

impl TlsAccept {
    /// TLS 1.2 and 1.3 with the certificates `resolver` picks by SNI; ALPN offers h2 and
    /// HTTP/1.1. Without `session_tickets`, every handshake is a full one: no tickets, no
    /// session cache.
    pub fn new(
        resolver: Arc<dyn ResolvesServerCert>,
        session_tickets: bool,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if session_tickets {
            config.ticketer = rustls::crypto::ring::Ticketer::new()?;
            config.send_tls13_tickets = TLS13_TICKETS;
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(TlsAccept {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
        })
    }

    /// Completes the handshake on `stream` (accepted as plain TCP) by `until`; `None` when the
    /// client failed it or ran out of time, logged under [`CLIENT_HANDSHAKE_TARGET`] (counted
    /// and thinned out there, one line per failing client otherwise).
    pub async fn handshake(&self, stream: Stream, until: Instant) -> Option<Stream> {
        // The address is looked up (a system call) only for a line about a failure.
        let socket = stream.get_socket_digest();
        let peer = || {
            Peer(
                socket
                    .as_ref()
                    .and_then(|digest| digest.peer_addr()?.as_inet().copied()),
            )
        };
        let tcp = match stream.into_any().downcast::<L4Stream>() {
            Ok(tcp) => *tcp,
            Err(_) => {
                tracing::error!("a TLS listener accepted a stream that is not a TCP connection");
                return None;
            }
        };
        match tokio::time::timeout_at(until, self.acceptor.tls_handshake(tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::error!(target: CLIENT_HANDSHAKE_TARGET, "TLS handshake failed{}: {e}", peer());
                None
            }
            Err(_) => {
                tracing::error!(
                    target: CLIENT_HANDSHAKE_TARGET,
                    "TLS handshake timed out{}: not complete within the request-header timeout",
                    peer()
                );
                None
            }
        }
    }
}

/// The client's address in a log line, when the socket knows it.
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, " from {addr}"),
            None => Ok(()),
        }
    }
}
