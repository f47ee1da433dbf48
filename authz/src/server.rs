//! Carries the API over Pingora: the decision listener, the loopback admin listener (the kit's
//! [`AdminApp`]: `/metrics`, `/healthz`, `POST /reload`), and the kit's [`FileWatcher`], which
//! reloads the policies when a file under the policy directory changes or on SIGHUP.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use gatehouse_service::{
    AdminApp, BufferedApp, FileWatcher, Handler, Refusal, Request, RequestLimits,
};
use http::Response;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

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
        BufferedApp::new(Arc::new(Api {
            service: service.clone(),
        })),
    );
    api.add_tcp(&s.listen.to_string());
    server.add_service(api);
    let admin_app = AdminApp::new(service.authorizer.clone(), s.timeouts);
    let mut admin = Service::new(
        format!("authz admin {}", s.admin),
        BufferedApp::new(Arc::new(admin_app)),
    );
    admin.add_tcp(&s.admin.to_string());
    server.add_service(admin);
    // Built here, before the server runs, so that its SIGHUP handler is in place before any
    // listener reports ready (SIGHUP's default action ends the process).
    server.add_service(background_service(
        "authz policy watcher",
        FileWatcher::new(service.authorizer.clone(), "policies"),
    ));
    tracing::info!(listen = %s.listen, admin = %s.admin, policies = %s.policies.display(), "authz service starting");
}

/// The decision API on the kit's buffered listener: the kit reads the request under the limits
/// of `authz.yaml` (body size, header and body deadlines) and refuses what breaks them; what
/// arrives in full is answered by [`api::handle`].
struct Api {
    service: Arc<AuthzService>,
}

#[async_trait]
impl Handler for Api {
    fn limits(&self) -> RequestLimits {
        let s = &self.service.settings;
        RequestLimits {
            max_body_bytes: s.max_body_bytes,
            timeouts: s.timeouts,
        }
    }

    async fn handle(&self, request: Request) -> Response<Vec<u8>> {
        api::handle(
            &self.service.authorizer,
            self.service.settings.max_batch_checks,
            &request.method,
            request.path(),
            request.query(),
            &request.body,
        )
    }

    /// In the decision API's error format, with its `Cache-Control: no-store`.
    fn refuse(&self, refusal: Refusal) -> Response<Vec<u8>> {
        api::error(refusal.status(), refusal.code(), &refusal.message())
    }
}
