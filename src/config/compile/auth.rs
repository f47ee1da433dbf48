//! `auth`: the issuers the gateway trusts (their key sources carried across reloads like pools)
//! and each route's `auth`, `identity_headers`, `strip_authorization` and `assertion`, compiled
//! into its [`RoutePolicy`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use sha2::{Digest, Sha256};

use super::key_path::KeyPath;
use super::Compiler;
use crate::config::file::{AuthMode, AuthSpec, IssuerSpec, RouteSpec};
use crate::config::Snapshot;
use crate::jwks::{KeySource, SourceSettings};
use crate::route_policy::jwt::{Mode, RouteAuth};
use crate::route_policy::token_cache::TokenCache;
use crate::route_policy::{IdentityHeaders, RoutePolicy, TrustedIssuer};

/// Every trusted issuer by name, and the verified-token cache the routes share.
pub(super) struct Trust {
    pub issuers: BTreeMap<String, Arc<TrustedIssuer>>,
    pub cache: Arc<TokenCache>,
    /// Where routes' authorization callouts can go.
    pub callouts: Callouts,
}

/// Which policy decision points exist: `authz.remote`, and the embedded policy service.
#[derive(Debug, Clone, Copy)]
pub(super) struct Callouts {
    pub remote: bool,
    pub embedded: bool,
}

const MAX_LEEWAY_SECS: u64 = 300;

impl Compiler {
    pub(super) fn trust(
        &mut self,
        auth: &AuthSpec,
        previous: Option<&Snapshot>,
        callouts: Callouts,
    ) -> Trust {
        let file = self.main_path.clone();
        let at = KeyPath::root("auth");
        if auth.max_token_bytes < 512 {
            let msg = "below 512 bytes no signed token fits";
            self.error(&file, at.field("max_token_bytes"), msg, None);
        }
        for (i, prefix) in auth.identity_namespace.iter().enumerate() {
            if prefix.is_empty() || HeaderName::from_bytes(prefix.as_bytes()).is_err() {
                let msg = format!("{prefix:?} is not the start of a header name");
                self.error(&file, at.field("identity_namespace").index(i), msg, None);
            }
        }
        let mut issuers = BTreeMap::new();
        for (name, spec) in &auth.issuers {
            let at = at.field("issuers").field(name);
            if let Some(issuer) = self.trusted_issuer(&file, &at, name, spec, previous) {
                issuers.insert(name.clone(), Arc::new(issuer));
            }
        }
        Trust {
            issuers,
            cache: Arc::new(TokenCache::new(auth.verified_token_cache)),
            callouts,
        }
    }

    fn trusted_issuer(
        &mut self,
        file: &Path,
        at: &KeyPath,
        name: &str,
        spec: &IssuerSpec,
        previous: Option<&Snapshot>,
    ) -> Option<TrustedIssuer> {
        let before = self.errors.len();
        self.check_url(file, &at.field("issuer"), &spec.issuer);
        if let Some(url) = &spec.jwks_url {
            self.check_url(file, &at.field("jwks_url"), url);
        }
        if spec.audiences.is_empty() || spec.audiences.iter().any(String::is_empty) {
            let msg = "name at least one audience; tokens for other audiences are refused";
            self.error(file, at.field("audiences"), msg, None);
        }
        let algorithms = self.algorithms(file, &at.field("algorithms"), &spec.algorithms);
        if spec.leeway.as_secs() > MAX_LEEWAY_SECS {
            let msg = format!("at most {MAX_LEEWAY_SECS}s: leeway extends every token's life");
            self.error(file, at.field("leeway"), msg, None);
        }
        let r = &spec.refresh;
        let refresh_at = at.field("refresh");
        for (key, value) in [
            ("min_interval", r.min_interval),
            ("unknown_kid_cooldown", r.unknown_kid_cooldown),
            ("fetch_timeout", r.fetch_timeout),
        ] {
            if value.is_zero() {
                self.error(file, refresh_at.field(key), "must be longer than 0s", None);
            }
        }
        if r.max_interval < r.min_interval {
            let msg = "must not be shorter than min_interval";
            self.error(file, refresh_at.field("max_interval"), msg, None);
        }
        // The CA file's bytes are part of what the source is built from.
        let mut fingerprint = Sha256::new();
        fingerprint.update(format!(
            "{:?} {:?} {:?} {:?}",
            spec.issuer, spec.jwks_url, algorithms, r
        ));
        let mut ca_pem = None;
        let ca = spec.ca_file.as_ref().and_then(|ca| {
            let path = self.resolve(ca);
            match self.read(&path) {
                Ok(pem) => {
                    fingerprint.update(&pem);
                    let certs = reqwest::Certificate::from_pem_bundle(&pem);
                    ca_pem = Some(pem);
                    match certs {
                        Ok(certs) if !certs.is_empty() => Some(certs),
                        _ => {
                            let msg = format!("{}: no PEM certificate in it", path.display());
                            self.error(file, at.field("ca_file"), msg, None);
                            None
                        }
                    }
                }
                Err(e) => {
                    let msg = format!("cannot read {}: {e}", path.display());
                    self.error(file, at.field("ca_file"), msg, None);
                    None
                }
            }
        });
        let feed_at = at.field("revocations");
        let feed_plan = spec.revocations.as_ref().and_then(|feed| {
            let leeway = spec.leeway.as_secs();
            self.revocation_feed_plan(file, &feed_at, name, feed, leeway, ca_pem.as_deref())
        });
        if self.errors.len() > before {
            return None;
        }
        let previous_issuer = previous.and_then(|p| p.issuers.get(name));
        let revocations = match feed_plan {
            Some(plan) => {
                let previous_feed = previous_issuer.and_then(|i| i.revocations.as_ref());
                let feed = self.revocation_feed(file, &feed_at, plan, ca.clone(), previous_feed);
                Some(feed?)
            }
            None => None,
        };
        let fingerprint = hex::encode(fingerprint.finalize());
        let reused = previous_issuer
            .map(|i| &i.keys)
            .filter(|k| k.fingerprint == fingerprint)
            .cloned();
        let keys = match reused {
            Some(keys) => keys,
            None => {
                let client = match jwks_client(r.fetch_timeout, ca) {
                    Ok(c) => c,
                    Err(e) => {
                        self.error(file, at, format!("cannot build the HTTP client: {e}"), None);
                        return None;
                    }
                };
                let settings = SourceSettings {
                    name: name.into(),
                    issuer_url: spec.issuer.clone(),
                    jwks_url: spec.jwks_url.clone(),
                    algorithms: algorithms.clone(),
                    min_interval: r.min_interval,
                    max_interval: r.max_interval,
                    unknown_kid_cooldown: r.unknown_kid_cooldown,
                    fetch_timeout: r.fetch_timeout,
                };
                Arc::new(KeySource::new(settings, client, fingerprint))
            }
        };
        Some(TrustedIssuer {
            name: name.into(),
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            algorithms,
            leeway: spec.leeway.as_secs(),
            token_types: spec
                .token_types
                .iter()
                .map(|t| {
                    let lower = t.to_ascii_lowercase();
                    lower
                        .strip_prefix("application/")
                        .unwrap_or(&lower)
                        .to_string()
                })
                .collect(),
            scope_claim: spec.scope_claim.clone(),
            roles_claim: spec.roles_claim.clone(),
            keys,
            revocations,
        })
    }

    pub(super) fn check_url(&mut self, file: &Path, at: &KeyPath, url: &str) {
        let ok = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            let msg = format!("{url:?} is not an http(s) URL");
            self.error(file, at, msg, None);
        }
    }

    /// Asymmetric signature algorithms only.
    fn algorithms(&mut self, file: &Path, at: &KeyPath, names: &[String]) -> Vec<Algorithm> {
        if names.is_empty() {
            self.error(file, at, "name at least one algorithm", None);
        }
        let mut algorithms = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match name.parse::<Algorithm>() {
                Ok(a) if a.family() != AlgorithmFamily::Hmac => algorithms.push(a),
                _ => {
                    let msg = format!("{name:?} is not an accepted signature algorithm");
                    let hint =
                        "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA (never none or HS*)";
                    self.error(file, at.index(i), msg, Some(hint.into()));
                }
            }
        }
        algorithms
    }

    /// The route's policy; problems are recorded under the route's key path `at`.
    pub(super) fn route_policy(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RouteSpec,
        auth: &AuthSpec,
        trust: &Trust,
    ) -> RoutePolicy {
        let identity_headers = self.identity_headers(file, &at.field("identity_headers"), spec);
        let route_auth = spec
            .auth
            .as_ref()
            .and_then(|a| self.route_auth(file, &at.field("auth"), a, auth, trust));
        if spec.assertion.is_some() && route_auth.is_none() {
            let msg = "an assertion needs verified identity: set auth.mode required or optional";
            self.error(file, at.field("assertion"), msg, None);
        }
        let assertion_audience = spec.assertion.as_ref().map(|a| {
            let audience = a.audience.clone().unwrap_or_else(|| spec.upstream.clone());
            if audience.is_empty() {
                self.error(
                    file,
                    at.field("assertion").field("audience"),
                    "must not be empty",
                    None,
                );
            }
            Arc::from(audience)
        });
        let authz = spec.authz.as_ref().and_then(|a| {
            let captures = template_captures(spec.matcher.path.as_deref().unwrap_or(""));
            self.route_authz(file, &at.field("authz"), a, &captures, trust.callouts)
        });
        let rate_limits = self.route_rate_limits(file, at, spec, route_auth.is_some());
        RoutePolicy {
            rate_limits,
            auth: route_auth,
            authz,
            identity_headers,
            assertion_audience,
            strip_authorization: spec.strip_authorization,
        }
    }

    fn route_auth(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &crate::config::file::RouteAuthSpec,
        auth: &AuthSpec,
        trust: &Trust,
    ) -> Option<RouteAuth> {
        let mode = match spec.mode {
            AuthMode::Required => Mode::Required,
            AuthMode::Optional => Mode::Optional,
            AuthMode::None => {
                if !spec.scopes.is_empty() || !spec.roles.is_empty() || !spec.issuers.is_empty() {
                    let msg = "issuers, scopes and roles need mode required or optional";
                    self.error(file, at.field("mode"), msg, None);
                }
                return None;
            }
        };
        let issuers: Vec<_> = if spec.issuers.is_empty() {
            trust.issuers.values().cloned().collect()
        } else {
            let mut picked = Vec::new();
            for (i, name) in spec.issuers.iter().enumerate() {
                match trust.issuers.get(name) {
                    Some(issuer) => picked.push(issuer.clone()),
                    None if auth.issuers.contains_key(name) => {} // reported under auth.issuers
                    None => {
                        let known: Vec<&str> = auth.issuers.keys().map(String::as_str).collect();
                        let hint = Some(format!("auth.issuers: {}", known.join(", ")));
                        self.error(
                            file,
                            at.field("issuers").index(i),
                            format!("unknown issuer {name:?}"),
                            hint,
                        );
                    }
                }
            }
            picked
        };
        if auth.issuers.is_empty() {
            let msg = "no issuer is configured: add one under auth.issuers";
            self.error(file, at.field("mode"), msg, None);
        }
        let token_header =
            spec.token_header
                .as_ref()
                .and_then(|h| match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        self.error(
                            file,
                            at.field("token_header"),
                            format!("{h:?} is not a header name"),
                            None,
                        );
                        None
                    }
                });
        if spec
            .token_cookie
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.contains([';', '=', ' ']))
        {
            self.error(file, at.field("token_cookie"), "not a cookie name", None);
        }
        Some(RouteAuth {
            mode,
            issuers,
            scopes: spec.scopes.clone(),
            roles: spec.roles.clone(),
            token_cookie: spec.token_cookie.clone(),
            token_header,
            max_token_bytes: auth.max_token_bytes,
            cache: trust.cache.clone(),
        })
    }

    fn identity_headers(&mut self, file: &Path, at: &KeyPath, spec: &RouteSpec) -> IdentityHeaders {
        let mut extra = Vec::new();
        for (header, claim) in &spec.identity_headers {
            let at = at.field(header);
            let Ok(name) = HeaderName::from_bytes(header.as_bytes()) else {
                self.error(file, at, format!("{header:?} is not a header name"), None);
                continue;
            };
            // Outside the namespace a client's own copy would pass through whenever the claim is
            // missing.
            if !self.identity_namespace.contains(name.as_str()) {
                let msg = format!("{header:?} is outside auth.identity_namespace");
                let hint = Some("use a name like X-User-<something> or X-Jwt-<something>".into());
                self.error(file, at, msg, hint);
                continue;
            }
            if claim.is_empty() {
                self.error(file, at, "name the claim to send", None);
                continue;
            }
            extra.push((name, claim.clone()));
        }
        IdentityHeaders::new(&self.identity_namespace, extra)
    }
}

/// The `{name}` captures of a path template.
fn template_captures(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn jwks_client(
    timeout: std::time::Duration,
    ca: Option<Vec<reqwest::Certificate>>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    if let Some(certs) = ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}
