//! The buffered request the issuer's endpoints read, independent of the server that carries it:
//! handlers are plain functions of a [`Request`], so the same issuer runs under its own listener
//! or embedded in the gateway. Parameter parsing follows RFC 6749 §3.1.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, Method};

use crate::reply::OAuthError;

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
