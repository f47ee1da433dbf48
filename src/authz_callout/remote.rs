//! HTTP calls to a `gatehouse-authz` service: pooled keep-alive connections, one timeout for the
//! whole call, one retry when the connection could not be made (nothing was sent, so nothing can
//! be decided twice), and a circuit breaker while the service is down.

use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_authz::policy::ContextReads;
use gatehouse_authz::Request;
use serde::Deserialize;

use super::circuit::Circuit;
use super::{Answer, CalloutError};

/// Larger answers are refused: a decision is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct RemoteAuthz {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    /// Calls in flight at most (`pool_size`): a flood of requests that miss the decision cache
    /// (anonymous ones on an optional route, say) cannot open connections to the service without
    /// bound. A call waits for a slot within its timeout.
    in_flight: tokio::sync::Semaphore,
    circuit: Circuit,
    /// The policy set's context reads, from the latest answer; until one arrives, everything.
    context_reads: ArcSwap<ContextReads>,
    /// Identifies the settings it was built from, so a reload keeps it (pool and circuit) when
    /// they did not change.
    pub fingerprint: String,
}

impl std::fmt::Debug for RemoteAuthz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAuthz")
            .field("url", &self.url)
            .finish()
    }
}

#[derive(Deserialize)]
struct Wire {
    decision_id: String,
    allow: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    policy_id: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    policy_set_version: Option<String>,
    #[serde(default)]
    context_reads: Option<ContextReads>,
}

impl RemoteAuthz {
    pub fn new(
        base_url: &str,
        timeout: Duration,
        pool_size: usize,
        circuit: Circuit,
        fingerprint: String,
    ) -> Result<RemoteAuthz, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(pool_size)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(RemoteAuthz {
            url: format!("{}/authz/v1/authorize", base_url.trim_end_matches('/')),
            client,
            timeout,
            in_flight: tokio::sync::Semaphore::new(pool_size.max(1)),
            circuit,
            context_reads: ArcSwap::from_pointee(ContextReads {
                any: true,
                ..ContextReads::default()
            }),
            fingerprint,
        })
    }

    pub fn context_reads(&self) -> std::sync::Arc<ContextReads> {
        self.context_reads.load_full()
    }

    pub async fn decide(&self, request: &Request) -> Result<Answer, CalloutError> {
        // The slot first: a trial call the circuit let through must report back, and waiting
        // for a slot is not the service's failure.
        let Ok(Ok(_slot)) = tokio::time::timeout(self.timeout, self.in_flight.acquire()).await
        else {
            return Err(CalloutError::Timeout);
        };
        if !self.circuit.allow() {
            return Err(CalloutError::CircuitOpen);
        }
        let outcome = self.call(request).await;
        match &outcome {
            Ok(_) => self.circuit.succeeded(),
            Err(_) => self.circuit.failed(),
        }
        outcome
    }

    async fn call(&self, request: &Request) -> Result<Answer, CalloutError> {
        let body = serde_json::to_vec(request).map_err(|e| CalloutError::Answer(e.to_string()))?;
        let send = || {
            self.client
                .post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
        };
        let response = match send().await {
            Err(e) if e.is_connect() => send().await,
            other => other,
        }
        .map_err(|e| {
            if e.is_timeout() {
                CalloutError::Timeout
            } else {
                CalloutError::Unreachable(e.to_string())
            }
        })?;
        if !response.status().is_success() {
            return Err(CalloutError::Answer(format!(
                "status {}",
                response.status()
            )));
        }
        let bytes = read_capped(response).await?;
        let wire: Wire =
            serde_json::from_slice(&bytes).map_err(|e| CalloutError::Answer(e.to_string()))?;
        if let Some(reads) = wire.context_reads {
            if **self.context_reads.load() != reads {
                self.context_reads.store(std::sync::Arc::new(reads));
            }
        }
        Ok(Answer {
            allow: wire.allow,
            decision_id: wire.decision_id.into(),
            reason: wire.reason.into(),
            policy: wire.policy_id.map(Into::into),
            rule: wire.rule.map(Into::into),
            set_version: wire.policy_set_version.map(Into::into),
        })
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, CalloutError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            CalloutError::Timeout
        } else {
            CalloutError::Unreachable(e.to_string())
        }
    })? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CalloutError::Answer("answer too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
