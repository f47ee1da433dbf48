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
        crate::metrics::publish_pool_health(self.current().pool_health());
    }

    async fn other(&self, request: &Request) -> Option<Response<Vec<u8>>> {
        if request.method != Method::GET {
            return None;
        }
        let snapshot = self.current();
        let body = match request.path() {
            "/readyz" => json!({"ready": true, "config_version": snapshot.version}),
            "/config" => serde_json::to_value(snapshot.summary()).unwrap_or_default(),
            _ => return None,
        };
        Some(json_answer(StatusCode::OK, &body))
    }
}
