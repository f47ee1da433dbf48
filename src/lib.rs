//! Gatehouse: an edge gateway on Pingora.
//!
//! The request path lives in [`proxy`]; what it reads comes from one immutable
//! [`config::Snapshot`] that [`reload`] replaces as a whole.

pub mod access_log;
pub mod admin;
pub mod assertion;
pub mod authz_callout;
pub mod capped_body;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod echo;
pub mod jwks;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod reload;
pub mod request_path;
pub mod revocations;
pub mod route_policy;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;
