//! Responses the gateway writes itself: small JSON error bodies carrying the request id, and
//! redirects. Written with `write_response_header`, not `respond_error`, so the client connection
//! stays open for keep-alive.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde::Serialize;

/// Why the gateway answered instead of the upstream; also the access-log and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    NoRoute,
    MethodNotAllowed,
    HeaderTooLarge,
    BodyTooLarge,
    NoHealthyTarget,
    UpstreamUnreachable,
    UpstreamTimeout,
    BadRequest,
    /// A path refused by normalisation (`paths:`).
    BadPath,
    Internal,
    MissingToken,
    InvalidToken,
    InsufficientScope,
    AuthUnavailable,
    Forbidden,
    /// The policy service failed; the route's `failure_status`.
    AuthzUnavailable(u16),
    /// Over one of the route's `rate_limits`.
    RateLimited,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::NoRoute => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::HeaderTooLarge => 431,
            Rejection::BodyTooLarge => 413,
            Rejection::NoHealthyTarget => 503,
            Rejection::UpstreamUnreachable => 502,
            Rejection::UpstreamTimeout => 504,
            Rejection::BadRequest => 400,
            Rejection::BadPath => 400,
            Rejection::Internal => 500,
            Rejection::MissingToken | Rejection::InvalidToken => 401,
            Rejection::InsufficientScope => 403,
            Rejection::AuthUnavailable => 503,
            Rejection::Forbidden => 403,
            Rejection::AuthzUnavailable(status) => status,
            Rejection::RateLimited => 429,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Rejection::NoRoute => "no_route",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::HeaderTooLarge => "request_header_too_large",
            Rejection::BodyTooLarge => "request_body_too_large",
            Rejection::NoHealthyTarget => "no_healthy_upstream",
            Rejection::UpstreamUnreachable => "upstream_unreachable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::BadRequest => "bad_request",
            Rejection::BadPath => "bad_path",
            Rejection::Internal => "internal_error",
            Rejection::MissingToken => "missing_token",
            Rejection::InvalidToken => "invalid_token",
            Rejection::InsufficientScope => "insufficient_scope",
            Rejection::AuthUnavailable => "auth_unavailable",
            Rejection::Forbidden => "forbidden",
            Rejection::AuthzUnavailable(_) => "authz_unavailable",
            Rejection::RateLimited => "rate_limited",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
    /// The deciding policy and rule of a 403, on routes that expose them.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
}

/// Why a request was denied, when the route names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyReason<'a> {
    pub policy: Option<&'a str>,
    pub rule: Option<&'a str>,
}

pub async fn error(
    session: &mut Session,
    rejection: Rejection,
    message: &str,
    request_id: &str,
    extra_headers: &[(&'static str, String)],
) -> Result<()> {
    denied(
        session,
        rejection,
        message,
        request_id,
        extra_headers,
        DenyReason::default(),
    )
    .await
}

/// As [`error`], naming the deciding policy and rule in the body.
pub async fn denied(
    session: &mut Session,
    rejection: Rejection,
    message: &str,
    request_id: &str,
    extra_headers: &[(&'static str, String)],
    reason: DenyReason<'_>,
) -> Result<()> {
    let body = serde_json::to_vec(&ErrorBody {
        error: rejection.code(),
        message,
        request_id,
        policy: reason.policy,
        rule: reason.rule,
    })
    .unwrap_or_default();
    let mut header = ResponseHeader::build(rejection.status(), Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header(super::request_id::HEADER, request_id)?;
    for (name, value) in extra_headers {
        header.insert_header(*name, value.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

pub async fn redirect(session: &mut Session, location: &str, request_id: &str) -> Result<()> {
    let mut header = ResponseHeader::build(308, Some(3))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    header.insert_header(super::request_id::HEADER, request_id)?;
    session.write_response_header(Box::new(header), true).await
}
