//! What the policy service adds to the kit's admin listener (`/metrics`, `/healthz`,
//! `POST /reload`): its health answer, and its own 404 for every other path, in the decision
//! API's error format.

use async_trait::async_trait;
use gatehouse_service::{Admin, Request};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::api;
use crate::authorizer::Authorizer;

#[async_trait]
impl Admin for Authorizer {
    fn health(&self) -> Value {
        let set = self.policies();
        json!({"status": "ok", "policies": set.policies.len(), "version": set.version()})
    }

    async fn other(&self, _request: &Request) -> Option<Response<Vec<u8>>> {
        Some(api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        ))
    }
}
