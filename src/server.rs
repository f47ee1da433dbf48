//! Process wiring: one Pingora server holding a proxy service per listener, the admin service and
//! the config watcher.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::tls::ALPN;
use pingora::protocols::Stream;
use pingora::proxy::{http_proxy, HttpProxy};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use gatehouse_service::{AdminApp, BufferedApp, FileWatcher};

use crate::access_log::AccessLog;
use crate::config::file::LimitsSpec;
use crate::config::{self, LoadMode, Snapshot};
use crate::echo::EchoApp;
use crate::metrics;
use crate::proxy::{client_limits, Gateway, ListenerRole};
use crate::reload::{ConfigStore, FirstSnapshotTasks};
use crate::tls::{SniResolver, TlsAccept};

/// How the process was started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Take the listening sockets over from a running instance (Pingora's graceful upgrade).
    pub upgrade: bool,
    pub daemon: bool,
    /// Demo upstreams served by this same process: `(address, name)`.
    pub echo_upstreams: Vec<(String, String)>,
}

/// Loads the configuration, builds every service, and serves until shutdown.
pub fn run(config_path: &Path, launch: Launch) -> anyhow::Result<()> {
    metrics::init();
    let snapshot = config::load(config_path, None, LoadMode::Run)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let opt = Opt {
        upgrade: launch.upgrade,
        daemon: launch.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&snapshot));
    server.bootstrap();

    let access_log = AccessLog::start().context("starting the access-log writer")?;
    let listeners = snapshot.listeners.clone();
    let admin_address = snapshot.admin.address.clone();
    let snapshot_identity = snapshot.embedded_identity.clone();
    let snapshot_authz = snapshot.embedded_authz.clone();
    let start_limits = snapshot.limits.clone();
    let store = Arc::new(ConfigStore::new(config_path, snapshot));
    // Started before the listeners: `authz.mode: embedded` routes ask this same authorizer, so
    // they see its policies, hot reloads and decision log.
    let embedded_authz = snapshot_authz
        .as_ref()
        .map(|authz| gatehouse_authz::server::AuthzService::start(authz))
        .transpose()?;

    for (i, listener) in listeners.iter().enumerate() {
        let gateway = Gateway {
            store: store.clone(),
            role: ListenerRole {
                tls: listener.tls,
                redirect_https_port: listener.redirect_https_port,
            },
            access_log: access_log.clone(),
            authorizer: embedded_authz.as_ref().map(|s| s.authorizer.clone()),
        };
        let mut proxy = http_proxy(&server.configuration, gateway);
        let (server_options, h2_options) = http2_settings(&start_limits, listener.h2c);
        proxy.server_options = Some(server_options);
        proxy.h2_options = Some(h2_options);
        let tls = if listener.tls {
            let certs_from = store.clone();
            let resolver = SniResolver::new(move |name| certs_from.current().certs.find(name));
            let tls = TlsAccept::new(Arc::new(resolver), listener.session_tickets);
            Some(tls.context("building the TLS listener")?)
        } else {
            None
        };
        let name = format!("gatehouse listener {i} ({})", listener.address);
        let mut service = Service::new(
            name,
            GuardConnections {
                app: Arc::new(proxy),
                store: store.clone(),
                h2c: listener.h2c,
                tls,
            },
        );
        // TLS listeners too accept plain TCP: `GuardConnections` runs their handshakes.
        service.add_listener(
            ListenerConfig::tcp(listener.address.clone()).l4_buffer(downstream_buffers()),
        );
        server.add_service(service);
    }

    let mut admin = Service::new(
        "gatehouse admin".into(),
        BufferedApp::new(Arc::new(AdminApp::new(
            store.clone(),
            start_limits.timeouts(),
        ))),
    );
    admin.add_tcp(&admin_address);
    server.add_service(admin);

    for (address, name) in launch.echo_upstreams {
        let mut echo = Service::new(
            format!("demo upstream {name}"),
            HttpServer::new_app(EchoApp { name }),
        );
        echo.add_tcp(&address);
        server.add_service(echo);
    }

    if let Some(identity) = &snapshot_identity {
        let issuer = gatehouse_identity::Issuer::start(identity)?;
        gatehouse_identity::server::add_services(&mut server, issuer)?;
    }

    if let Some(service) = embedded_authz {
        gatehouse_authz::server::add_services(&mut server, service);
    }
    server.add_service(background_service(
        "pool health and key refresh",
        FirstSnapshotTasks {
            store: store.clone(),
        },
    ));
    // Built here, before the server runs, so that its SIGHUP handler is in place before any
    // listener reports ready.
    server.add_service(background_service(
        "config watcher",
        FileWatcher::new(store, "config"),
    ));
    tracing::info!(config = %config_path.display(), "gatehouse starting");
    server.run_forever()
}

/// Serves one stand-alone echo upstream (tests and benchmarks use it as a peer).
pub fn run_echo(address: &str, name: &str) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut echo = Service::new(
        format!("echo {name}"),
        HttpServer::new_app(EchoApp { name: name.into() }),
    );
    echo.add_tcp(address);
    server.add_service(echo);
    server.run_forever()
}

fn server_conf(snapshot: &Snapshot) -> ServerConf {
    let s = &snapshot.server;
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        upgrade_sock: s.upgrade_sock.clone(),
        pid_file: s.pid_file.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// HTTP/2 for clients, from the limits at start (`h2c`: also in clear text).
///
/// An HTTP/2 connection with no request in flight is closed after
/// `limits.request_header_timeout`, as an idle HTTP/1 connection is: Pingora's default keeps it
/// open for ever, so a client that opened one and sent nothing (or a header block a byte at a
/// time) held it for good.
///
/// The header list has room for twice `limits.max_request_header_bytes`, at most 2 MiB (twice
/// what Pingora reads of an HTTP/1 header, so one stream's block stays bounded). HTTP/2 counts
/// 32 bytes more per field than the gateway does, and refuses a block over its own limit without
/// the gateway seeing the request (a bare 431, or the connection closed once the block's bytes
/// pass the limit). With equal limits a request just over the gateway's got no JSON answer, or
/// lost its connection, where HTTP/1 got the gateway's 431.
fn http2_settings(limits: &LimitsSpec, h2c: bool) -> (HttpServerOptions, H2Options) {
    let mut server = HttpServerOptions::default();
    server.h2c = h2c;
    server.h2_idle_timeout = Some(limits.request_header_timeout);
    let mut h2 = default_h2_options();
    let room = limits
        .max_request_header_bytes
        .saturating_mul(2)
        .min(2 << 20);
    h2.max_header_list_size(u32::try_from(room).unwrap_or(u32::MAX));
    (server, h2)
}

/// Wraps a proxy service's connections: counts them in `gatehouse_downstream_connections_open`
/// (one count per client connection, held across every request it carries), runs the TLS
/// handshake on a TLS listener, and keeps the request-header deadline on HTTP/1 connections (the
/// handshake and the first header share the first one).
///
/// HTTP/2 connections (negotiated by ALPN, or opening with the preface on an h2c listener) are
/// left to Pingora: their streams are served on other tasks, so this loop cannot see when a
/// header arrives. Pingora closes them once idle for the deadline (`http2_settings`). On an h2c
/// listener the preface itself must come within the deadline; after ALPN it is not bounded yet
/// (Pingora reads it, and a TLS stream cannot be peeked at).
struct GuardConnections<A> {
    app: Arc<A>,
    store: Arc<ConfigStore>,
    h2c: bool,
    tls: Option<TlsAccept>,
}

#[async_trait]
impl<A> ServerApp for GuardConnections<HttpProxy<A>>
where
    HttpProxy<A>: HttpServerApp + Send + Sync + 'static,
    A: Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = metrics::OpenConnection::open();
        let deadline = self.store.current().limits.request_header_timeout;
        let first_until = tokio::time::Instant::now() + deadline;
        if let Some(tls) = &self.tls {
            stream = tls.handshake(stream, first_until).await?;
        }
        let mut h2 = stream.selected_alpn_proto() == Some(ALPN::H2);
        if self.h2c && !h2 && stream.get_ssl_digest().is_none() {
            let peek = client_limits::opens_with_h2_preface(&mut stream);
            h2 = match tokio::time::timeout_at(first_until, peek).await {
                Ok(Ok(h2)) => h2,
                Ok(Err(_)) => return None,
                Err(_) => {
                    client_limits::deadline_passed(deadline);
                    return None;
                }
            };
        }
        if h2 {
            let mut next = self.app.process_new(stream, shutdown).await;
            while let Some(stream) = next {
                next = self.app.process_new(stream, shutdown).await;
            }
        } else {
            // Pingora's own HTTP/1 loop serves every request of a kept-alive connection inside
            // one `process_new`, so the deadline would cover the first request only. This is
            // that loop, one request per turn. Keep-alive without Pingora's timer (0): the
            // header deadline already bounds the idle wait for the next request, and Pingora's
            // 60 s keep-alive timer was registered once more for every request.
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive((!*shutdown.borrow()).then_some(0));
            session.set_keepalive_reuses_remaining(
                self.app
                    .server_options()
                    .and_then(|o| o.keepalive_request_limit),
            );
            client_limits::with_header_deadline(
                deadline,
                first_until,
                session,
                |session| self.app.process_new_http(session, shutdown),
                |reused| {
                    let (stream, persistent) = reused.consume();
                    let mut session = ServerSession::new_http1(stream);
                    if let Some(persistent) = persistent {
                        persistent.apply_to_session(&mut session);
                    }
                    session
                },
            )
            .await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

/// Downstream connections' socket buffers (Pingora's defaults: a 64 KiB read buffer, a 1460-byte
/// write buffer). No read buffer: Pingora's HTTP/1 reader and rustls each read into a buffer of
/// their own, so one under them only copies. A 16 KiB write buffer: a response head and a body up
/// to about 16 KiB leave in one write instead of two (the head is buffered; a body longer than
/// 1460 bytes went round it). Pingora flushes chunked and close-delimited bodies at every write,
/// so streamed responses are not held back by it. Measured (fat LTO, `wrk -t1 -c50`, interleaved rounds, CPU µs per
/// request): 4 KiB responses 35.1 → 33.0 plain and 36.6 → 34.4 over TLS; plain and 64 KiB
/// responses unchanged within the rounds' spread. And 16 KiB per connection instead of 65.4.
fn downstream_buffers() -> L4BufferSettings {
    L4BufferSettings::new(0, 16 * 1024)
}
