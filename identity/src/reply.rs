//! What the issuer answers: response builders and the RFC 6749 §5.2 error answer.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

pub type Reply = Response<Vec<u8>>;

/// An OAuth error answer: `{"error", "error_description"}` with the status RFC 6749 §5.2 gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// `WWW-Authenticate` value for 401s (RFC 6749 §5.2, RFC 6750 §3).
    pub challenge: Option<String>,
    /// `Retry-After` for 429s and 503s (RFC 9110 §10.2.3).
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: String) -> Self {
        Self {
            status,
            error,
            description,
            challenge: None,
            retry_after: None,
        }
    }
    pub fn invalid_request(description: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    /// RFC 6749 §5.2: 401 with a `Basic` challenge, whichever way the client tried.
    pub fn invalid_client(description: &str) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            description.into(),
        );
        e.challenge = Some(r#"Basic realm="gatehouse-identity", charset="UTF-8""#.into());
        e
    }
    pub fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description.into())
    }
    pub fn unauthorized_client(description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            description.into(),
        )
    }
    pub fn unsupported_grant_type(description: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }
    pub fn invalid_scope(description: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }
    /// RFC 8707 §2: an audience (resource) the client may not ask for.
    pub fn invalid_target(description: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }
    /// A password grant refused by the lockout (the user, or the address, has failed too
    /// often): RFC 6749 §5.2 has no code for it, so it is the grant's own `invalid_grant`, 400,
    /// with the delay in the description and in `Retry-After`.
    pub fn too_many_attempts(retry_after: Duration) -> Self {
        Self::too_many(
            StatusCode::BAD_REQUEST,
            retry_after,
            "invalid_grant",
            "logins",
        )
    }
    /// Client authentication refused by the lockout, answered as a locked-out login is: 429,
    /// `Retry-After`, and the error code the endpoint uses for failed client authentication.
    pub fn too_many_client_failures(retry_after: Duration) -> Self {
        Self::too_many(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "invalid_client",
            "client authentications",
        )
    }
    fn too_many(
        status: StatusCode,
        retry_after: Duration,
        error: &'static str,
        what: &str,
    ) -> Self {
        let secs = retry_after_secs(retry_after);
        let description = format!("too many failed {what}; try again in {secs}s");
        Self::new(status, error, description).retrying_after(retry_after)
    }
    /// Every argon2 check is running and the queue is full: nothing was checked.
    /// `temporarily_unavailable` is RFC 6749 §4.1.2.1's code for an overloaded server.
    pub fn temporarily_unavailable(retry_after: Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the server is busy checking other credentials; try again shortly".into(),
        )
        .retrying_after(retry_after)
    }
    fn retrying_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    pub fn invalid_token(description: &str) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            description.into(),
        );
        e.challenge = Some(format!(
            r#"Bearer error="invalid_token", error_description="{description}""#
        ));
        e
    }
    pub fn insufficient_scope(description: &str) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            description.into(),
        );
        e.challenge = Some(format!(
            r#"Bearer error="insufficient_scope", error_description="{description}""#
        ));
        e
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {limit} bytes"),
        )
    }
    /// The request body did not arrive within `timeouts.body`.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "the request body did not arrive in time".into(),
        )
    }
    /// RFC 9110 §10.1.1: only `Expect: 100-continue` is understood.
    pub fn expectation_failed() -> Self {
        Self::new(
            StatusCode::EXPECTATION_FAILED,
            "invalid_request",
            "only `Expect: 100-continue` is supported".into(),
        )
    }
    /// The state store could not be read or written: nothing was issued; try again.
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the identity state store is unavailable; try again shortly".into(),
        )
        .retrying_after(Duration::from_secs(1))
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request".into(),
        )
    }

    pub fn reply(&self) -> Reply {
        let mut r = json(
            self.status,
            &serde_json::json!({"error": self.error, "error_description": self.description}),
        );
        if let Some(c) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(wait) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs(wait).into());
        }
        r
    }
}

/// Whole seconds, rounded up: a client that waits that long finds the lock over.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A JSON answer that no cache may keep (RFC 6749 §5.1: tokens and errors are `no-store`).
pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut r = respond(status, "application/json", value.to_string().into_bytes());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, len.into());
    r
}

/// 303 See Other: the browser follows it with a GET, whatever method brought it here.
pub fn redirect(location: &str) -> Reply {
    let mut r = respond(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Vec::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = OAuthError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "invalid_request",
        description: format!("use {allow}"),
        challenge: None,
        retry_after: None,
    }
    .reply();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

impl From<crate::state::StoreError> for OAuthError {
    fn from(_: crate::state::StoreError) -> Self {
        // The store logged and counted the failure; the client learns only to retry.
        OAuthError::store_unavailable()
    }
}
