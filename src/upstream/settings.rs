//! What an operator writes for an upstream's health checks and timeouts. Kept here, beside the
//! code that runs them, so that `upstream` never imports `config` (which imports `upstream`);
//! `config::file` re-exports them in the shape of the YAML.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    Tcp,
    Http,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub kind: HealthCheckKind,
    /// HTTP checks: the path to GET; any 200 is healthy.
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP checks: the Host header (default: the upstream TLS SNI, or `localhost`).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "one")]
    pub healthy_threshold: usize,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_unhealthy_threshold() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSpec {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    #[serde(with = "humantime_serde")]
    pub write: Duration,
    /// How long an idle upstream connection stays in the keep-alive pool.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for TimeoutSpec {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

fn one() -> usize {
    1
}
