//! `upstreams`: pools of targets with their balancing, health checks and upstream TLS. A pool
//! whose settings did not change is carried over from the previous snapshot, health state and
//! connections included.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use pingora::utils::tls::WrappedX509;
use sha2::{Digest, Sha256};

use super::key_path::KeyPath;
use super::{Compiler, DefinedUpstreams};
use crate::config::file::{
    BalanceSpec, HealthCheckKind, HealthCheckSpec, TargetSpec, UpstreamSpec, UpstreamTlsSpec,
};
use crate::config::Snapshot;
use crate::route_policy::identity_headers::IdentityNamespace;
use crate::tls::{self, CertError};
use crate::upstream::{HashKey, Pool, PoolParts, UpstreamTls};

/// A target's weight is how many slots it takes in the round-robin ring (and, times 160, in the
/// consistent-hash ring), so it is bounded.
const MAX_WEIGHT: usize = 1000;

impl Compiler {
    pub(super) fn pools(
        &mut self,
        upstreams: &DefinedUpstreams,
        previous: Option<&Snapshot>,
    ) -> BTreeMap<String, Arc<Pool>> {
        let mut pools = BTreeMap::new();
        for (name, (file, spec)) in upstreams {
            let at = KeyPath::root("upstreams").field(name);
            let Some(parts) = self.pool_parts(&at, name, file, spec) else {
                continue;
            };
            let reused = previous
                .and_then(|p| p.pools.get(name))
                .filter(|p| p.fingerprint == parts.fingerprint);
            let pool = match reused {
                Some(p) => p.clone(),
                None => match Pool::build(parts) {
                    Ok(p) => Arc::new(p),
                    Err(e) => {
                        self.error(file, at, e, None);
                        continue;
                    }
                },
            };
            pools.insert(name.clone(), pool);
        }
        pools
    }

    /// Everything a pool is built from, or `None` when a problem was recorded.
    fn pool_parts(
        &mut self,
        at: &KeyPath,
        name: &str,
        file: &Path,
        spec: &UpstreamSpec,
    ) -> Option<PoolParts> {
        let before = self.errors.len();
        let targets = self.targets(file, &at.field("targets"), &spec.targets);
        let hash_key = self.hash_key(file, &at.field("hash_key"), spec);
        if let Some(hc) = &spec.health_check {
            self.check_health_check(file, &at.field("health_check"), hc);
        }
        // Resolved addresses are part of the identity: a name that now resolves elsewhere makes a
        // new pool even when the file did not change.
        let mut fingerprint = format!("{spec:?} {targets:?}");
        let tls = spec
            .tls
            .as_ref()
            .map(|t| self.upstream_tls(file, &at.field("tls"), t, &mut fingerprint));
        if self.errors.len() > before {
            return None;
        }
        Some(PoolParts {
            name: name.to_string(),
            targets,
            hash_key,
            health_check: spec.health_check.clone(),
            eject_for: spec.passive.eject_for,
            timeouts: spec.timeouts.clone(),
            tls,
            fingerprint,
        })
    }

    /// Resolves every target to one address, with its weight.
    fn targets(
        &mut self,
        file: &Path,
        at: &KeyPath,
        specs: &[TargetSpec],
    ) -> Vec<(SocketAddr, usize)> {
        if specs.is_empty() {
            self.error(file, at, "at least one target is needed", None);
        }
        let mut targets = Vec::new();
        for (i, t) in specs.iter().enumerate() {
            match t.address().to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => targets.push((addr, t.weight())),
                _ => {
                    let msg = format!("{:?} does not resolve to an address", t.address());
                    self.error(file, at.index(i), msg, Some("use host:port".into()));
                }
            }
            if !(1..=MAX_WEIGHT).contains(&t.weight()) {
                self.error(
                    file,
                    at.index(i).field("weight"),
                    format!("must be from 1 to {MAX_WEIGHT}"),
                    None,
                );
            }
        }
        targets
    }

    /// `at` names the `hash_key` field, which only consistent hashing reads.
    fn hash_key(&mut self, file: &Path, at: &KeyPath, spec: &UpstreamSpec) -> Option<HashKey> {
        match (spec.balance, spec.hash_key.as_deref()) {
            (BalanceSpec::RoundRobin, None) => None,
            (BalanceSpec::RoundRobin, Some(_)) => {
                let msg = "hash_key only applies to `balance: consistent_hash`";
                self.error(file, at, msg, None);
                None
            }
            (BalanceSpec::ConsistentHash, key) => {
                match parse_hash_key(key.unwrap_or("client_ip"), &self.identity_namespace) {
                    Ok(k) => Some(k),
                    Err(msg) => {
                        let hint = Some("client_ip, claim:<name> or header:<name>".into());
                        self.error(file, at, msg, hint);
                        None
                    }
                }
            }
        }
    }

    fn check_health_check(&mut self, file: &Path, at: &KeyPath, hc: &HealthCheckSpec) {
        if hc.interval.is_zero() {
            self.error(file, at.field("interval"), "must be above zero", None);
        }
        if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
            self.error(file, at, "thresholds must be at least 1", None);
        }
        match (&hc.kind, &hc.path) {
            (HealthCheckKind::Tcp, Some(_)) => {
                self.error(file, at.field("path"), "only HTTP checks take a path", None)
            }
            (HealthCheckKind::Http, Some(p))
                if !p.starts_with('/') || p.parse::<http::Uri>().is_err() =>
            {
                let msg = format!("{p:?} is not an absolute path");
                self.error(file, at.field("path"), msg, None)
            }
            _ => {}
        }
    }

    /// Upstream TLS settings; a private CA bundle's contents join the pool's `fingerprint`, so
    /// replacing the file rebuilds the pool.
    fn upstream_tls(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &UpstreamTlsSpec,
        fingerprint: &mut String,
    ) -> UpstreamTls {
        if spec.sni.is_empty() {
            let msg =
                "an upstream TLS name is required: it is what the certificate is verified against";
            self.error(file, at.field("sni"), msg, None);
        }
        let ca = spec
            .ca_file
            .as_deref()
            .and_then(|ca| self.ca_bundle(file, &at.field("ca_file"), ca, fingerprint));
        UpstreamTls {
            sni: spec.sni.clone(),
            ca,
        }
    }

    fn ca_bundle(
        &mut self,
        file: &Path,
        at: &KeyPath,
        ca_file: &str,
        fingerprint: &mut String,
    ) -> Option<Arc<[WrappedX509]>> {
        let path = self.resolve(ca_file);
        let bytes = self.read(&path).map_err(|source| CertError::Read {
            path: path.display().to_string(),
            source,
        });
        if let Ok(bytes) = &bytes {
            fingerprint.push_str(&hex::encode(Sha256::digest(bytes)));
        }
        match bytes.and_then(|bytes| tls::parse_pem_certs(&path, &bytes)) {
            Ok(certs) => {
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.to_vec(), pingora::utils::tls::parse_x509))
                    .collect();
                Some(Arc::from(wrapped.into_boxed_slice()))
            }
            Err(e) => {
                self.error(file, at, e.to_string(), None);
                None
            }
        }
    }
}

/// `namespace`: the identity-header prefixes. The gateway removes client-sent headers there, so
/// hashing on one would hash on nothing; `claim:` is the verified way to stick by identity.
fn parse_hash_key(key: &str, namespace: &IdentityNamespace) -> Result<HashKey, String> {
    if key == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    if let Some(claim) = key.strip_prefix("claim:") {
        let claim = claim.trim();
        if claim.is_empty() {
            return Err("claim: needs a claim name, e.g. claim:sub".into());
        }
        return Ok(HashKey::Claim(claim.into()));
    }
    match key.strip_prefix("header:") {
        Some(name) => {
            let name = name.trim();
            if namespace.contains(name) {
                return Err(format!(
                    "{name:?} is an identity header (auth.identity_namespace): hash on the verified claim instead, e.g. claim:sub"
                ));
            }
            HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("{name:?} is not a header name"))
        }
        None => Err(format!("{key:?} is not a hash key")),
    }
}
