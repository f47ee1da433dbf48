//! Where a route's authorization question goes: the `gatehouse-authz` library in this process
//! (`embedded`) or a `gatehouse-authz` service over HTTP (`remote`). Both answer the same
//! [`Answer`], with the version of the policy set that decided and what its conditions read from
//! the context, so the caller can cache decisions safely.

pub mod circuit;
pub mod remote;

use std::sync::Arc;
use std::time::Instant;

use gatehouse_authz::policy::ContextReads;
use gatehouse_authz::{Authorizer, PolicySet, Request};

use crate::metrics;
pub use remote::RemoteAuthz;

/// A decision as the gateway uses it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub allow: bool,
    pub decision_id: Arc<str>,
    pub reason: Arc<str>,
    pub policy: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    /// The policy set's version, when known: a change flushes cached decisions.
    pub set_version: Option<Arc<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    #[error("the policy service did not answer in time")]
    Timeout,
    #[error("the policy service is unreachable: {0}")]
    Unreachable(String),
    #[error("the policy service's answer is unusable: {0}")]
    Answer(String),
    #[error("the policy service is failing (circuit open)")]
    CircuitOpen,
    #[error("no policy service is configured for this mode")]
    NotConfigured,
}

/// The current policy set as far as caching needs it.
pub enum PolicyView {
    Embedded(Arc<PolicySet>),
    Remote(Arc<ContextReads>),
}

impl PolicyView {
    pub fn context_reads(&self) -> &ContextReads {
        match self {
            PolicyView::Embedded(set) => &set.context_reads,
            PolicyView::Remote(reads) => reads,
        }
    }

    /// The set's version when known before deciding (embedded).
    pub fn version(&self) -> Option<&str> {
        match self {
            PolicyView::Embedded(set) => Some(set.version()),
            PolicyView::Remote(_) => None,
        }
    }
}

/// The policy decision point a request is sent to.
pub enum Decider<'a> {
    Embedded(&'a Authorizer),
    Remote(&'a RemoteAuthz),
}

impl Decider<'_> {
    /// What the current policy set's conditions read from the context (embedded: exact; remote:
    /// as of the latest answer).
    pub fn policy_view(&self) -> PolicyView {
        match self {
            Decider::Embedded(authorizer) => PolicyView::Embedded(authorizer.policies()),
            Decider::Remote(remote) => PolicyView::Remote(remote.context_reads()),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Decider::Embedded(_) => "embedded",
            Decider::Remote(_) => "remote",
        }
    }

    pub async fn decide(&self, request: &Request) -> Result<Answer, CalloutError> {
        let started = Instant::now();
        let answer = match self {
            Decider::Embedded(authorizer) => {
                // Read before deciding: a reload in between makes the cached entry's version
                // older than its decision, never newer, so it is flushed rather than kept.
                let version: Arc<str> = authorizer.policies().version().into();
                let d = authorizer.authorize(request);
                Ok(Answer {
                    allow: d.allow,
                    decision_id: d.decision_id.into(),
                    reason: d.reason.into(),
                    policy: d.policy_id,
                    rule: d.rule,
                    set_version: Some(version),
                })
            }
            Decider::Remote(remote) => remote.decide(request).await,
        };
        metrics::AUTHZ_CALLOUT_SECONDS
            .with_label_values(&[self.mode()])
            .observe(started.elapsed().as_secs_f64());
        answer
    }
}
