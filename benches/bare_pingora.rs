//! A bare Pingora proxy built the way the gateway is built: the framework's floor.
//! `benches/run.sh` runs it beside the gateway so every report separates Pingora's own cost from
//! what Gatehouse adds on top.
//!
//! Usage: bare_pingora <listen addr> <upstream addr> [--threads N] [--tls CERT_PEM KEY_PEM]
//!
//! What it shares with the gateway (so `gatehouse/pingora` is the cost of the gateway's own code):
//! - mimalloc as the global allocator;
//! - `init_downstream_modules` adds nothing (Pingora's default adds a disabled compression
//!   module, which still runs per request; the gateway overrides it the same way);
//! - the `ServerConf` the gateway builds from `benches/run.sh`'s gatehouse.yaml (src/server.rs
//!   `server_conf`): `threads`, `work_stealing: false`, grace period 0 s, shutdown timeout 1 s,
//!   `upstream_keepalive_pool_size` 256 (the gateway's default; Pingora's is 128);
//! - the peer the gateway builds (src/upstream/mod.rs `peer()`) with its default upstream
//!   timeouts (src/upstream/settings.rs): connect 2 s, read 30 s, write 30 s, idle 60 s;
//! - with `--tls`: Pingora's rustls listener (`TlsSettings::intermediate`, TLS 1.2 and 1.3) with
//!   ALPN h2 and http/1.1 (`enable_h2`), as the gateway's TLS listeners. The gateway picks its
//!   certificate per handshake through a resolver; this proxy has one certificate.
//!
//! Nothing else: no routing, no header changes, no metrics, no logging.

use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The gateway's default upstream timeouts (`TimeoutSpec::default`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The gateway's default `server.upstream_keepalive_pool_size`.
const POOL_SIZE: usize = 256;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(CONNECT_TIMEOUT);
        options.read_timeout = Some(READ_TIMEOUT);
        options.write_timeout = Some(WRITE_TIMEOUT);
        options.idle_timeout = Some(IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("bare_pingora: {problem}");
    eprintln!(
        "usage: bare_pingora <listen addr> <upstream addr> [--threads N] [--tls CERT_PEM KEY_PEM]"
    );
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        usage("missing arguments");
    };
    let Ok(upstream) = upstream.parse() else {
        usage(&format!("{upstream:?} is not an IP:port address"));
    };
    let mut threads = 1;
    let mut tls = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => threads = n,
                _ => usage("--threads wants a positive integer"),
            },
            "--tls" => match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some((cert, key)),
                _ => usage("--tls wants a certificate and a key file"),
            },
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: POOL_SIZE,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    match tls {
        Some((cert, key)) => {
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .unwrap_or_else(|e| usage(&format!("TLS settings: {e}")));
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
        }
        None => proxy.add_tcp(&listen),
    }
    server.add_service(proxy);
    server.run_forever()
}
