//! What the issuer adds to the shared admin listener (`/metrics`, `/healthz`, `POST /reload`):
//! its key state in `/healthz`, `GET /readyz` (the state store answers), `POST /keys/rotate`,
//! and `POST /users/<name>/logout|disable|enable`. Key ids are public (the JWKS lists
//! them); keys and secrets never appear here.

use async_trait::async_trait;
use gatehouse_service::{Admin, Request};
use http::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::keys::KeyState;
use crate::reply::{self, OAuthError};
use crate::Issuer;

#[async_trait]
impl Admin for Issuer {
    /// Every published key with its state, so an operator sees a next key before it signs.
    fn health(&self) -> Value {
        let set = self.keys.current();
        let keys: Vec<Value> = set
            .iter()
            .map(|k| {
                let mut key = Map::new();
                key.insert("kid".into(), k.kid().into());
                key.insert("alg".into(), k.alg().as_str().into());
                key.insert("state".into(), k.state().as_str().into());
                key.insert("created_at".into(), k.created_at().into());
                if let Some(t) = k.signs_from() {
                    key.insert("signs_from".into(), t.into());
                }
                if let Some(t) = k.retired_at() {
                    key.insert("retired_at".into(), t.into());
                }
                Value::Object(key)
            })
            .collect();
        json!({"status": "ok", "active_keys": set.count(KeyState::Active), "keys": keys})
    }

    async fn other(&self, request: &Request) -> Option<Response<Vec<u8>>> {
        match (&request.method, request.path()) {
            (&Method::POST, "/keys/rotate") => Some(self.rotate_on_command(request.query()).await),
            (&Method::GET, "/readyz") => Some(self.readiness().await),
            (method, path) => {
                let (name, action) = user_command(path)?;
                if method != Method::POST {
                    return Some(reply::json(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &json!({"error": "method_not_allowed", "allow": "POST"}),
                    ));
                }
                Some(self.user_command(&name, action).await)
            }
        }
    }
}

/// What `POST /users/<name>/<action>` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserAction {
    /// Revoke every token and session of the user (logout everywhere).
    Logout,
    /// Logout everywhere, and refuse logins until enabled.
    Disable,
    Enable,
}

/// `/users/<name>/logout|disable|enable`, the name percent-decoded.
fn user_command(path: &str) -> Option<(String, UserAction)> {
    let rest = path.strip_prefix("/users/")?;
    let (name, action) = rest.rsplit_once('/')?;
    let action = match action {
        "logout" => UserAction::Logout,
        "disable" => UserAction::Disable,
        "enable" => UserAction::Enable,
        _ => return None,
    };
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty()).then_some((name, action))
}

/// `?immediate=true` asks for an immediate rotation; no query (or `immediate=false`) for a
/// staged one. A query string rather than a body: the command stays one `curl -X POST`, and
/// anything else in it is refused rather than ignored, so a typo never downgrades an emergency
/// rotation to a staged one.
fn immediate(query: Option<&str>) -> Result<bool, OAuthError> {
    let mut immediate = false;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        immediate = match (name.as_ref(), value.as_ref()) {
            ("immediate", "true") => true,
            ("immediate", "false") => false,
            _ => {
                return Err(OAuthError::invalid_request(
                    "the only parameter is `immediate=true` or `immediate=false`".into(),
                ))
            }
        };
    }
    Ok(immediate)
}

impl Issuer {
    /// Ready while the state store answers: without it no token can be issued safely.
    async fn readiness(&self) -> Response<Vec<u8>> {
        if self.state.ping().await {
            reply::json(StatusCode::OK, &json!({"ready": true}))
        } else {
            reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": "the state store is unavailable"}),
            )
        }
    }

    /// Logout everywhere, disable or enable a user (`logout` also takes a client id: every
    /// token of that service). Gateways following the revocation feed refuse the revoked
    /// tokens within their poll interval.
    async fn user_command(&self, name: &str, action: UserAction) -> Response<Vec<u8>> {
        let settings = self.settings();
        let is_user = settings.users.contains_key(name);
        let known =
            is_user || (action == UserAction::Logout && settings.clients.contains_key(name));
        if !known {
            return reply::json(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "error_description": "no such user"}),
            );
        }
        let now = crate::clock::now();
        let result = match action {
            UserAction::Logout | UserAction::Disable => self
                .state
                .revoke_subject(
                    name,
                    now,
                    self.token_horizon(),
                    action == UserAction::Disable,
                )
                .await
                .map(|()| true),
            UserAction::Enable => self.state.enable_user(name).await,
        };
        let changed = match result {
            Ok(changed) => changed,
            Err(_) => return OAuthError::store_unavailable().reply(),
        };
        let (event, answer) = match action {
            UserAction::Logout => (
                "logout_everywhere",
                json!({"subject": name, "revoked_issued_before": now}),
            ),
            UserAction::Disable => (
                "user_disabled",
                json!({"subject": name, "disabled": true, "revoked_issued_before": now}),
            ),
            UserAction::Enable => (
                "user_enabled",
                json!({"subject": name, "disabled": false, "was_disabled": changed}),
            ),
        };
        tracing::info!(subject = %name, event, "admin command");
        self.audit.record(crate::audit::Event {
            event,
            outcome: "success",
            user: Some(name),
            reason: Some("admin"),
            ..crate::audit::Event::default()
        });
        reply::json(StatusCode::OK, &answer)
    }

    /// `POST /keys/rotate`: next keys published now that sign once `keys.jwks_max_age` has
    /// passed, or with `?immediate=true` new active keys now, the old ones retired (still in the
    /// JWKS) and any waiting next key withdrawn.
    async fn rotate_on_command(&self, query: Option<&str>) -> Response<Vec<u8>> {
        let immediate = match immediate(query) {
            Ok(i) => i,
            Err(e) => return e.reply(),
        };
        let Some(issuer) = self.this.upgrade() else {
            return OAuthError::server_error().reply();
        };
        let reason = if immediate {
            "admin, immediate"
        } else {
            "admin"
        };
        // Generating an RSA key takes a while, and the key ring waits for the store: keep it off
        // the async workers.
        match tokio::task::spawn_blocking(move || issuer.rotate_keys(reason, immediate)).await {
            Ok(Ok(rotation)) => reply::json(
                StatusCode::OK,
                &json!({
                    "immediate": immediate,
                    "rotated": rotation.iter().map(|c| json!({
                        "alg": c.alg.as_str(),
                        "kid": c.kid,
                        "state": c.state.as_str(),
                        "signs_from": c.signs_from,
                        "replaces_kid": c.replaces,
                        "created": c.created,
                        "withdrawn_kid": c.withdrawn,
                    })).collect::<Vec<_>>(),
                }),
            ),
            // The keys held in memory are unchanged; the operator may try again.
            Ok(Err(e @ crate::keys::KeyError::Store(_))) => {
                tracing::error!(error = %e, "key rotation failed");
                OAuthError::store_unavailable().reply()
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "key rotation failed");
                OAuthError::server_error().reply()
            }
            Err(_) => OAuthError::server_error().reply(),
        }
    }
}
