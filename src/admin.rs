//! The admin listener (127.0.0.1 by default): `/metrics`, `/healthz`, `/readyz`, `/config` and
//! `POST /reload`. Never exposes file contents, keys or secrets.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{Encoder, TextEncoder};

use crate::reload::{ConfigStore, ReloadOutcome};

pub struct AdminApp {
    pub store: Arc<ConfigStore>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                crate::metrics::publish_pool_health(self.store.current().pool_health());
                metrics_text()
            }
            (Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (Method::GET, "/readyz") => {
                let snapshot = self.store.current();
                json(
                    StatusCode::OK,
                    serde_json::json!({"ready": true, "config_version": snapshot.version}),
                )
            }
            (Method::GET, "/config") => {
                let snapshot = self.store.current();
                json(
                    StatusCode::OK,
                    serde_json::to_value(snapshot.summary()).unwrap_or_default(),
                )
            }
            (Method::POST, "/reload") => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.reload()).await {
                    Ok(Ok(ReloadOutcome::Applied { version })) => json(
                        StatusCode::OK,
                        serde_json::json!({"result": "applied", "version": version}),
                    ),
                    Ok(Ok(ReloadOutcome::Unchanged)) => {
                        json(StatusCode::OK, serde_json::json!({"result": "unchanged"}))
                    }
                    Ok(Err(errors)) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({
                            "result": "rejected",
                            "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        }),
                    ),
                    Err(_) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"result": "failed"}),
                    ),
                }
            }
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found"}),
            ),
        }
    }
}

fn metrics_text() -> Response<Vec<u8>> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if encoder.encode(&prometheus::gather(), &mut body).is_err() {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": "encoding"}),
        );
    }
    respond(StatusCode::OK, encoder.format_type(), body)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", value.to_string().into_bytes())
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    response
}
