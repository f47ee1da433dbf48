//! One poll of a revocation feed: `GET <url>?after=<cursor>&limit=<n>` with HTTP Basic client
//! authentication (RFC 6749 §2.3.1), the answer read up to a size bound and parsed.

use std::time::Duration;

use http::StatusCode;

use super::page::{Page, PageError};
use super::FeedSettings;
use crate::capped_body::{self, BodyError};

/// Entries asked for per page (the contract's default, stated so the size bound below fits).
pub const PAGE_LIMIT: u32 = 1000;

/// Larger answers are refused: a page of [`PAGE_LIMIT`] entries is well under 1 MiB, and a
/// misbehaving issuer must not make the gateway buffer without bound.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Why a poll failed. Names the URL (which carries no credentials) but never the secret.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: answered {status}{hint}")]
    Status {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error("{url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: {source}")]
    Page {
        url: String,
        #[source]
        source: PageError,
    },
    /// The feed broke its contract (e.g. `reset` to a request that was already from the start).
    #[error("{url}: {message}")]
    Protocol { url: String, message: &'static str },
}

impl FeedError {
    /// A short, stable description of the kind of failure: the follower logs again only when it
    /// changes, not on every poll.
    pub fn kind(&self) -> String {
        match self {
            FeedError::Http { source, .. } if source.is_timeout() => "timeout".into(),
            FeedError::Http { source, .. } if source.is_connect() => "connect".into(),
            FeedError::Http { .. } => "http".into(),
            FeedError::Status { status, .. } => format!("status {}", status.as_u16()),
            FeedError::TooLarge { .. } => "too_large".into(),
            FeedError::Page { .. } => "bad_answer".into(),
            FeedError::Protocol { message, .. } => (*message).into(),
        }
    }
}

/// Asks for the entries after `after` (`None`: from the beginning).
pub async fn poll(
    client: &reqwest::Client,
    settings: &FeedSettings,
    after: Option<&str>,
    timeout: Duration,
) -> Result<Page, FeedError> {
    let url = &settings.url;
    let limit = PAGE_LIMIT.to_string();
    let mut query: Vec<(&str, &str)> = Vec::with_capacity(2);
    if let Some(after) = after {
        query.push(("after", after));
    }
    query.push(("limit", &limit));
    let response = client
        .get(url)
        .query(&query)
        .basic_auth(&settings.client_id, Some(settings.client_secret.expose()))
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| FeedError::Http {
            url: url.clone(),
            source,
        })?;
    let status = response.status();
    if status != StatusCode::OK {
        let hint = match status {
            StatusCode::UNAUTHORIZED => " (check client_id and the client secret)",
            StatusCode::FORBIDDEN => " (the client needs the scope revocations:read)",
            _ => "",
        };
        return Err(FeedError::Status {
            url: url.clone(),
            status,
            hint,
        });
    }
    let body = read_capped(response, url).await?;
    Page::parse(&body).map_err(|source| FeedError::Page {
        url: url.clone(),
        source,
    })
}

async fn read_capped(response: reqwest::Response, url: &str) -> Result<Vec<u8>, FeedError> {
    capped_body::read_capped(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => FeedError::TooLarge {
                url: url.to_string(),
            },
            BodyError::Http(source) => FeedError::Http {
                url: url.to_string(),
                source,
            },
        })
}
