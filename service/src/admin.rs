//! The admin listener every service runs on loopback: `GET /metrics` (the process's Prometheus
//! registry), `GET /healthz`, `POST /reload`, and whatever else a service adds (the gateway's
//! `/readyz` and `/config`, the issuer's `/keys/rotate`). It never shows file contents, keys or
//! secrets.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, HeaderValue, Method, Response, StatusCode};
use prometheus::{Encoder, TextEncoder};
use serde_json::{json, Value};

use crate::buffered::{json_answer, Handler, Request, RequestLimits, Timeouts};
use crate::reload::Reloadable;

/// Admin requests carry no meaningful body.
const MAX_BODY: usize = 64 * 1024;

#[async_trait]
pub trait Admin: Reloadable {
    /// The `/healthz` answer.
    fn health(&self) -> Value;

    /// Runs before `/metrics` gathers, for gauges computed at scrape time.
    fn before_scrape(&self) {}

    /// The service's own endpoints; `None` for a path it does not serve.
    async fn other(&self, _request: &Request) -> Option<Response<Vec<u8>>> {
        None
    }
}

pub struct AdminApp<T: ?Sized> {
    target: Arc<T>,
    timeouts: Timeouts,
}

impl<T: Admin + ?Sized> AdminApp<T> {
    pub fn new(target: Arc<T>, timeouts: Timeouts) -> Self {
        Self { target, timeouts }
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let target = self.target.clone();
        match tokio::task::spawn_blocking(move || target.reload()).await {
            Ok(Ok(outcome)) => {
                let mut answer = self.target.reload_status();
                answer.insert("result".into(), outcome.as_str().into());
                json_answer(StatusCode::OK, &Value::Object(answer))
            }
            Ok(Err(errors)) => json_answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"result": "rejected", "errors": errors.messages()}),
            ),
            Err(_) => json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"result": "failed"}),
            ),
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        self.target.before_scrape();
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        if encoder.encode(&prometheus::gather(), &mut body).is_err() {
            return json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "encoding"}),
            );
        }
        let mut r = Response::new(body);
        if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    }
}

#[async_trait]
impl<T: Admin + ?Sized> Handler for AdminApp<T> {
    fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_body_bytes: MAX_BODY,
            timeouts: self.timeouts,
        }
    }

    async fn handle(&self, request: Request) -> Response<Vec<u8>> {
        match (&request.method, request.path()) {
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/healthz") => json_answer(StatusCode::OK, &self.target.health()),
            (&Method::POST, "/reload") => self.reload().await,
            _ => match self.target.other(&request).await {
                Some(answer) => answer,
                None => json_answer(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
            },
        }
    }
}
