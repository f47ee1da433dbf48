//! The issuer: the state behind every endpoint (settings, keys, grants, lockout, audit) and the
//! dispatch from a request to the endpoint that owns it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use arc_swap::ArcSwap;
use http::Method;

use crate::audit::{AuditLog, Event};
use crate::config::{self, Client, ConfigErrors, Settings, User};
use crate::grants::Grants;
use crate::keys::{KeyRing, Rotation};
use crate::lockout::{FailureOutcome, Lockout};
use crate::password::{self, SecretCache};
use crate::reply::{method_not_allowed, respond, OAuthError, Reply};
use crate::request::{Params, Request};
use crate::{endpoints, metrics};

pub struct Issuer {
    config_path: PathBuf,
    settings: ArcSwap<Settings>,
    pub(crate) keys: KeyRing,
    pub(crate) grants: Grants,
    lockout: Lockout,
    secrets: SecretCache,
    pub(crate) audit: AuditLog,
    /// The issuer URL's path ("" or "/prefix"): requests may arrive with or without it.
    base_path: String,
    reloading: Mutex<()>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How a client proved who it is at the token, introspection or revocation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
    /// A public client naming itself: allowed only where the endpoint says so.
    None,
}

/// Why a password login failed.
pub enum LoginFailure {
    Invalid,
    Locked(std::time::Duration),
}

impl Issuer {
    pub fn start(config_path: &Path) -> anyhow::Result<Arc<Self>> {
        metrics::init();
        let settings = config::load(config_path)
            .map_err(|e| anyhow::anyhow!("invalid identity configuration:\n{e}"))?;
        let p = &settings.process;
        let keys =
            KeyRing::open(&p.keys_dir, &p.algorithms, now()).context("opening the signing keys")?;
        let audit = AuditLog::open(&p.audit_log)
            .with_context(|| format!("opening the audit log {}", p.audit_log))?;
        let base_path = url::Url::parse(&p.issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let issuer = Arc::new(Self {
            config_path: config_path.to_path_buf(),
            settings: ArcSwap::from_pointee(settings),
            keys,
            grants: Grants::default(),
            lockout: Lockout::default(),
            secrets: SecretCache::default(),
            audit,
            base_path,
            reloading: Mutex::new(()),
        });
        issuer.publish_key_gauges();
        Ok(issuer)
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Answers one request. Never panics on input; every failure is an answer.
    pub async fn handle(&self, req: Request) -> Reply {
        let started = Instant::now();
        let path = req
            .path
            .strip_prefix(self.base_path.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or(&req.path)
            .to_string();
        // One snapshot per request: a reload mid-request cannot mix old and new settings.
        let settings = self.settings();
        let limit = settings.max_body_bytes;
        let (endpoint, reply) = if req.body.len() > limit {
            ("other", OAuthError::payload_too_large(limit).reply())
        } else {
            self.dispatch(&settings, &path, &req).await
        };
        metrics::REQUESTS
            .with_label_values(&[endpoint, reply.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
        reply
    }

    async fn dispatch(
        &self,
        settings: &Settings,
        path: &str,
        req: &Request,
    ) -> (&'static str, Reply) {
        use endpoints::{browser, discovery, resource, token};
        let get = req.method == Method::GET || req.method == Method::HEAD;
        let post = req.method == Method::POST;
        match path {
            "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server"
                if get =>
            {
                ("discovery", discovery::document(settings))
            }
            "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" => {
                ("discovery", method_not_allowed("GET"))
            }
            "/jwks.json" if get => ("jwks", discovery::jwks(self, settings)),
            "/jwks.json" => ("jwks", method_not_allowed("GET")),
            "/token" if post => ("token", token::handle(self, settings, req).await),
            "/token" => ("token", method_not_allowed("POST")),
            "/authorize" if get => ("authorize", browser::authorize(self, settings, req)),
            "/authorize" => ("authorize", method_not_allowed("GET")),
            "/login" if get => ("login", browser::login_page(self, req)),
            "/login" if post => ("login", browser::login_submit(self, settings, req).await),
            "/login" => ("login", method_not_allowed("GET, POST")),
            "/logout" if get || post => ("logout", browser::logout(self, settings, req)),
            "/logout" => ("logout", method_not_allowed("GET, POST")),
            "/userinfo" if get || post => ("userinfo", resource::userinfo(self, settings, req)),
            "/userinfo" => ("userinfo", method_not_allowed("GET, POST")),
            "/introspect" if post => (
                "introspect",
                resource::introspect(self, settings, req).await,
            ),
            "/introspect" => ("introspect", method_not_allowed("POST")),
            "/revoke" if post => ("revoke", resource::revoke(self, settings, req).await),
            "/revoke" => ("revoke", method_not_allowed("POST")),
            _ => (
                "other",
                respond(
                    http::StatusCode::NOT_FOUND,
                    "application/json",
                    br#"{"error":"not_found"}"#.to_vec(),
                ),
            ),
        }
    }

    /// Authenticates the client of a back-channel request (RFC 6749 §2.3.1): HTTP Basic or the
    /// form body, never both; a public client only names itself.
    pub async fn authenticate_client(
        &self,
        settings: &Settings,
        req: &Request,
        params: &Params,
    ) -> Result<(Arc<Client>, ClientAuth), OAuthError> {
        let (id, secret, method) = match req.basic_credentials() {
            Some(Err(())) => return Err(OAuthError::invalid_client("malformed Basic credentials")),
            Some(Ok((id, secret))) => {
                if params.get("client_secret").is_some() {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method, not Basic and client_secret".into(),
                    ));
                }
                if params.get("client_id").is_some_and(|p| p != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id differs from the Basic credentials".into(),
                    ));
                }
                (id, Some(secret), ClientAuth::Basic)
            }
            None => match (params.get("client_id"), params.get("client_secret")) {
                (Some(id), Some(secret)) => {
                    (id.to_string(), Some(secret.to_string()), ClientAuth::Post)
                }
                (Some(id), None) => (id.to_string(), None, ClientAuth::None),
                (None, _) => {
                    return Err(OAuthError::invalid_client("client authentication required"))
                }
            },
        };
        let client = settings.clients.get(&id).cloned();
        let Some(client) = client else {
            if let Some(secret) = secret {
                // Same time as a real check: the answer must not reveal which client ids exist.
                let _ = tokio::task::spawn_blocking(move || password::verify_dummy(&secret)).await;
            }
            return Err(OAuthError::invalid_client(
                "unknown client or bad credentials",
            ));
        };
        match (&client.secret_hash, secret) {
            (None, None) => Ok((client, ClientAuth::None)),
            (None, Some(_)) => Err(OAuthError::invalid_client(
                "this client is public and has no secret",
            )),
            (Some(_), None) => Err(OAuthError::invalid_client("client authentication required")),
            (Some(phc), Some(secret)) => {
                if self.secrets.cached(&client.id, &secret, phc) {
                    return Ok((client, method));
                }
                let (phc, s) = (phc.clone(), secret.clone());
                let ok = tokio::task::spawn_blocking(move || password::verify(&s, &phc))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(OAuthError::invalid_client(
                        "unknown client or bad credentials",
                    ));
                }
                if let Some(phc) = &client.secret_hash {
                    self.secrets.remember(&client.id, &secret, phc);
                }
                Ok((client, method))
            }
        }
    }

    /// Checks a user's password under the lockout rules, and audits the attempt either way.
    pub async fn check_password(
        &self,
        settings: &Settings,
        req: &Request,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Arc<User>, LoginFailure> {
        let audit = |outcome: &str, reason: Option<&str>| {
            self.audit.record(Event {
                event: "login",
                outcome,
                user: Some(username),
                client: Some(client_id),
                ip: req.peer_ip.map(|ip| ip.to_string()),
                user_agent: req.user_agent(),
                reason,
                ..Event::default()
            })
        };
        let attempt = match self
            .lockout
            .begin(username, req.peer_ip, (&settings.lockout).into())
        {
            Ok(a) => a,
            Err(wait) => {
                metrics::LOGIN_FAILURES
                    .with_label_values(&["locked_out"])
                    .inc();
                audit("failure", Some("locked_out"));
                return Err(LoginFailure::Locked(wait));
            }
        };
        let user = settings.users.get(username).cloned();
        let secret = password.to_string();
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || match phc {
            Some(phc) => password::verify(&secret, &phc),
            None => {
                password::verify_dummy(&secret);
                false
            }
        })
        .await
        .unwrap_or(false);
        match (user, ok) {
            (Some(user), true) => {
                attempt.succeeded();
                audit("success", None);
                Ok(user)
            }
            (user, _) => {
                let reason = if user.is_some() {
                    "bad_password"
                } else {
                    "unknown_user"
                };
                metrics::LOGIN_FAILURES.with_label_values(&[reason]).inc();
                audit("failure", Some(reason));
                if attempt.failed() == FailureOutcome::Locked {
                    metrics::LOCKOUTS.inc();
                    self.audit.record(Event {
                        user: Some(username),
                        reason: Some("too many failed logins"),
                        ..Event::of(req, "lockout", "locked")
                    });
                }
                Err(LoginFailure::Invalid)
            }
        }
    }

    /// Re-reads the configuration. A broken file changes nothing and says why.
    pub fn reload(&self) -> Result<bool, ConfigErrors> {
        let _guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.settings();
        match config::load(&self.config_path) {
            Ok(new) if new.hash == old.hash => Ok(false),
            Ok(new) => {
                if new.process != old.process {
                    tracing::warn!(
                        "issuer, listeners, keys and audit_log settings apply at the next restart"
                    );
                }
                tracing::info!(
                    users = new.users.len(),
                    clients = new.clients.len(),
                    "identity configuration reloaded"
                );
                self.settings.store(Arc::new(new));
                metrics::CONFIG_RELOADS
                    .with_label_values(&["success"])
                    .inc();
                Ok(true)
            }
            Err(errors) => {
                metrics::CONFIG_RELOADS
                    .with_label_values(&["failure"])
                    .inc();
                for e in &errors.0 {
                    tracing::error!(problem = %e, "identity configuration rejected; the running one stays");
                }
                Err(errors)
            }
        }
    }

    /// Rotates the signing keys now and audits it.
    pub fn rotate_keys(&self, reason: &str) -> Result<Rotation, crate::keys::KeyError> {
        let rotation = self.keys.rotate(now())?;
        metrics::KEY_ROTATIONS.inc();
        for (alg, retired, fresh) in &rotation {
            tracing::info!(alg = alg.as_str(), kid = %fresh, reason, "signing key rotated");
            self.audit.record(Event {
                event: "key_rotation",
                outcome: "success",
                reason: Some(reason),
                kid: Some(fresh),
                retired_kid: retired.as_deref(),
                ..Event::default()
            });
        }
        self.publish_key_gauges();
        Ok(rotation)
    }

    /// Periodic upkeep: scheduled rotation, retired keys leaving the JWKS, expired grants.
    pub fn tick(&self) {
        let settings = self.settings();
        let now = now();
        if let (Some(every), Some(since)) =
            (settings.process.rotate_every, self.keys.active_since())
        {
            if now >= since.saturating_add(every.as_secs()) {
                if let Err(e) = self.rotate_keys("schedule") {
                    tracing::error!(error = %e, "scheduled key rotation failed");
                }
            }
        }
        let t = &settings.tokens;
        let retention = t.access_token_ttl.max(t.id_token_ttl) + settings.process.jwks_max_age;
        match self.keys.prune(now, retention) {
            Ok(dropped) if !dropped.is_empty() => {
                for kid in &dropped {
                    tracing::info!(kid = %kid, "retired signing key left the JWKS");
                }
                self.publish_key_gauges();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "pruning retired keys failed"),
        }
        self.grants.sweep(now);
    }

    fn publish_key_gauges(&self) {
        let set = self.keys.current();
        let active = set.active_count() as i64;
        metrics::ACTIVE_KEYS
            .with_label_values(&["active"])
            .set(active);
        metrics::ACTIVE_KEYS
            .with_label_values(&["retired"])
            .set(set.kids().len() as i64 - active);
    }
}
