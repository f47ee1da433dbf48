//! What the gateway adds to the shared admin listener (`/metrics`, `/healthz`, `POST /reload`):
//! `/readyz`, `/config`, the public keys of the gateway assertion (`/.well-known/jwks.json`),
//! and the pool-health gauges computed at scrape time. Never exposes file contents, private keys
//! or secrets.

use async_trait::async_trait;
use gatehouse_service::{json_answer, Admin, Request};
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::Snapshot;
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
        crate::metrics::publish_revocation_feeds(snapshot.issuers.iter().filter_map(
            |(name, issuer)| {
                let feed = &issuer.revocations.as_ref()?.feed;
                let (jtis, subjects) = feed.counts();
                Some(crate::metrics::FeedState {
                    issuer: name,
                    age: feed.age_secs(),
                    jtis,
                    subjects,
                })
            },
        ));
    }

    async fn other(&self, request: &Request) -> Option<Response<Vec<u8>>> {
        if request.method != Method::GET {
            return None;
        }
        let snapshot = self.current();
        match request.path() {
            "/readyz" => {
                // Not ready until every issuer's keys are in (a token could not be checked) and
                // every revocation feed has caught up once (a revoked token would pass).
                let mut waiting = snapshot.issuers_without_keys();
                waiting.extend(snapshot.feeds_not_synced());
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
            JWKS_PATH => Some(assertion_jwks(&snapshot)),
            _ => None,
        }
    }
}

/// Where backends fetch the keys that verify `X-Gatehouse-Assertion`.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The gateway key never rotates while the process runs, so a backend may keep the set a while.
const JWKS_CACHE_CONTROL: &str = "public, max-age=300";

/// The assertion key set; 404 until a route asks for assertions (the key is created then).
fn assertion_jwks(snapshot: &Snapshot) -> Response<Vec<u8>> {
    let Some(signer) = &snapshot.assertion_signer else {
        let body = json!({"error": "not_found", "message": "no route sends a gateway assertion"});
        return json_answer(StatusCode::NOT_FOUND, &body);
    };
    let mut r = Response::new(signer.jwks());
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(JWKS_CACHE_CONTROL),
    );
    r
}
