//! The route's policy stages as the proxy runs them: each calls its `route_policy` module, records
//! the outcome (context, metrics) and, when it refuses, answers the client. Each returns whether it
//! answered (the request then ends, like `request_filter`'s own return value).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::respond::{DenyReason, Rejection};
use super::{challenge, Gateway, RequestCtx};
use crate::authz_callout::Decider;
use crate::clock::unix_now;
use crate::config::Snapshot;
use crate::route_policy::authz::{self, AuthzFacts, Outcome};
use crate::route_policy::jwt::Passed;
use crate::route_policy::rate_limit::{RequestFacts, Stage};
use crate::route_policy::AuthOutcome;
use crate::routing::Route;

/// The request header carrying the allowing decision's id to the upstream (in the gateway's
/// identity namespace, so no client can send its own).
pub const DECISION_ID_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-gatehouse-decision-id");

/// What the authorization stage decided, for the upstream header and the access log.
#[derive(Debug)]
pub struct AuthzRecord {
    /// `allow`, `deny`, `error` or `fail_open` (the metric's result label).
    pub result: &'static str,
    pub cached: bool,
    pub decision_id: Option<Arc<str>>,
}

impl Gateway {
    /// The route's stages, in order; each answers the client itself when it refuses. Boxed, and
    /// called only for routes that have a stage: their futures (a token check, a policy
    /// callout) would otherwise be part of every request's filter future, allocated and moved
    /// on routes that have none.
    pub(super) fn run_stages<'a>(
        &'a self,
        session: &'a mut Session,
        ctx: &'a mut RequestCtx,
        route: &'a Route,
        snapshot: &'a Snapshot,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .rate_limit(session, ctx, route, Stage::BeforeAuth)
                .await?
                || self.authenticate(session, ctx, route).await?
                || self
                    .rate_limit(session, ctx, route, Stage::AfterAuth)
                    .await?
                || self.authorize(session, ctx, route, snapshot).await?)
        })
    }

    /// The route's rate limits of `stage` (before or after the JWT stage); 429 over a limit.
    pub(super) async fn rate_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
        stage: Stage,
    ) -> Result<bool> {
        let facts = RequestFacts {
            client_ip: ctx.client_ip,
            headers: &session.req_header().headers,
            identity: ctx.identity.as_deref(),
        };
        let limits = &route.policy.rate_limits;
        let Err(limited) = limits
            .check(stage, &facts, &mut ctx.rate_limit_headers)
            .await
        else {
            return Ok(false);
        };
        let rejection = Rejection::RateLimited;
        self.reject(session, ctx, rejection, &limited.message, &limited.headers)
            .await
    }

    /// The JWT stage: sets `ctx.identity` when the token verifies; 401/403/503 otherwise.
    pub(super) async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
    ) -> Result<bool> {
        let Some(auth) = &route.policy.auth else {
            return Ok(false);
        };
        let outcome = match auth.check(&session.req_header().headers, unix_now()).await {
            Ok(Passed::Verified(identity)) => {
                ctx.identity = Some(identity);
                AuthOutcome::Verified
            }
            Ok(Passed::Anonymous) => AuthOutcome::Anonymous,
            Err(refused) => refused,
        };
        ctx.auth_outcome = Some(outcome);
        route.metrics.record_auth(outcome.slot(), outcome.label());
        if matches!(outcome, AuthOutcome::Verified | AuthOutcome::Anonymous) {
            return Ok(false);
        }
        let (rejection, headers) = challenge::answer(outcome, &auth.scopes);
        self.reject(session, ctx, rejection, outcome.description(), &headers)
            .await
    }

    /// The authorization stage: asks the policy decision point; 403 on deny, the route's
    /// failure status when it cannot answer (unless the route fails open).
    pub(super) async fn authorize(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
        snapshot: &Snapshot,
    ) -> Result<bool> {
        let Some(stage) = &route.policy.authz else {
            return Ok(false);
        };
        let decider = match stage.mode {
            authz::Mode::Embedded => self.authorizer.as_deref().map(Decider::Embedded),
            authz::Mode::Remote => snapshot.remote_authz.as_deref().map(Decider::Remote),
        };
        let outcome = {
            let req = session.req_header();
            let facts = AuthzFacts {
                method: &req.method,
                path: req.uri.path(),
                query: req.uri.query(),
                headers: &req.headers,
                captures: &ctx.captures,
                identity: ctx.identity.as_deref(),
                client_ip: ctx.client_ip,
                route: &route.name,
                request_id: ctx.request_id.as_str(),
                now: unix_now(),
            };
            stage.check(&facts, decider, &snapshot.decision_cache).await
        };
        let record = match &outcome {
            Outcome::Allow { answer, cached } => record("allow", *cached, Some(answer)),
            Outcome::Deny { answer, cached } => record("deny", *cached, Some(answer)),
            Outcome::Failed(_) => record("error", false, None),
            Outcome::FailedOpen(_) => record("fail_open", false, None),
        };
        route.metrics.record_authz(record.result);
        ctx.authz = Some(record);
        match outcome {
            Outcome::Allow { .. } => Ok(false),
            Outcome::FailedOpen(error) => {
                tracing::warn!(route = %route.name, request_id = %ctx.request_id, %error,
                    "policy service failed: letting the request through (fail_open)");
                Ok(false)
            }
            Outcome::Failed(error) => {
                tracing::warn!(route = %route.name, request_id = %ctx.request_id, %error,
                    "policy service failed: request refused");
                let rejection = Rejection::AuthzUnavailable(stage.failure_status);
                let message = "the authorization service could not decide";
                self.reject(session, ctx, rejection, message, &[]).await
            }
            Outcome::Deny { answer, .. } => {
                let (message, reason) = if stage.expose_reason {
                    let message = match (&answer.policy, &answer.rule) {
                        (Some(policy), Some(rule)) => {
                            format!("denied by policy {policy}, rule {rule}: {}", answer.reason)
                        }
                        _ => answer.reason.to_string(),
                    };
                    let reason = DenyReason {
                        policy: answer.policy.as_deref(),
                        rule: answer.rule.as_deref(),
                    };
                    (message, reason)
                } else {
                    ("not allowed".to_string(), DenyReason::default())
                };
                self.refuse(session, ctx, Rejection::Forbidden, &message, &[], reason)
                    .await
            }
        }
    }
}

fn record(
    result: &'static str,
    cached: bool,
    answer: Option<&crate::authz_callout::Answer>,
) -> AuthzRecord {
    AuthzRecord {
        result,
        cached,
        decision_id: answer.map(|a| a.decision_id.clone()),
    }
}
