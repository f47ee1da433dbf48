//! The issuer's endpoints: the routing table from a path to the endpoint that owns it, and one
//! module per group of endpoints.
//!
//! `Issuer::handle` lives here rather than in `issuer`, so that the issuer's state does not
//! depend on its endpoints: the endpoints import the issuer, never the reverse.

mod browser;
mod cors;
mod discovery;
mod entitlements;
mod resource;
mod revocations;
mod token;

use std::sync::Arc;
use std::time::Instant;

use http::Method;

use crate::config::Settings;
use crate::issuer::Issuer;
use crate::metrics;
use crate::reply::{method_not_allowed, respond, Reply};
use crate::request::Request;

impl Issuer {
    /// Answers one request. Never panics on input; every failure is an answer.
    pub async fn handle(&self, req: Request) -> Reply {
        let started = Instant::now();
        let path = self.local_path(&req.path);
        // One snapshot per request: a reload mid-request cannot mix old and new settings.
        let settings = self.settings();
        // The body limit was applied by the listener (`server.rs`) before this request existed.
        let cors = cors::covers(path);
        let (endpoint, mut reply) = if cors && req.method == Method::OPTIONS {
            ("preflight", cors::preflight(&settings, &req))
        } else {
            route(self, &settings, path, &req).await
        };
        if cors {
            cors::allow(&settings, &req, &mut reply);
        }
        metrics::REQUESTS
            .with_label_values(&[endpoint, reply.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
        reply
    }
}

/// The routing table: which endpoint owns `path` under which methods, and the endpoint's
/// label for the request metrics.
async fn route(
    issuer: &Issuer,
    settings: &Arc<Settings>,
    path: &str,
    req: &Request,
) -> (&'static str, Reply) {
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let post = req.method == Method::POST;
    match path {
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" if get => {
            ("discovery", discovery::document(settings))
        }
        "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server" => {
            ("discovery", method_not_allowed("GET"))
        }
        "/jwks.json" if get => ("jwks", discovery::jwks(issuer, settings)),
        "/jwks.json" => ("jwks", method_not_allowed("GET")),
        "/token" if post => ("token", token::handle(issuer, settings, req).await),
        "/token" => ("token", method_not_allowed("POST")),
        "/authorize" if get || post => {
            ("authorize", browser::authorize(issuer, settings, req).await)
        }
        "/authorize" => ("authorize", method_not_allowed("GET, POST")),
        "/login" if get => ("login", browser::login_page(issuer, settings, req).await),
        "/login" if post => ("login", browser::login_submit(issuer, settings, req).await),
        "/login" => ("login", method_not_allowed("GET, POST")),
        "/logout" if get || post => ("logout", browser::logout(issuer, settings, req).await),
        "/logout" => ("logout", method_not_allowed("GET, POST")),
        "/userinfo" if get || post => ("userinfo", resource::userinfo(issuer, settings, req).await),
        "/userinfo" => ("userinfo", method_not_allowed("GET, POST")),
        "/introspect" if post => (
            "introspect",
            resource::introspect(issuer, settings, req).await,
        ),
        "/introspect" => ("introspect", method_not_allowed("POST")),
        "/revoke" if post => ("revoke", resource::revoke(issuer, settings, req).await),
        "/revoke" => ("revoke", method_not_allowed("POST")),
        "/revocations" if get => (
            "revocations",
            revocations::feed(issuer, settings, req).await,
        ),
        "/revocations" => ("revocations", method_not_allowed("GET")),
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
