//! The HTTP surface independent of the server that carries it: a buffered [`Request`], response
//! builders, and the RFC 6749 §5.2 error answer. Handlers are plain functions of a `Request`, so
//! the same issuer runs under its own listener or embedded in the gateway.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

pub type Reply = Response<Vec<u8>>;

#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub peer_ip: Option<IpAddr>,
    /// The request arrived over TLS: session cookies get `Secure`.
    pub tls: bool,
}

/// Request parameters, each present at most once (RFC 6749 §3.1). Empty values count as absent.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter `{name}`")))
    }

    pub fn parse(encoded: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(encoded) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{k}` is repeated"
                )));
            }
        }
        Ok(Self(map))
    }
}

impl Request {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query_params(&self) -> Result<Params, OAuthError> {
        Params::parse(self.query.as_deref().unwrap_or("").as_bytes())
    }

    /// The form body of a POST; anything but `application/x-www-form-urlencoded` is refused.
    pub fn form(&self) -> Result<Params, OAuthError> {
        let content_type = self.header(header::CONTENT_TYPE).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        Params::parse(&self.body)
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.header(header::USER_AGENT)
    }

    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    pub fn bearer(&self) -> Option<&str> {
        let value = self.header(header::AUTHORIZATION)?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// `Authorization: Basic` client credentials, each half form-decoded (RFC 6749 §2.3.1).
    /// `Some(Err)` is a malformed header, which must fail rather than fall back to the body.
    pub fn basic_credentials(&self) -> Option<Result<(String, String), ()>> {
        let value = self.header(header::AUTHORIZATION)?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decode = || -> Option<(String, String)> {
            let raw = STANDARD.decode(encoded.trim()).ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (id, secret) = raw.split_once(':')?;
            let unescape = |s: &str| -> String {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((unescape(id), unescape(secret)))
        };
        Some(decode().ok_or(()))
    }
}

/// An OAuth error answer: `{"error", "error_description"}` with the status RFC 6749 §5.2 gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// `WWW-Authenticate` value for 401s (RFC 6749 §5.2, RFC 6750 §3).
    pub challenge: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: String) -> Self {
        Self {
            status,
            error,
            description,
            challenge: None,
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
    pub fn too_many_attempts(retry_after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_grant",
            format!(
                "too many failed logins; try again in {}s",
                retry_after.as_secs().max(1)
            ),
        )
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
        r
    }
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
    }
    .reply();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
