//! gatehouse-identity: the token issuer (an OpenID Connect provider) that the gateway trusts.
//!
//! [`Issuer`] holds the state and answers requests as plain functions of a buffered
//! [`request::Request`]; [`server`] carries it over Pingora, stand-alone or inside the gateway.

mod admin;
pub mod audit;
mod client_auth;
mod clock;
pub mod config;
mod endpoints;
pub mod grants;
pub mod hash_gate;
pub mod issuer;
pub mod keys;
pub mod lockout;
mod login;
pub mod metrics;
mod pages;
pub mod password;
pub mod reply;
pub mod request;
pub mod server;
pub mod state;
pub mod tokens;

pub use issuer::Issuer;

/// What this service is, for `--version` output and logs.
pub const SERVICE: &str = "gatehouse-identity";
