//! gatehouse-authz: the policy decision service.
//!
//! [`PolicySet`] is the evaluator: policies loaded from a directory, compiled once, asked with
//! [`PolicySet::evaluate`]. [`Authorizer`] adds what a running service needs around it (hot
//! reload, metrics, the decision log), and is what the gateway links to decide in-process.
pub mod condition;
pub mod decision;
pub mod policy;
pub mod request;

pub use decision::{Decision, Explanation, Options};
pub use policy::{PolicyError, PolicyErrors, PolicySet};
pub use request::{
    BatchRequest, Check, InvalidRequest, Principal, Request, RequestContext, Resource,
};

/// What this service is, for `--version` output and the gateway's `/config`.
pub const SERVICE: &str = "gatehouse-authz";
