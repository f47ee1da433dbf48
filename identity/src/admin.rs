//! What the issuer adds to the shared admin listener (`/metrics`, `/healthz`, `POST /reload`):
//! its key state in `/healthz`, and `POST /keys/rotate`. Key ids are public (the JWKS lists
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
        if (&request.method, request.path()) != (&Method::POST, "/keys/rotate") {
            return None;
        }
        Some(self.rotate_on_command(request.query()).await)
    }
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
        // Generating an RSA key takes a while and writes files: keep it off the async workers.
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
            Ok(Err(e)) => {
                tracing::error!(error = %e, "key rotation failed");
                OAuthError::server_error().reply()
            }
            Err(_) => OAuthError::server_error().reply(),
        }
    }
}
