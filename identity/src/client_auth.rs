//! Client authentication at the back-channel endpoints (token, introspection, revocation).

use std::sync::Arc;

use crate::config::{Client, Settings};
use crate::password::{self, SecretCache};
use crate::reply::OAuthError;
use crate::request::{Params, Request};

/// How a client proved who it is at the token, introspection or revocation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
    /// A public client naming itself: allowed only where the endpoint says so.
    None,
}

/// Authenticates the client of a back-channel request (RFC 6749 §2.3.1): HTTP Basic or the
/// form body, never both; a public client only names itself.
pub async fn authenticate(
    settings: &Settings,
    secrets: &SecretCache,
    req: &Request,
    params: &Params,
) -> Result<(Arc<Client>, ClientAuth), OAuthError> {
    let (id, secret, method) = match req.basic_credentials() {
        Some(Err(())) => return Err(OAuthError::invalid_client("malformed Basic credentials")),
        Some(Ok((id, secret))) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not Basic and client_secret".into(),
                ));
            }
            if params.get("client_id").is_some_and(|p| p != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials".into(),
                ));
            }
            (id, Some(secret), ClientAuth::Basic)
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => {
                (id.to_string(), Some(secret.to_string()), ClientAuth::Post)
            }
            (Some(id), None) => (id.to_string(), None, ClientAuth::None),
            (None, _) => return Err(OAuthError::invalid_client("client authentication required")),
        },
    };
    let client = settings.clients.get(&id).cloned();
    let Some(client) = client else {
        if let Some(secret) = secret {
            // Same time as a real check: the answer must not reveal which client ids exist.
            let _ = tokio::task::spawn_blocking(move || password::verify_dummy(&secret)).await;
        }
        return Err(OAuthError::invalid_client(
            "unknown client or bad credentials",
        ));
    };
    match (&client.secret_hash, secret) {
        (None, None) => Ok((client, ClientAuth::None)),
        (None, Some(_)) => Err(OAuthError::invalid_client(
            "this client is public and has no secret",
        )),
        (Some(_), None) => Err(OAuthError::invalid_client("client authentication required")),
        (Some(phc), Some(secret)) => {
            if secrets.cached(&client.id, &secret, phc) {
                return Ok((client, method));
            }
            let (phc, s) = (phc.clone(), secret.clone());
            let ok = tokio::task::spawn_blocking(move || password::verify(&s, &phc))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(OAuthError::invalid_client(
                    "unknown client or bad credentials",
                ));
            }
            if let Some(phc) = &client.secret_hash {
                secrets.remember(&client.id, &secret, phc);
            }
            Ok((client, method))
        }
    }
}
