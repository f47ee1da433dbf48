//! Client authentication at the back-channel endpoints (token, introspection, revocation).
//!
//! A secret that verified before is recognised from the [`SecretCache`] without argon2 and
//! without the lockout: a lock caused by someone else's wrong secrets does not stop a client
//! that already proved its own. Any other secret is a possible guess: it goes through the
//! lockout (per client id, known or not, and per address) and then waits for one of the bounded
//! argon2 checks (`hash_gate`).

use std::sync::Arc;

use crate::audit::Event;
use crate::config::{Client, Settings};
use crate::hash_gate::Busy;
use crate::issuer::Issuer;
use crate::lockout::{Account, FailureOutcome};
use crate::metrics;
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
    issuer: &Issuer,
    settings: &Settings,
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
    let Some(secret) = secret else {
        // No secret, nothing to guess: a public client names itself.
        // An unknown id is answered as a confidential client without its secret would be, so
        // the answer does not tell which ids exist.
        return match client {
            Some(client) if client.is_public() => Ok((client, ClientAuth::None)),
            _ => Err(OAuthError::invalid_client("client authentication required")),
        };
    };
    if client.as_ref().is_some_and(|c| c.is_public()) {
        return Err(OAuthError::invalid_client(
            "this client is public and has no secret",
        ));
    }
    let phc = client.as_ref().and_then(|c| c.secret_hash.clone());
    check_secret(issuer, settings, req, &id, &secret, phc).await?;
    match client {
        Some(client) => Ok((client, method)),
        None => Err(OAuthError::invalid_client(
            "unknown client or bad credentials",
        )),
    }
}

/// Checks the secret presented for client `id`; `phc` is `None` for an id that does not exist,
/// which is checked against the dummy hash, locked out and answered exactly like a known one.
async fn check_secret(
    issuer: &Issuer,
    settings: &Settings,
    req: &Request,
    id: &str,
    secret: &str,
    phc: Option<String>,
) -> Result<(), OAuthError> {
    // Verified before: no guess, so no argon2 and no lockout. The lock is there to stop
    // guessing; refusing a known secret too let anyone who knows a client id (the gateway's feed
    // client's is in its config) lock that client out with wrong secrets. Nor does it clear
    // the failures: they were not this client's.
    if let Some(phc) = &phc {
        if issuer.secrets.cached(id, secret, phc) {
            return Ok(());
        }
    }
    let policy = (&settings.lockout).into();
    let account = Account::Client(id);
    // Locked by any instance, or before a restart: refused before anything is checked.
    let shared = issuer
        .shared_lock(account)
        .await?
        .map_err(OAuthError::too_many_client_failures)?;
    let check = || async {
        let mut attempt = issuer
            .lockout
            .begin(account, req.peer_ip, policy)
            .map_err(OAuthError::too_many_client_failures)?;
        // Refused for load, the attempt is dropped before its check: it counts for nothing.
        let permit = issuer
            .hashing
            .admit()
            .await
            .map_err(|Busy| OAuthError::temporarily_unavailable(Busy::RETRY_AFTER))?;
        attempt.checking();
        let ok = permit.verify(secret.to_string(), phc.clone()).await;
        let shared_locked = issuer
            .record_shared(account, shared, ok && phc.is_some(), policy)
            .await;
        match &phc {
            Some(phc) if ok => {
                attempt.succeeded();
                shared_locked?;
                issuer.secrets.remember(id, secret, phc);
            }
            _ => {
                let locally_locked = attempt.failed() == FailureOutcome::Locked;
                if locally_locked || matches!(shared_locked, Ok(true)) {
                    metrics::LOCKOUTS.inc();
                    issuer.audit.record(Event {
                        client: Some(id),
                        reason: Some("too many failed client authentications"),
                        ..Event::of(req, "lockout", "locked")
                    });
                }
            }
        }
        Ok::<bool, OAuthError>(ok && phc.is_some())
    };
    if issuer.secrets.check_once(id, secret, check).await? {
        Ok(())
    } else {
        Err(OAuthError::invalid_client(
            "unknown client or bad credentials",
        ))
    }
}
