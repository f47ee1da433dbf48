//! One fetch of an issuer's keys over HTTP: discovery when no `jwks_url` is configured, then the
//! JWKS with `If-None-Match`, and how long the answer may be kept (`Cache-Control: max-age`).

use std::time::Duration;

use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::StatusCode;
use serde::Deserialize;

use crate::capped_body::{self, BodyError};

/// Larger documents are refused: a key set is a few KiB, and a misbehaving IdP must not make
/// the gateway buffer without bound.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: discovery document without jwks_uri: {message}")]
    Discovery { url: String, message: String },
}

/// What one JWKS request returned.
pub enum Fetched {
    /// A new document (with its ETag, if any).
    Document { body: Vec<u8>, etag: Option<String> },
    /// 304: the keys we hold are still current.
    NotModified,
}

pub struct Answer {
    pub fetched: Fetched,
    /// `Cache-Control: max-age`, when the server gave one.
    pub max_age: Option<Duration>,
}

/// `jwks_uri` from `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4).
pub async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, FetchError> {
    #[derive(Deserialize)]
    struct Discovery {
        jwks_uri: String,
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = send(client.get(&url), &url).await?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        return Err(FetchError::Status { url, status });
    }
    let body = read_capped(response, &url).await?;
    serde_json::from_slice::<Discovery>(&body)
        .map(|d| d.jwks_uri)
        .map_err(|e| FetchError::Discovery {
            url,
            message: e.to_string(),
        })
}

/// GETs the JWKS, conditionally when `etag` is known.
pub async fn jwks(
    client: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
) -> Result<Answer, FetchError> {
    let mut request = client.get(url);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let response = send(request, url).await?;
    let max_age = response
        .headers()
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let fetched = match response.status() {
        StatusCode::NOT_MODIFIED => Fetched::NotModified,
        StatusCode::OK => {
            let etag = response
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Fetched::Document {
                body: read_capped(response, url).await?,
                etag,
            }
        }
        status => {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            })
        }
    };
    Ok(Answer { fetched, max_age })
}

async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, FetchError> {
    request.send().await.map_err(|source| FetchError::Http {
        url: url.to_string(),
        source,
    })
}

async fn read_capped(response: reqwest::Response, url: &str) -> Result<Vec<u8>, FetchError> {
    capped_body::read_capped(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => FetchError::TooLarge {
                url: url.to_string(),
            },
            BodyError::Http(source) => FetchError::Http {
                url: url.to_string(),
                source,
            },
        })
}

/// `max-age` of a `Cache-Control` value (RFC 9111 §5.2.2.1); `no-store`/`no-cache` count as 0.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
