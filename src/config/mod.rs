//! Configuration: YAML files in, one immutable [`Snapshot`] out.
//!
//! `file` holds what the user writes, `compile` the only bridge to what the proxy reads. Start-up,
//! `gatehouse validate` and every reload go through [`load`], so they agree on what is valid.

pub mod compile;
pub mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::assertion::AssertionSigner;
use crate::authz_callout::RemoteAuthz;
use crate::request_path::PathRules;
use crate::route_policy::decision_cache::DecisionCache;
use crate::route_policy::TrustedIssuer;
use crate::routing::RouteTable;
use crate::tls::CertStore;
use crate::upstream::Pool;
use file::{AccessLogFormat, AdminSpec, LimitsSpec, ListenerSpec, ServerSpec};

/// Configuration problems are the shared kit's: file, line, key path (`routes[3].upstream`), hint.
pub use gatehouse_service::{LocatedError, LocatedErrors};

/// Whether loading may write files: start-up and reload generate missing development
/// certificates, `gatehouse validate` only checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    Run,
    CheckOnly,
}

/// The running configuration as the proxy reads it. Never mutated; a reload builds a new one.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    /// SHA-256 over every file the snapshot was built from, certificates included.
    pub hash: String,
    pub loaded_at_unix: u64,
    /// Every file read, so the watcher knows what to watch.
    pub files: Vec<PathBuf>,
    pub server: ServerSpec,
    pub listeners: Vec<ListenerSpec>,
    pub admin: AdminSpec,
    pub access_log: AccessLogFormat,
    pub limits: LimitsSpec,
    /// `paths`: how request paths are normalised before routing.
    pub paths: PathRules,
    /// `embedded.identity`: the identity service's config, served from this process.
    pub embedded_identity: Option<PathBuf>,
    pub embedded_authz: Option<PathBuf>,
    pub routes: RouteTable,
    pub pools: BTreeMap<String, Arc<Pool>>,
    pub certs: CertStore,
    /// `auth.issuers`: the issuers routes may trust, with their key sources.
    pub issuers: BTreeMap<String, Arc<TrustedIssuer>>,
    /// Authorization decisions, shared by every route (carried across reloads).
    pub decision_cache: Arc<DecisionCache>,
    /// `authz.remote`: the policy service routes with `authz.mode: remote` ask.
    pub remote_authz: Option<Arc<RemoteAuthz>>,
    /// `auth.assertion`, compiled (start-up only: the signer keeps the settings it opened with).
    pub assertion: AssertionSettings,
    /// Signs `X-Gatehouse-Assertion`. Opened by the first `Run` load in which a route has
    /// `assertion:` and carried into every later snapshot, so that in a running gateway it is
    /// `Some` whenever a route's `policy.assertion_audience` is. `None` in `CheckOnly` loads.
    pub assertion_signer: Option<Arc<AssertionSigner>>,
    /// `rate_limiting`: where every route's limits keep their state.
    pub rate_limiter: Arc<crate::rate_limit::Limiter>,
    /// `trusted_proxies`: who may name the client in `X-Forwarded-For`.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// `auth.assertion` with `key_dir` resolved against the main file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSettings {
    pub key_dir: PathBuf,
    pub issuer: String,
    pub ttl: Duration,
}

/// What `/config` shows: identity and shape of the running snapshot, never file contents.
#[derive(Debug, Serialize)]
pub struct SnapshotSummary<'a> {
    pub version: u64,
    pub hash: &'a str,
    pub loaded_at_unix: u64,
    pub files: Vec<String>,
    pub listeners: Vec<&'a str>,
    pub routes: usize,
    pub upstreams: Vec<&'a str>,
}

impl Snapshot {
    pub fn summary(&self) -> SnapshotSummary<'_> {
        SnapshotSummary {
            version: self.version,
            hash: &self.hash,
            loaded_at_unix: self.loaded_at_unix,
            files: self.files.iter().map(|f| f.display().to_string()).collect(),
            listeners: self.listeners.iter().map(|l| l.address.as_str()).collect(),
            routes: self.routes.len(),
            upstreams: self.pools.keys().map(String::as_str).collect(),
        }
    }

    /// `(pool name, healthy targets)` for every pool, as [`crate::metrics::publish_pool_health`]
    /// takes them.
    pub fn pool_health(&self) -> impl Iterator<Item = (&str, usize)> {
        self.pools
            .iter()
            .map(|(name, pool)| (name.as_str(), pool.healthy_count()))
    }

    /// Issuers that have no key set yet: what `/readyz` waits for.
    pub fn issuers_without_keys(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter(|(_, i)| i.keys.keys().is_none())
            .map(|(name, _)| format!("auth.issuers.{name}: no key set yet"))
            .collect()
    }

    /// Revocation feeds that have not caught up once: `/readyz` waits for them too, so a fresh
    /// gateway does not serve while it cannot know which tokens are revoked.
    pub fn feeds_not_synced(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter(|(_, i)| i.revocations.as_ref().is_some_and(|r| !r.feed.synced()))
            .map(|(name, _)| format!("auth.issuers.{name}.revocations: first sync not complete"))
            .collect()
    }

    /// Starts the refreshers of key sources and the followers of revocation feeds that have none
    /// running (new ones; carried ones keep theirs, retuned to this snapshot's settings), and the
    /// shared rate limiter's connection.
    pub fn start_key_refresh(&self) {
        for issuer in self.issuers.values() {
            issuer.keys.start();
            if let Some(revocations) = &issuer.revocations {
                revocations.feed.start(revocations.tuning);
            }
        }
        self.rate_limiter.start();
    }

    /// Settings that only take effect on restart or upgrade.
    pub fn process_settings_differ(&self, other: &Snapshot) -> bool {
        self.server != other.server
            || self.listeners != other.listeners
            || self.admin != other.admin
            || self.embedded_identity != other.embedded_identity
            || self.embedded_authz != other.embedded_authz
            || self.assertion != other.assertion
    }
}

/// Reads, validates and compiles the configuration rooted at `path`.
///
/// `previous` lets unchanged pools carry over with their health state and connections.
pub fn load(
    path: &Path,
    previous: Option<&Snapshot>,
    mode: LoadMode,
) -> Result<Snapshot, LocatedErrors> {
    compile::Compiler::new(path, mode).compile(previous)
}
