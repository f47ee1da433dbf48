//! Carries the API over Pingora: the decision listener, the loopback admin listener (`/metrics`,
//! `/healthz`, `POST /reload`), and a background service that reloads the policies when a file
//! under the policy directory changes or on SIGHUP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use notify::{RecursiveMode, Watcher};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use prometheus::{Encoder, TextEncoder};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api;
use crate::authorizer::Authorizer;
use crate::config::{self, Settings};
use crate::decision_log::DecisionLog;

/// A loaded service: its settings and the authorizer they configure.
pub struct AuthzService {
    pub settings: Settings,
    pub authorizer: Arc<Authorizer>,
}

impl AuthzService {
    /// Reads `authz.yaml`, opens the decision log and loads the policies.
    pub fn start(config_path: &Path) -> anyhow::Result<Arc<Self>> {
        let settings = config::load(config_path)?;
        let log = settings
            .decision_log
            .as_ref()
            .map(|l| DecisionLog::open(l).with_context(|| format!("decision log {}", l.path)))
            .transpose()?;
        let authorizer = Authorizer::new(&settings.policies, log)
            .map_err(|e| anyhow::anyhow!("policies rejected:\n{e}"))?;
        Ok(Arc::new(Self {
            settings,
            authorizer: Arc::new(authorizer),
        }))
    }
}

/// Runs the service as its own process until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let service = AuthzService::start(config_path)?;
    let conf = ServerConf {
        threads: service.settings.threads,
        grace_period_seconds: Some(2),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    add_services(&mut server, service);
    server.run_forever()
}

/// Adds the listeners and the reloader to `server` (its own, or the gateway's when embedded).
pub fn add_services(server: &mut Server, service: Arc<AuthzService>) {
    let s = &service.settings;
    let mut api = Service::new(
        format!("authz {}", s.listen),
        HttpServer::new_app(ApiApp {
            service: service.clone(),
        }),
    );
    api.add_tcp(&s.listen.to_string());
    server.add_service(api);
    let mut admin = Service::new(
        format!("authz admin {}", s.admin),
        HttpServer::new_app(AdminApp {
            authorizer: service.authorizer.clone(),
        }),
    );
    admin.add_tcp(&s.admin.to_string());
    server.add_service(admin);
    server.add_service(background_service(
        "authz policy watcher",
        PolicyWatcher {
            authorizer: service.authorizer.clone(),
        },
    ));
    tracing::info!(listen = %s.listen, admin = %s.admin, policies = %s.policies.display(), "authz service starting");
}

struct ApiApp {
    service: Arc<AuthzService>,
}

#[async_trait]
impl ServeHttp for ApiApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let limit = self.service.settings.max_body_bytes;
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        // Stop reading: the connection closes after the answer.
                        session.set_keepalive(None);
                        return api::error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            &format!("request bodies are limited to {limit} bytes"),
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    session.set_keepalive(None);
                    return api::error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "unreadable request body",
                    );
                }
            }
        }
        let head = session.req_header();
        with_length(api::handle(
            &self.service.authorizer,
            self.service.settings.max_batch_checks,
            &head.method,
            head.uri.path(),
            head.uri.query(),
            &body,
        ))
    }
}

/// Without a length Pingora ends the answer by closing the connection, so every decision would
/// pay a new TCP connection.
fn with_length(mut response: Response<Vec<u8>>) -> Response<Vec<u8>> {
    let len = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    response
}

/// The admin listener: `/metrics`, `/healthz`, `POST /reload`.
struct AdminApp {
    authorizer: Arc<Authorizer>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        with_length(self.answer(session).await)
    }
}

impl AdminApp {
    async fn answer(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        match (req.method.clone(), req.uri.path()) {
            (Method::GET, "/metrics") => {
                let mut body = Vec::new();
                match TextEncoder::new().encode(&prometheus::gather(), &mut body) {
                    Ok(()) => Response::builder()
                        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                        .body(body)
                        .unwrap_or_default(),
                    Err(e) => api::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &e.to_string(),
                    ),
                }
            }
            (Method::GET, "/healthz") => {
                let set = self.authorizer.policies();
                api::json_response(
                    StatusCode::OK,
                    &json!({"status": "ok", "policies": set.policies.len(), "version": set.version()}),
                )
            }
            (Method::POST, "/reload") => {
                let authorizer = self.authorizer.clone();
                match tokio::task::spawn_blocking(move || authorizer.reload()).await {
                    Ok(Ok(changed)) => {
                        let set = self.authorizer.policies();
                        let result = if changed { "applied" } else { "unchanged" };
                        api::json_response(
                            StatusCode::OK,
                            &json!({"result": result, "version": set.version()}),
                        )
                    }
                    Ok(Err(errors)) => api::json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"result": "rejected", "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    ),
                    Err(e) => api::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &e.to_string(),
                    ),
                }
            }
            _ => api::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }
}

/// Reloads the policies when a file under their directory changes (or on SIGHUP).
struct PolicyWatcher {
    authorizer: Arc<Authorizer>,
}

/// Editors save by rename and write in bursts: wait for the burst to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut changed) = mpsc::unbounded_channel::<()>();
        let watching = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event {
                if !e.kind.is_access() {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut w| {
            w.watch(self.authorizer.directory(), RecursiveMode::Recursive)
                .map(|()| w)
        });
        // Kept alive for the loop below: dropping the watcher ends the watch.
        let _watcher = watching
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot watch the policy directory; reload with SIGHUP or POST /reload")
            })
            .ok();
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
                Some(()) = changed.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while changed.try_recv().is_ok() {}
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {}
            }
            let authorizer = self.authorizer.clone();
            // Reading and compiling policies touches the disk: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || authorizer.reload()).await;
        }
    }
}
