//! What the issuer adds to the shared admin listener (`/metrics`, `/healthz`, `POST /reload`):
//! its key state in `/healthz`, and `POST /keys/rotate`. Key ids are public (the JWKS lists
//! them); keys and secrets never appear here.

use async_trait::async_trait;
use gatehouse_service::{Admin, Request};
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::reply::{self, OAuthError};
use crate::Issuer;

#[async_trait]
impl Admin for Issuer {
    fn health(&self) -> Value {
        let keys = self.keys.current();
        json!({"status": "ok", "active_keys": keys.active_count(), "keys": keys.kids()})
    }

    async fn other(&self, request: &Request) -> Option<Response<Vec<u8>>> {
        if (&request.method, request.path()) != (&Method::POST, "/keys/rotate") {
            return None;
        }
        Some(self.rotate_on_command().await)
    }
}

impl Issuer {
    /// `POST /keys/rotate`: new active keys now, the old ones retired (still in the JWKS).
    async fn rotate_on_command(&self) -> Response<Vec<u8>> {
        let Some(issuer) = self.this.upgrade() else {
            return OAuthError::server_error().reply();
        };
        // Generating an RSA key takes a while and writes files: keep it off the async workers.
        match tokio::task::spawn_blocking(move || issuer.rotate_keys("admin")).await {
            Ok(Ok(rotation)) => reply::json(
                StatusCode::OK,
                &json!({
                    "rotated": rotation.iter().map(|(alg, retired, fresh)| json!({
                        "alg": alg.as_str(), "retired_kid": retired, "kid": fresh,
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
