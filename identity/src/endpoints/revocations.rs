//! `GET /revocations?after=<cursor>`: the revocation feed gateways follow, so a token revoked
//! here is refused everywhere within a poll interval without a call per request. See the
//! README ("Revocation feed") for the format.
//!
//! Readers authenticate as a client (HTTP Basic) registered with the `revocations:read` scope:
//! the feed names subjects and token ids, which are nobody else's business.

use http::StatusCode;
use serde_json::json;

use crate::client_auth::{self, ClientAuth};
use crate::clock::now;
use crate::config::Settings;
use crate::issuer::Issuer;
use crate::reply::{json, OAuthError, Reply};
use crate::request::{Params, Request};

/// The scope a client needs to read the feed.
pub const SCOPE: &str = "revocations:read";
const DEFAULT_LIMIT: i64 = 1000;
const MAX_LIMIT: i64 = 10_000;

pub async fn feed(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    answer(issuer, settings, req)
        .await
        .unwrap_or_else(|e| e.reply())
}

async fn answer(issuer: &Issuer, settings: &Settings, req: &Request) -> Result<Reply, OAuthError> {
    // Credentials come in the Authorization header only: a secret in a URL ends up in logs.
    let (client, auth) =
        client_auth::authenticate(issuer, settings, req, &Params::default()).await?;
    if auth == ClientAuth::None {
        return Err(OAuthError::invalid_client("client authentication required"));
    }
    if !client.scopes.contains(SCOPE) {
        return Err(OAuthError::insufficient_scope(
            "the client lacks the revocations:read scope",
        ));
    }
    let (after, limit) = cursor_and_limit(&req.query_params()?)?;
    let page = issuer.state.feed_page(after, limit, now()).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "feed": issuer.state.feed_id(),
            "cursor": page.cursor.to_string(),
            "more": page.more,
            "reset": page.reset,
            "entries": page.entries,
        }),
    ))
}

fn cursor_and_limit(params: &Params) -> Result<(i64, i64), OAuthError> {
    let after = match params.get("after") {
        None | Some("") => 0,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            OAuthError::invalid_request("`after` must be a cursor this feed gave".into())
        })?,
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                OAuthError::invalid_request(format!("`limit` must be 1 to {MAX_LIMIT}"))
            })?,
    };
    Ok((after, limit))
}
