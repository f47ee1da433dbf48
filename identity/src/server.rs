//! Carries the issuer over Pingora: the public listener (HTTP or HTTPS), the loopback admin
//! listener, and one background service for upkeep (key schedule, pruning, config reload).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use notify::{RecursiveMode, Watcher};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use prometheus::{Encoder, TextEncoder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::sync::mpsc;

use crate::reply::{self as h, OAuthError};
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

/// Adds the issuer's listeners and upkeep to `server` (its own, or the gateway's when embedded).
pub fn add_services(server: &mut Server, issuer: Arc<Issuer>) -> anyhow::Result<()> {
    let settings = issuer.settings();
    let p = &settings.process;
    let mut public = Service::new(
        format!("identity {}", p.listen),
        HttpServer::new_app(IdentityApp {
            issuer: issuer.clone(),
        }),
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
        HttpServer::new_app(AdminApp {
            issuer: issuer.clone(),
        }),
    );
    admin.add_tcp(&p.admin);
    server.add_service(admin);
    server.add_service(background_service(
        "identity upkeep",
        Upkeep {
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

pub struct IdentityApp {
    pub issuer: Arc<Issuer>,
}

#[async_trait]
impl ServeHttp for IdentityApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let limit = self.issuer.settings().max_body_bytes;
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        // Stop reading: the connection closes after the answer.
                        session.set_keepalive(None);
                        return OAuthError::payload_too_large(limit).reply();
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    session.set_keepalive(None);
                    return OAuthError::invalid_request("unreadable request body".into()).reply();
                }
            }
        }
        let head = session.req_header();
        let request = Request {
            method: head.method.clone(),
            path: head.uri.path().to_string(),
            query: head.uri.query().map(String::from),
            headers: head.headers.clone(),
            body,
            peer_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        };
        self.issuer.handle(request).await
    }
}

/// The admin listener: `/metrics`, `/healthz`, `POST /reload`, `POST /keys/rotate`.
pub struct AdminApp {
    pub issuer: Arc<Issuer>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let ok = |v| h::json(StatusCode::OK, &v);
        match (req.method.clone(), req.uri.path()) {
            (Method::GET, "/metrics") => {
                let encoder = TextEncoder::new();
                let mut body = Vec::new();
                match encoder.encode(&prometheus::gather(), &mut body) {
                    Ok(()) => h::respond(StatusCode::OK, "text/plain; version=0.0.4", body),
                    Err(_) => OAuthError::server_error().reply(),
                }
            }
            (Method::GET, "/healthz") => {
                let keys = self.issuer.keys.current();
                ok(json!({"status": "ok", "active_keys": keys.active_count(), "keys": keys.kids()}))
            }
            (Method::POST, "/reload") => {
                let issuer = self.issuer.clone();
                match tokio::task::spawn_blocking(move || issuer.reload()).await {
                    Ok(Ok(true)) => ok(json!({"result": "applied"})),
                    Ok(Ok(false)) => ok(json!({"result": "unchanged"})),
                    Ok(Err(errors)) => h::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"result": "rejected", "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    ),
                    Err(_) => OAuthError::server_error().reply(),
                }
            }
            (Method::POST, "/keys/rotate") => {
                let issuer = self.issuer.clone();
                match tokio::task::spawn_blocking(move || issuer.rotate_keys("admin")).await {
                    Ok(Ok(rotation)) => ok(json!({
                        "rotated": rotation.iter().map(|(alg, retired, fresh)| json!({
                            "alg": alg.as_str(), "retired_kid": retired, "kid": fresh,
                        })).collect::<Vec<_>>(),
                    })),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "key rotation failed");
                        OAuthError::server_error().reply()
                    }
                    Err(_) => OAuthError::server_error().reply(),
                }
            }
            _ => h::respond(
                StatusCode::NOT_FOUND,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}

/// Once a second: the key schedule and grant expiry. On a change to identity.yaml (or SIGHUP):
/// a reload.
struct Upkeep {
    issuer: Arc<Issuer>,
}

const TICK: Duration = Duration::from_secs(1);
/// Editors save by rename and write in bursts: wait for the burst to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut changed) = mpsc::unbounded_channel::<()>();
        let file_name = self
            .issuer
            .config_path()
            .file_name()
            .map(|n| n.to_os_string());
        // The directory, not the file: editors replace files by rename, ending a watch on the file.
        let dir = match self.issuer.config_path().parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let watching = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event {
                let ours = e
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
                if ours && !e.kind.is_access() {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        // Kept alive for the loop below: dropping the watcher ends the watch.
        let _watcher = watching
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot watch identity.yaml; reload with SIGHUP or POST /reload")
            })
            .ok();
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(TICK);
        loop {
            let reload = tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    false
                }
                _ = tick.tick() => false,
                Some(()) = changed.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while changed.try_recv().is_ok() {}
                    true
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let issuer = self.issuer.clone();
            // Both may touch the disk (key files, the config): keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                if reload {
                    let _ = issuer.reload();
                } else {
                    issuer.tick();
                }
            })
            .await;
        }
    }
}
