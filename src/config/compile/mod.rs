//! From YAML files to a [`Snapshot`]: parse, validate every value, build the runtime objects.
//!
//! Problems are collected, not returned at the first one, so `gatehouse validate` can list them
//! all. Each carries the file and the key path it concerns. One file per config section:
//! [`process`] (server, listeners, limits, admin), [`certificates`], [`embedded`] services,
//! [`paths`] (normalisation), [`pools`] (upstreams), [`routes`] and [`assertion`] (the gateway's
//! signing key); this file reads the files and assembles the snapshot.

mod assertion;
mod auth;
mod authz;
mod certificates;
mod embedded;
mod key_path;
mod paths;
mod pools;
mod process;
mod rate_limits;
mod revocations;
mod routes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::file::{MainFile, RouteSpec, RoutesFile, UpstreamSpec};
use super::{LoadMode, LocatedError, LocatedErrors, Snapshot};
use crate::route_policy::identity_headers::IdentityNamespace;
use auth::Callouts;
use key_path::KeyPath;

/// Every upstream written in any file, by name, with the file that defines it.
type DefinedUpstreams = BTreeMap<String, (PathBuf, UpstreamSpec)>;

/// Every route written, in file order: its file, its index in that file's `routes`, its spec.
type WrittenRoutes = Vec<(PathBuf, usize, RouteSpec)>;

pub struct Compiler {
    main_path: PathBuf,
    base_dir: PathBuf,
    mode: LoadMode,
    errors: Vec<LocatedError>,
    hasher: Sha256,
    files: Vec<PathBuf>,
    /// `auth.identity_namespace`: what `hash_key: header:`, rate-limit keys and identity-header
    /// mappings are checked against.
    identity_namespace: IdentityNamespace,
    /// `rate_limiting`, compiled before the routes that use it.
    rate_limiting: Option<std::sync::Arc<rate_limits::RateLimiting>>,
}

impl Compiler {
    pub fn new(path: &Path, mode: LoadMode) -> Self {
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            main_path: path.to_path_buf(),
            base_dir,
            mode,
            errors: Vec::new(),
            hasher: Sha256::new(),
            files: Vec::new(),
            identity_namespace: IdentityNamespace::default(),
            rate_limiting: None,
        }
    }

    pub fn compile(mut self, previous: Option<&Snapshot>) -> Result<Snapshot, LocatedErrors> {
        let main_path = self.main_path.clone();
        let Some(main) = self.parse_file::<MainFile>(&main_path) else {
            return Err(LocatedErrors(self.errors));
        };
        let (upstreams, routes) = self.gather(&main);

        self.check_process_settings(&main);
        let embedded_identity = self.embedded_identity(&main.embedded);
        let embedded_authz = self.embedded_authz(&main.embedded);
        let certs = self.certificates(&main.tls.certificates, &main.listeners);
        self.identity_namespace = IdentityNamespace::new(&main.auth.identity_namespace);
        let (decision_cache, remote_authz) = self.authz_services(&main.authz, previous);
        let callouts = Callouts {
            remote: remote_authz.is_some(),
            embedded: embedded_authz.is_some(),
        };
        let trust = self.trust(&main.auth, previous, callouts);
        let trusted_proxies = self.trusted_proxies(&main.trusted_proxies);
        let rate_limiting = std::sync::Arc::new(self.rate_limiting(&main, previous));
        self.rate_limiting = Some(rate_limiting.clone());
        let pools = self.pools(&upstreams, previous);
        let assertion = self.assertion_settings(&main);
        let assertion_needed = routes.iter().any(|(_, _, r)| r.assertion.is_some());
        let routes = self.routes(routes, &pools, &upstreams, &main.auth, &trust);

        if !self.errors.is_empty() {
            return Err(LocatedErrors(self.errors));
        }
        // Last, once the rest is valid: it may generate and write the key.
        let assertion_signer = self.assertion_signer(&assertion, assertion_needed, previous);
        if !self.errors.is_empty() {
            return Err(LocatedErrors(self.errors));
        }
        Ok(Snapshot {
            version: previous.map_or(1, |p| p.version + 1),
            hash: hex::encode(self.hasher.finalize()),
            loaded_at_unix: crate::clock::unix_now(),
            files: self.files,
            server: main.server,
            listeners: main.listeners,
            admin: main.admin,
            access_log: main.access_log.format,
            limits: main.limits,
            paths: paths::rules(&main.paths),
            embedded_identity,
            embedded_authz,
            routes,
            pools,
            certs,
            issuers: trust.issuers,
            decision_cache,
            remote_authz,
            assertion,
            assertion_signer,
            rate_limiter: rate_limiting.limiter.clone(),
            trusted_proxies,
        })
    }

    /// Gathers routes and pools from the main file and its includes, keeping where each came from.
    fn gather(&mut self, main: &MainFile) -> (DefinedUpstreams, WrittenRoutes) {
        let main_path = self.main_path.clone();
        let mut upstreams = DefinedUpstreams::new();
        let mut routes = WrittenRoutes::new();
        self.collect(
            &main_path,
            main.upstreams.clone(),
            main.routes.clone(),
            &mut upstreams,
            &mut routes,
        );
        for (i, include) in main.include.iter().enumerate() {
            let path = self.resolve(include);
            if !path.exists() {
                let message = format!("{} does not exist", path.display());
                self.error(&main_path, KeyPath::root("include").index(i), message, None);
                continue;
            }
            if let Some(file) = self.parse_file::<RoutesFile>(&path) {
                self.collect(
                    &path,
                    file.upstreams,
                    file.routes,
                    &mut upstreams,
                    &mut routes,
                );
            }
        }
        (upstreams, routes)
    }

    fn collect(
        &mut self,
        file: &Path,
        file_upstreams: BTreeMap<String, UpstreamSpec>,
        file_routes: Vec<RouteSpec>,
        upstreams: &mut DefinedUpstreams,
        routes: &mut WrittenRoutes,
    ) {
        for (name, spec) in file_upstreams {
            if let Some((other, _)) = upstreams.get(&name) {
                let msg = format!("upstream {name:?} is also defined in {}", other.display());
                self.error(file, KeyPath::root("upstreams").field(&name), msg, None);
                continue;
            }
            upstreams.insert(name, (file.to_path_buf(), spec));
        }
        for (i, route) in file_routes.into_iter().enumerate() {
            routes.push((file.to_path_buf(), i, route));
        }
    }

    /// Records one problem; `key` is empty for a problem of the whole file.
    fn error(
        &mut self,
        file: &Path,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut error = LocatedError::new(file, key, message);
        error.hint = hint;
        self.errors.push(error);
    }

    /// Paths in the config are relative to the main file's directory.
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Reads a file, folds its bytes into the snapshot hash and remembers it for the watcher.
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        self.hasher.update(path.as_os_str().as_encoded_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(&bytes);
        self.files.push(path.to_path_buf());
        Ok(bytes)
    }

    fn parse_file<T: DeserializeOwned>(&mut self, path: &Path) -> Option<T> {
        let bytes = match self.read(path) {
            Ok(b) => b,
            Err(e) => {
                self.error(path, "", format!("cannot read: {e}"), None);
                return None;
            }
        };
        // serde_yaml's message already names the key path and the line and column.
        match serde_yaml::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, "", e.to_string(), None);
                None
            }
        }
    }
}
