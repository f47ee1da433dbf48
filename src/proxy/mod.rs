//! The gateway's `ProxyHttp`: each phase owns one decision and delegates the logic.
//!
//! | phase                     | decides                                                     |
//! |---------------------------|-------------------------------------------------------------|
//! | `request_filter`          | snapshot, request id, client ip, redirect, path (400), route |
//! |                           | (404/405), the route's policy stages (429/401/403/429/403), |
//! |                           | then the target (503)                                       |
//! | `upstream_peer`           | the peer for the chosen target (re-selects on retry)        |
//! | `upstream_request_filter` | identity headers (strip, inject), path rewrite, Host,       |
//! |                           | forwarded headers, request id                               |
//! | `response_filter`         | request id (and rate-limit headers) on the response         |
//! | `fail_to_connect`         | passive ejection, one retry on another target               |
//! | `fail_to_proxy`           | the JSON error body for upstream failures                   |
//! | `logging`                 | metrics and the access-log line                             |

pub mod challenge;
pub mod client_limits;
mod head_parts;
pub mod request_id;
pub mod request_target;
pub mod respond;
mod stages;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use gatehouse_service::ip_text::Ipv4Text;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::access_log::{self, AccessLog};
use crate::clock::unix_now;
use crate::config::file::AccessLogFormat;
use crate::config::Snapshot;
use crate::metrics;
use crate::reload::ConfigStore;
use crate::route_policy::rate_limit::SuccessHeaders;
use crate::route_policy::{AuthOutcome, VerifiedIdentity};
use crate::routing::{Route, RouteLookup};
use crate::upstream::HashKey;
use head_parts::{RequestParts, ResponseParts};
use request_id::RequestId;
use respond::{DenyReason, Rejection};

/// What kind of listener a proxy service serves.
#[derive(Debug, Clone, Copy)]
pub struct ListenerRole {
    pub tls: bool,
    pub redirect_https_port: Option<u16>,
}

pub struct Gateway {
    pub store: Arc<ConfigStore>,
    pub role: ListenerRole,
    pub access_log: AccessLog,
    /// The policy service's library in this process (`embedded.authz`), for `authz.mode: embedded`.
    pub authorizer: Option<Arc<gatehouse_authz::Authorizer>>,
}

/// Per-request state. Each part is set by one phase and read by later ones.
pub struct RequestCtx {
    /// Set by `new_ctx`, which Pingora calls once the request header has been read.
    started: Instant,
    request_id: RequestId,
    /// The host the client asked for: lower case, no port.
    host: String,
    /// The client's address: the socket peer, or what a trusted proxy says it is.
    client_ip: Option<IpAddr>,
    /// The snapshot this request uses from start to end, whatever reloads happen meanwhile.
    snapshot: Option<Arc<Snapshot>>,
    route: Option<Arc<Route>>,
    /// Template captures of the matched route (`{id}` → value), for later phases.
    pub captures: Vec<(Arc<str>, String)>,
    /// Set by the JWT stage alone, when the request carried a verified token.
    identity: Option<Arc<VerifiedIdentity>>,
    /// What the JWT stage decided, on routes with auth.
    auth_outcome: Option<AuthOutcome>,
    /// What the authorization stage decided, on routes with authz.
    authz: Option<stages::AuthzRecord>,
    /// Set by the rate-limit stages on routes with `headers_on_success`.
    rate_limit_headers: Option<SuccessHeaders>,
    target: Option<SocketAddr>,
    connect_failures: u8,
    rejection: Option<Rejection>,
    /// Request body bytes received so far, against `limits.max_request_body_bytes`.
    body_bytes: u64,
}

/// A connect failure is retried once, on another target.
const MAX_CONNECT_RETRIES: u8 = 1;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a response-compression module (disabled)
    /// whose per-request context is pure overhead for a gateway that does not compress.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        client_limits::header_read();
        RequestCtx {
            started: Instant::now(),
            request_id: RequestId::default(),
            host: String::new(),
            client_ip: None,
            snapshot: None,
            route: None,
            captures: Vec::new(),
            identity: None,
            auth_outcome: None,
            authz: None,
            rate_limit_headers: None,
            target: None,
            connect_failures: 0,
            rejection: None,
            body_bytes: 0,
        }
    }

    /// Owns every answer made before the upstream: redirect, 400, 404, 405, the route's stages
    /// (429, 401/403, 403/503 from authorization) and 503 when no target is up.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id =
            RequestId::from_client(session.req_header().headers.get(&request_id::HEADER_NAME));
        let snapshot = self.store.current();
        ctx.snapshot = Some(snapshot.clone());
        let req = session.req_header();
        ctx.client_ip = snapshot
            .trusted_proxies
            .client_ip(peer_ip(session), &req.headers);
        if gatehouse_service::buffered::header_bytes(&req.headers)
            > snapshot.limits.max_request_header_bytes
        {
            let message = format!(
                "request headers exceed {} bytes",
                snapshot.limits.max_request_header_bytes
            );
            return self
                .reject(session, ctx, Rejection::HeaderTooLarge, &message, &[])
                .await;
        }
        if let Some(limit) =
            client_limits::declared_body_over(req, snapshot.limits.max_request_body_bytes)
        {
            // The body stays unread: this connection cannot carry another request.
            session.set_keepalive(None);
            let message = format!("request bodies are limited to {limit} bytes");
            return self
                .reject(session, ctx, Rejection::BodyTooLarge, &message, &[])
                .await;
        }
        ctx.host = request_host(req);
        // Pingora's per-read timeout also bounds each wait for the next piece of the body.
        session.set_read_timeout(Some(snapshot.limits.request_body_timeout));
        let req = session.req_header();

        if let Some(port) = self.role.redirect_https_port {
            let location = https_location(&ctx.host, port, req);
            // Boxed, as a refusal is (see `refuse`).
            Box::pin(respond::redirect(
                session,
                &location,
                ctx.request_id.as_str(),
            ))
            .await?;
            return Ok(true);
        }
        // Routing, strip_prefix, the upstream and the access log all read the normalised path.
        if let Err(bad) = request_target::normalize(session.req_header_mut(), &snapshot.paths) {
            return self
                .reject(session, ctx, Rejection::BadPath, &bad.to_string(), &[])
                .await;
        }
        let req = session.req_header();

        let path = req.uri.path();
        let (route, captures) = match snapshot.routes.lookup(&ctx.host, path, &req.method) {
            RouteLookup::Found { route, captures } => (route.clone(), captures),
            RouteLookup::MethodNotAllowed { allowed } => {
                let allow = allowed
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!("{} is not allowed here", req.method);
                return self
                    .reject(
                        session,
                        ctx,
                        Rejection::MethodNotAllowed,
                        &message,
                        &[("allow", allow)],
                    )
                    .await;
            }
            RouteLookup::NotFound => {
                let message = format!("no route for {} {}{path}", req.method, ctx.host);
                return self
                    .reject(session, ctx, Rejection::NoRoute, &message, &[])
                    .await;
            }
        };
        ctx.route = Some(route.clone());
        ctx.captures = captures;
        if route.policy.has_stages() && self.run_stages(session, ctx, &route, &snapshot).await? {
            return Ok(true);
        }
        // Chosen after the stages, so a hash on a claim uses the verified one.
        ctx.target = select_target(&route, session, ctx);
        if ctx.target.is_none() {
            let message = "every target of this route's upstream is down";
            return self
                .reject(session, ctx, Rejection::NoHealthyTarget, message, &[])
                .await;
        }
        Ok(false)
    }

    /// Owns the streamed-body limit: a body without a length (chunked) that crosses
    /// `limits.max_request_body_bytes` ends the request with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let limit = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.limits.max_request_body_bytes);
        if let (Some(limit), Some(chunk)) = (limit, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the limit",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        if ctx.connect_failures > 0 {
            ctx.target = select_target(&route, session, ctx);
        }
        let Some(target) = ctx.target else {
            ctx.rejection = Some(Rejection::NoHealthyTarget);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "every target is down",
            ));
        };
        Ok(Box::new(route.pool.peer(target)))
    }

    /// Owns what the upstream sees: the rewritten path, Host, and the headers only we may set.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        let policy = &route.policy;
        // The three forwarded headers, the request id and perhaps Host; on a verified request,
        // the identity headers, the decision id and the assertion.
        let verified = ctx
            .identity
            .as_ref()
            .map_or(0, |_| policy.identity_headers.mappings.len() + 2);
        let mut head = RequestParts::take(upstream, 5 + verified);
        let headers = head.headers();
        // First, so nothing below can be overwritten by a client's copy.
        policy.identity_headers.strip(headers);
        if let Some(identity) = &ctx.identity {
            policy.identity_headers.inject(headers, identity);
            if let Some(decision) = ctx.authz.as_ref().and_then(|a| a.decision_id.as_ref()) {
                headers.insert(stages::DECISION_ID_HEADER, header_value(decision)?);
            }
            if let Some(audience) = &policy.assertion_audience {
                headers.insert(
                    crate::assertion::ASSERTION_HEADER,
                    assertion(ctx, identity, &route.name, audience)?,
                );
            }
        }
        if policy.strip_authorization {
            headers.remove(http::header::AUTHORIZATION);
        }
        if let Some(host) = &route.host_override {
            headers.insert(http::header::HOST, header_value(host)?);
        } else if !headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 request may come without one; it goes upstream as HTTP/1.1, which
            // must have one (RFC 9112 §3.2). The target's address, as nginx sends by default.
            if let Some(target) = ctx.target {
                headers.insert(http::header::HOST, header_value(&target.to_string())?);
            }
        }
        // An edge gateway is the first hop it can trust: whatever the client wrote in these
        // headers is replaced, never appended to.
        if let Some(ip) = ctx.client_ip {
            headers.insert(head_parts::X_FORWARDED_FOR, ip_header_value(ip));
        }
        let proto = if self.role.tls { "https" } else { "http" };
        headers.insert(
            head_parts::X_FORWARDED_PROTO,
            HeaderValue::from_static(proto),
        );
        if !ctx.host.is_empty() {
            headers.insert(head_parts::X_FORWARDED_HOST, header_value(&ctx.host)?);
        }
        headers.insert(request_id::HEADER_NAME, ctx.request_id.header_value());
        if route.strip_prefix.is_some() {
            let original = head.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let rewritten = route.upstream_path(original);
            if let Ok(uri) = rewritten.parse::<http::Uri>() {
                head.set_uri(uri);
            }
        }
        head.put(upstream)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rate_limit = if ctx.rate_limit_headers.is_some() {
            2
        } else {
            0
        };
        let mut head = ResponseParts::take(response, 1 + rate_limit);
        let headers = head.headers();
        headers.insert(request_id::HEADER_NAME, ctx.request_id.header_value());
        if let Some(limits) = &ctx.rate_limit_headers {
            headers.insert(head_parts::RATELIMIT_POLICY, header_value(&limits.policy)?);
            headers.insert(head_parts::RATELIMIT, header_value(&limits.limit)?);
        }
        head.put(response)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(target)) = (&ctx.route, ctx.target) {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&route.pool.name, "connect"])
                .inc();
            route.pool.eject(target);
            tracing::warn!(pool = %route.pool.name, %target, error = %e, "upstream connect failed");
            if ctx.connect_failures < MAX_CONNECT_RETRIES && route.pool.target_count() > 1 {
                e.set_retry(true);
            }
        }
        ctx.connect_failures = ctx.connect_failures.saturating_add(1);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if let Some(route) = &ctx.route {
            if e.esource() == &ErrorSource::Upstream {
                metrics::UPSTREAM_ERRORS
                    .with_label_values(&[&route.pool.name, "response"])
                    .inc();
            }
        }
        // Keep Pingora's retry policy (idempotent requests on reused connections only).
        let mut e = e.more_context(format!("peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// A client that hangs up mid-request is routine (every load test ends that way) and is already
    /// in the access log; logging each one as an error would bury the errors that matter.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    /// Answers proxy failures with the same JSON shape as the gateway's own rejections.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rejection = match e.etype() {
            ErrorType::HTTPStatus(503) => Rejection::NoHealthyTarget,
            ErrorType::HTTPStatus(400) => Rejection::BadRequest,
            ErrorType::HTTPStatus(413) => Rejection::BodyTooLarge,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                Rejection::UpstreamTimeout
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Rejection::UpstreamUnreachable,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        // The client is gone; there is nobody to answer.
                        return FailToProxy {
                            error_code: 0,
                            can_reuse_downstream: false,
                        };
                    }
                    _ => Rejection::BadRequest,
                },
                ErrorSource::Internal | ErrorSource::Unset => Rejection::Internal,
            },
        };
        ctx.rejection = Some(rejection);
        let message = match rejection {
            Rejection::UpstreamTimeout => "the upstream did not answer in time",
            Rejection::UpstreamUnreachable => {
                "the upstream could not be reached or failed mid-response"
            }
            Rejection::NoHealthyTarget => "every target of this route's upstream is down",
            Rejection::BadRequest => "the request could not be read",
            Rejection::BodyTooLarge => "the request body is larger than this gateway accepts",
            _ => "the gateway failed to proxy this request",
        };
        // Pingora closes the client connection after a proxy failure; say so in the answer, or a
        // client would reuse the connection and lose its next request.
        session.set_keepalive(None);
        // Once the upstream's response header went out, only closing the connection is left.
        if session.response_written().is_none() {
            if let Err(write_error) =
                respond::error(session, rejection, message, ctx.request_id.as_str(), &[]).await
            {
                tracing::debug!(error = %write_error, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: rejection.status(),
            can_reuse_downstream: false,
        }
    }

    /// Owns observability: one metrics update and one access-log line per request.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route_name = ctx.route.as_ref().map_or("-", |r| &*r.name);
        let req = session.req_header();
        let method = req.method.as_str();
        let elapsed = ctx.started.elapsed();

        let route_metrics = ctx
            .route
            .as_ref()
            .map_or(&*metrics::UNROUTED, |r| &r.metrics);
        route_metrics.record(&req.method, status, elapsed);

        let Some(snapshot) = &ctx.snapshot else {
            return;
        };
        if snapshot.access_log == AccessLogFormat::Off {
            return;
        }
        let entry = access_log::Entry {
            time: humantime::format_rfc3339_millis(SystemTime::now()),
            request_id: ctx.request_id.as_str(),
            client_ip: access_log::OrDash(ctx.client_ip.or_else(|| peer_ip(session))),
            method,
            host: &ctx.host,
            path: access_log::loggable_path(req.uri.path_and_query().map_or("/", |pq| pq.as_str())),
            route: route_name,
            upstream: ctx.target,
            status,
            bytes: session.body_bytes_sent(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            error: ctx
                .rejection
                .map(Rejection::code)
                .or_else(|| e.map(|_| "proxy_error")),
            subject: ctx.identity.as_ref().map(|i| i.subject.as_str()),
            auth: ctx.auth_outcome.map(AuthOutcome::label),
            authz: ctx.authz.as_ref().map(|a| a.result),
            authz_cached: ctx.authz.as_ref().map(|a| a.cached),
            decision_id: ctx.authz.as_ref().and_then(|a| a.decision_id.as_deref()),
        };
        self.access_log.write(snapshot.access_log, &entry);
    }
}

impl Gateway {
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rejection: Rejection,
        message: &str,
        headers: &[(&'static str, String)],
    ) -> Result<bool> {
        self.refuse(
            session,
            ctx,
            rejection,
            message,
            headers,
            DenyReason::default(),
        )
        .await
    }

    /// As [`Gateway::reject`], naming the deciding policy and rule of a 403 in its body.
    ///
    /// Boxed: writing a response is a future of its own, and awaited inline it made every
    /// request's filter future as large as itself, to be allocated and moved for requests that
    /// are never refused.
    fn refuse<'a>(
        &'a self,
        session: &'a mut Session,
        ctx: &'a mut RequestCtx,
        rejection: Rejection,
        message: &'a str,
        headers: &'a [(&'static str, String)],
        reason: DenyReason<'a>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            ctx.rejection = Some(rejection);
            respond::denied(
                session,
                rejection,
                message,
                ctx.request_id.as_str(),
                headers,
                reason,
            )
            .await?;
            Ok(true)
        })
    }
}

fn select_target(route: &Route, session: &Session, ctx: &RequestCtx) -> Option<SocketAddr> {
    let pool = &route.pool;
    let identity = ctx.identity.as_deref();
    let ip_key = || ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    match pool.hash_key() {
        None => pool.select(b""),
        Some(HashKey::ClientIp) => pool.select(ip_key().as_bytes()),
        Some(HashKey::Header(name)) => match session.req_header().headers.get(name) {
            Some(v) => pool.select(v.as_bytes()),
            None => pool.select(ip_key().as_bytes()),
        },
        Some(HashKey::Claim(name)) => match identity.and_then(|i| i.claims.get(name)) {
            Some(serde_json::Value::String(s)) => pool.select(s.as_bytes()),
            Some(other) => pool.select(other.to_string().as_bytes()),
            None => pool.select(ip_key().as_bytes()),
        },
    }
}

/// The gateway's signed statement of `identity` for this route's upstream. Fails closed: a
/// route that promises its backend an assertion never forwards without one.
fn assertion(
    ctx: &RequestCtx,
    identity: &VerifiedIdentity,
    route: &str,
    audience: &str,
) -> Result<http::HeaderValue> {
    let signer = ctx
        .snapshot
        .as_ref()
        .and_then(|s| s.assertion_signer.as_ref())
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no assertion signer"))?;
    signer
        .assertion(
            &identity.token,
            &identity.claims,
            identity.expires_at,
            route,
            audience,
            unix_now(),
        )
        .map_err(|e| Error::because(ErrorType::InternalError, "signing the gateway assertion", e))
}

/// The socket peer's address (the client's is `RequestCtx::client_ip`).
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Text the gateway holds (a host, a decision id) as a header value; Pingora's `insert_header`
/// refused invalid text the same way.
fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "invalid header value", e))
}

/// An address as a header value (its text is always a valid value). IPv4, the common case, is
/// written without `fmt`, which took as long as inserting the header.
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let value = match ip {
        IpAddr::V4(v4) => HeaderValue::from_str(Ipv4Text::new(v4).as_str()),
        IpAddr::V6(_) => HeaderValue::try_from(ip.to_string()),
    };
    value.unwrap_or(HeaderValue::from_static(""))
}

/// The host the client asked for, lower case, without port: the URI authority (HTTP/2 and
/// absolute-form requests) or the Host header.
fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw).to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.bytes().rposition(|b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

fn https_location(host: &str, port: u16, req: &RequestHeader) -> String {
    let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let host = if host.is_empty() { "localhost" } else { host };
    if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_holds_the_address_text() {
        for ip in [
            "203.0.113.9",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let addr: IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_header_value(addr), ip);
        }
    }

    #[test]
    fn host_is_lowercased_without_port() {
        assert_eq!(strip_port("Example.com:8080"), "Example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("plain"), "plain");
    }
}
