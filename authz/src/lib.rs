//! gatehouse-authz: the policy decision service.
//!
//! [`PolicySet`] is the evaluator: policies loaded from a directory, compiled once, asked with
//! [`PolicySet::evaluate`]. [`Authorizer`] adds what a running service needs around it (hot
//! reload, metrics, the decision log), and is what the gateway links to decide in-process; the
//! HTTP API ([`api`], [`server`]) is a thin layer over it.
pub mod admin;
pub mod api;
pub mod authorizer;
pub mod condition;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod metrics;
pub mod policy;
pub mod policy_test;
pub mod request;
pub mod server;
pub mod yaml;

pub use authorizer::Authorizer;
pub use decision::{Decision, Explanation, Options};
pub use gatehouse_service::{LocatedError, LocatedErrors};
pub use policy::PolicySet;
pub use request::{
    BatchRequest, Check, InvalidRequest, Principal, Request, RequestContext, Resource,
};

/// What this service is, for `--version` output and the gateway's `/config`.
pub const SERVICE: &str = "gatehouse-authz";
