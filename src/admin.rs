//! What the gateway adds to the shared admin listener (`/metrics`, `/healthz`, `POST /reload`):
//! `/readyz` and `/config`, and the pool-health gauges computed at scrape time. Never exposes
//! file contents, keys or secrets.

use async_trait::async_trait;
use gatehouse_service::{json_answer, Admin, Request};
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::reload::ConfigStore;

#[async_trait]
impl Admin for ConfigStore {
    fn health(&self) -> Value {
        json!({"status": "ok"})
    }

    fn before_scrape(&self) {
        let snapshot = self.current();
        crate::metrics::publish_pool_health(snapshot.pool_health());
        crate::metrics::publish_key_set_ages(
            snapshot
                .issuers
                .iter()
                .map(|(name, issuer)| (name.as_str(), issuer.keys.age_secs())),
        );
    }

    async fn other(&self, request: &Request) -> Option<Response<Vec<u8>>> {
        if request.method != Method::GET {
            return None;
        }
        let snapshot = self.current();
        match request.path() {
            "/readyz" => {
                // Not ready until every issuer's keys are in: a token could not be checked.
                let waiting = snapshot.issuers_without_keys();
                let status = if waiting.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = json!({
                    "ready": waiting.is_empty(),
                    "waiting_for": waiting,
                    "config_version": snapshot.version,
                });
                Some(json_answer(status, &body))
            }
            "/config" => {
                let body = serde_json::to_value(snapshot.summary()).unwrap_or_default();
                Some(json_answer(StatusCode::OK, &body))
            }
            _ => None,
        }
    }
}
