//! Carries the issuer over Pingora: the public listener (HTTP or HTTPS) and the loopback admin
//! listener, both the shared kit's buffered listener with its body limit and request deadlines;
//! the kit's config watcher (file changes and SIGHUP); and the once-a-second key schedule and
//! expiry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use gatehouse_service::{
    AdminApp, BufferedApp, FileWatcher, Handler, Refusal, Request as BufferedRequest, RequestLimits,
};
use http::Response;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::reply::OAuthError;
use crate::request::Request;
use crate::Issuer;

/// Runs the issuer as its own process until SIGTERM/SIGINT.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let issuer = Issuer::start(config)?;
    let conf = ServerConf {
        threads: 2,
        grace_period_seconds: Some(2),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    add_services(&mut server, issuer)?;
    server.run_forever()
}

/// Adds the issuer's listeners, config watcher and schedule to `server` (its own, or the
/// gateway's when embedded).
pub fn add_services(server: &mut Server, issuer: Arc<Issuer>) -> anyhow::Result<()> {
    let settings = issuer.settings();
    let p = &settings.process;
    let mut public = Service::new(
        format!("identity {}", p.listen),
        BufferedApp::new(Arc::new(IdentityApp {
            issuer: issuer.clone(),
        })),
    );
    match &p.tls {
        Some((cert, key)) => {
            check_pem(cert, key)?;
            let mut tls =
                TlsSettings::intermediate(&cert.display().to_string(), &key.display().to_string())
                    .context("identity TLS settings")?;
            tls.enable_h2();
            public.add_tls_with_settings(&p.listen, None, tls);
        }
        None => public.add_tcp(&p.listen),
    }
    server.add_service(public);
    let mut admin = Service::new(
        format!("identity admin {}", p.admin),
        BufferedApp::new(Arc::new(AdminApp::new(issuer.clone(), settings.timeouts))),
    );
    admin.add_tcp(&p.admin);
    server.add_service(admin);
    // Built here, before the server runs: the watcher installs its SIGHUP handler when it is
    // made, so a SIGHUP that arrives as soon as a listener accepts reloads instead of ending
    // the process (SIGHUP's default action).
    server.add_service(background_service(
        "identity config watcher",
        FileWatcher::new(issuer.clone(), "identity config"),
    ));
    server.add_service(background_service(
        "identity key schedule and expiry",
        KeyScheduleAndExpiry {
            issuer: issuer.clone(),
        },
    ));
    tracing::info!(issuer = %p.issuer, listen = %p.listen, admin = %p.admin, "identity service starting");
    Ok(())
}

/// Pingora panics on unreadable certificate files; say what is wrong instead.
fn check_pem(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}: cannot read certificates", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad PEM", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate found",
        cert.display()
    );
    PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: no private key found", key.display()))?;
    Ok(())
}

/// The public listener: the kit reads each request whole, within the current settings' body
/// limit and deadlines, and the issuer answers it; refusals are OAuth error answers.
pub struct IdentityApp {
    pub issuer: Arc<Issuer>,
}

#[async_trait]
impl Handler for IdentityApp {
    /// Read per request: a reload changes `max_body_bytes` and `timeouts` for the next one.
    fn limits(&self) -> RequestLimits {
        let settings = self.issuer.settings();
        RequestLimits {
            max_body_bytes: settings.max_body_bytes,
            timeouts: settings.timeouts,
        }
    }

    async fn handle(&self, request: BufferedRequest) -> Response<Vec<u8>> {
        self.issuer.handle(issuer_request(request)).await
    }

    /// Password and client-secret checks wait in a bounded queue: one whose client has gone
    /// gives its place back instead of being run (see `hash_gate`).
    fn abandon_when_client_leaves(&self) -> bool {
        true
    }

    /// RFC 6749 §5.2's error format, as every other refusal of this listener.
    fn refuse(&self, refusal: Refusal) -> Response<Vec<u8>> {
        let error = match refusal {
            Refusal::TooLarge { limit } => OAuthError::payload_too_large(limit),
            Refusal::Unreadable => OAuthError::invalid_request("unreadable request body".into()),
            Refusal::BodyTimeout => OAuthError::request_timeout(),
            Refusal::UnsupportedExpectation => OAuthError::expectation_failed(),
        };
        error.reply()
    }
}

/// The issuer's request, which its endpoints (and their unit tests) read.
fn issuer_request(r: BufferedRequest) -> Request {
    Request {
        path: r.uri.path().to_string(),
        query: r.uri.query().map(String::from),
        method: r.method,
        headers: r.headers,
        body: r.body,
        peer_ip: r.peer_ip,
        tls: r.tls,
    }
}

/// Once a second the key schedule (next keys that are due start signing, rotation when due,
/// retired keys leaving the JWKS); every 30 s expired state swept from the store. Config
/// reloads are the [`FileWatcher`]'s.
struct KeyScheduleAndExpiry {
    issuer: Arc<Issuer>,
}

const TICK: Duration = Duration::from_secs(1);
/// Expired state is swept this often; a sweep is batches of short deletes, off the request path.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[async_trait]
impl BackgroundService for KeyScheduleAndExpiry {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { return; }
                    continue;
                }
                _ = tick.tick() => {
                    let issuer = self.issuer.clone();
                    // Key upkeep waits for the store (and rotation generates keys): keep it off
                    // the async workers.
                    let _ = tokio::task::spawn_blocking(move || issuer.tick()).await;
                }
                _ = sweep.tick() => self.issuer.sweep().await,
            }
        }
    }
}
