//! From YAML files to a [`Snapshot`]: parse, validate every value, build the runtime objects.
//!
//! Problems are collected, not returned at the first one, so `gatehouse validate` can list them
//! all. Each carries the file and the key path it concerns.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Method};
use pingora::utils::tls::WrappedX509;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::file::{
    BalanceSpec, CertificateSpec, EmbeddedSpec, HealthCheckKind, MainFile, RouteSpec, RoutesFile,
    UpstreamSpec,
};
use super::{LoadMode, LocatedError, LocatedErrors, Snapshot};
use crate::metrics::RouteMetrics;
use crate::routing::{HostMatch, PathMatch, Route, RouteTable};
use crate::tls::{self, CertError, CertStore};
use crate::upstream::{HashKey, Pool, PoolParts, UpstreamTls};

pub struct Compiler {
    main_path: PathBuf,
    base_dir: PathBuf,
    mode: LoadMode,
    errors: Vec<LocatedError>,
    hasher: Sha256,
    files: Vec<PathBuf>,
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
        }
    }

    pub fn compile(mut self, previous: Option<&Snapshot>) -> Result<Snapshot, LocatedErrors> {
        let main_path = self.main_path.clone();
        let Some(main) = self.parse_file::<MainFile>(&main_path) else {
            return Err(LocatedErrors(self.errors));
        };

        // Gather routes and pools from the main file and its includes, keeping where each came from.
        let mut upstreams: BTreeMap<String, (PathBuf, UpstreamSpec)> = BTreeMap::new();
        let mut routes: Vec<(PathBuf, usize, RouteSpec)> = Vec::new();
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
                self.error(
                    &main_path,
                    format!("include[{i}]"),
                    format!("{} does not exist", path.display()),
                    None,
                );
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

        self.check_process_settings(&main);
        let embedded_identity = self.embedded_identity(&main_path, &main.embedded);
        let embedded_authz = self.embedded_authz(&main_path, &main.embedded);
        let (certs, to_generate) = self.certificates(&main.tls.certificates);
        if certs.is_empty() && to_generate == 0 {
            for (i, l) in main.listeners.iter().enumerate() {
                if l.tls {
                    self.error(
                        &main_path,
                        format!("listeners[{i}].tls"),
                        "a TLS listener needs at least one certificate".into(),
                        Some("add one under tls.certificates".into()),
                    );
                }
            }
        }

        let pools = self.pools(&upstreams, previous);
        let routes = self.routes(routes, &pools, &upstreams);

        if !self.errors.is_empty() {
            return Err(LocatedErrors(self.errors));
        }
        Ok(Snapshot {
            version: previous.map_or(1, |p| p.version + 1),
            hash: hex::encode(self.hasher.finalize()),
            loaded_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            files: self.files,
            server: main.server,
            listeners: main.listeners,
            admin: main.admin,
            access_log: main.access_log.format,
            limits: main.limits,
            embedded_identity,
            embedded_authz,
            routes,
            pools,
            certs,
        })
    }

    /// Checks the embedded identity service's own file, so `validate` and reload report its
    /// problems too. It is not hashed or watched here: the identity service reloads it itself.
    fn embedded_identity(&mut self, main_path: &Path, spec: &EmbeddedSpec) -> Option<PathBuf> {
        let path = self.resolve(spec.identity.as_deref()?);
        if let Err(errors) = gatehouse_identity::config::load(&path) {
            for e in errors.0 {
                // An unreadable file is a problem of the key naming it; the rest are the file's own.
                let (file, key) = if e.key == "(file)" {
                    (main_path.to_path_buf(), "embedded.identity".to_string())
                } else {
                    (path.clone(), e.key)
                };
                self.error(&file, key, e.message, None);
            }
        }
        Some(path)
    }

    /// Checks the embedded authz service's file and its policy directory, for the same reason.
    fn embedded_authz(&mut self, main_path: &Path, spec: &EmbeddedSpec) -> Option<PathBuf> {
        let path = self.resolve(spec.authz.as_deref()?);
        match gatehouse_authz::config::load(&path) {
            Err(errors) => {
                for message in errors.0 {
                    self.error(main_path, "embedded.authz".into(), message, None);
                }
            }
            Ok(settings) => {
                if let Err(errors) = gatehouse_authz::policy::load(&settings.policies) {
                    for e in errors.0 {
                        let message = match e.line {
                            Some(line) => format!("{} (line {line})", e.message),
                            None => e.message,
                        };
                        self.error(&e.file, e.key, message, None);
                    }
                }
            }
        }
        Some(path)
    }

    fn error(&mut self, file: &Path, key: String, message: String, hint: Option<String>) {
        let mut error = LocatedError::new(file, key, message);
        error.hint = hint;
        self.errors.push(error);
    }

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
                self.error(path, String::new(), format!("cannot read: {e}"), None);
                return None;
            }
        };
        // serde_yaml's message already names the key path and the line and column.
        match serde_yaml::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, String::new(), e.to_string(), None);
                None
            }
        }
    }

    fn collect(
        &mut self,
        file: &Path,
        file_upstreams: BTreeMap<String, UpstreamSpec>,
        file_routes: Vec<RouteSpec>,
        upstreams: &mut BTreeMap<String, (PathBuf, UpstreamSpec)>,
        routes: &mut Vec<(PathBuf, usize, RouteSpec)>,
    ) {
        for (name, spec) in file_upstreams {
            if let Some((other, _)) = upstreams.get(&name) {
                let msg = format!("upstream {name:?} is also defined in {}", other.display());
                self.error(file, format!("upstreams.{name}"), msg, None);
                continue;
            }
            upstreams.insert(name, (file.to_path_buf(), spec));
        }
        for (i, route) in file_routes.into_iter().enumerate() {
            routes.push((file.to_path_buf(), i, route));
        }
    }

    fn check_process_settings(&mut self, main: &MainFile) {
        let file = self.main_path.clone();
        if main.server.threads == 0 {
            self.error(
                &file,
                "server.threads".into(),
                "must be at least 1".into(),
                None,
            );
        }
        if main.listeners.is_empty() {
            self.error(
                &file,
                "listeners".into(),
                "at least one listener is needed".into(),
                None,
            );
        }
        for (i, l) in main.listeners.iter().enumerate() {
            if l.address.parse::<SocketAddr>().is_err() {
                let msg = format!("{:?} is not an IP:port address", l.address);
                self.error(
                    &file,
                    format!("listeners[{i}].address"),
                    msg,
                    Some("e.g. 0.0.0.0:8080".into()),
                );
            }
            if l.tls && l.redirect_https_port.is_some() {
                let msg = "a TLS listener cannot redirect to HTTPS".into();
                self.error(
                    &file,
                    format!("listeners[{i}].redirect_https_port"),
                    msg,
                    None,
                );
            }
            if l.tls && l.h2c {
                let msg = "h2c is for plain listeners; TLS listeners negotiate h2 by ALPN".into();
                self.error(&file, format!("listeners[{i}].h2c"), msg, None);
            }
        }
        if main.limits.max_request_header_bytes < 1024 {
            let msg = "below 1024 bytes no browser request fits".into();
            self.error(&file, "limits.max_request_header_bytes".into(), msg, None);
        }
        if main.admin.address.parse::<SocketAddr>().is_err() {
            let msg = format!("{:?} is not an IP:port address", main.admin.address);
            self.error(&file, "admin.address".into(), msg, None);
        }
    }

    /// The loaded certificates, and how many development ones a `CheckOnly` load left to generate.
    fn certificates(&mut self, specs: &[CertificateSpec]) -> (CertStore, usize) {
        let file = self.main_path.clone();
        let mut loaded = Vec::new();
        let mut to_generate = 0;
        for (i, spec) in specs.iter().enumerate() {
            let cert_path = self.resolve(&spec.cert);
            let key_path = self.resolve(&spec.key);
            if spec.generate_if_missing && !cert_path.exists() && !key_path.exists() {
                if self.mode == LoadMode::CheckOnly {
                    to_generate += 1;
                    continue;
                }
                match tls::generate_self_signed(&cert_path, &key_path, &spec.names) {
                    Ok(()) => tracing::warn!(
                        cert = %cert_path.display(),
                        names = ?spec.names,
                        "generated a self-signed development certificate; do not use it in production"
                    ),
                    Err(e) => {
                        self.error(&file, format!("tls.certificates[{i}]"), e.to_string(), None);
                        continue;
                    }
                }
            }
            // Read both before judging either, so both are hashed and watched.
            let (cert_pem, key_pem) = (self.read(&cert_path), self.read(&key_path));
            let loaded_cert = match (cert_pem, key_pem) {
                (Ok(cert), Ok(key)) => {
                    tls::load_cert(&cert_path, &cert, &key_path, &key, &spec.names)
                }
                (Err(source), _) => Err(CertError::Read {
                    path: cert_path.display().to_string(),
                    source,
                }),
                (_, Err(source)) => Err(CertError::Read {
                    path: key_path.display().to_string(),
                    source,
                }),
            };
            match loaded_cert {
                Ok(cert) => loaded.push(cert),
                Err(e) => {
                    let hint = (!spec.generate_if_missing && !cert_path.exists()).then(|| {
                        "for development, `generate_if_missing: true` writes a self-signed pair"
                            .into()
                    });
                    self.error(&file, format!("tls.certificates[{i}]"), e.to_string(), hint);
                }
            }
        }
        (CertStore::new(loaded), to_generate)
    }

    fn pools(
        &mut self,
        upstreams: &BTreeMap<String, (PathBuf, UpstreamSpec)>,
        previous: Option<&Snapshot>,
    ) -> BTreeMap<String, Arc<Pool>> {
        let mut pools = BTreeMap::new();
        for (name, (file, spec)) in upstreams {
            let Some(parts) = self.pool_parts(name, file, spec) else {
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
                        self.error(file, format!("upstreams.{name}"), e, None);
                        continue;
                    }
                },
            };
            pools.insert(name.clone(), pool);
        }
        pools
    }

    fn pool_parts(&mut self, name: &str, file: &Path, spec: &UpstreamSpec) -> Option<PoolParts> {
        let before = self.errors.len();
        let at = |key: &str| format!("upstreams.{name}.{key}");
        if spec.targets.is_empty() {
            self.error(
                file,
                at("targets"),
                "at least one target is needed".into(),
                None,
            );
        }
        let mut targets = Vec::new();
        for (i, t) in spec.targets.iter().enumerate() {
            match t.address().to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => targets.push((addr, t.weight())),
                _ => {
                    let msg = format!("{:?} does not resolve to an address", t.address());
                    self.error(
                        file,
                        at(&format!("targets[{i}]")),
                        msg,
                        Some("use host:port".into()),
                    );
                }
            }
            if t.weight() == 0 {
                self.error(
                    file,
                    at(&format!("targets[{i}].weight")),
                    "must be at least 1".into(),
                    None,
                );
            }
        }
        let hash_key = match (spec.balance, spec.hash_key.as_deref()) {
            (BalanceSpec::RoundRobin, None) => None,
            (BalanceSpec::RoundRobin, Some(_)) => {
                let msg = "hash_key only applies to `balance: consistent_hash`".into();
                self.error(file, at("hash_key"), msg, None);
                None
            }
            (BalanceSpec::ConsistentHash, key) => {
                match parse_hash_key(key.unwrap_or("client_ip")) {
                    Ok(k) => Some(k),
                    Err(msg) => {
                        self.error(
                            file,
                            at("hash_key"),
                            msg,
                            Some("client_ip or header:<name>".into()),
                        );
                        None
                    }
                }
            }
        };
        if let Some(hc) = &spec.health_check {
            if hc.interval.is_zero() {
                self.error(
                    file,
                    at("health_check.interval"),
                    "must be above zero".into(),
                    None,
                );
            }
            if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                self.error(
                    file,
                    at("health_check"),
                    "thresholds must be at least 1".into(),
                    None,
                );
            }
            match (&hc.kind, &hc.path) {
                (HealthCheckKind::Tcp, Some(_)) => self.error(
                    file,
                    at("health_check.path"),
                    "only HTTP checks take a path".into(),
                    None,
                ),
                (HealthCheckKind::Http, Some(p))
                    if !p.starts_with('/') || p.parse::<http::Uri>().is_err() =>
                {
                    self.error(
                        file,
                        at("health_check.path"),
                        format!("{p:?} is not an absolute path"),
                        None,
                    )
                }
                _ => {}
            }
        }
        // Resolved addresses are part of the identity: a name that now resolves elsewhere makes a
        // new pool even when the file did not change.
        let mut fingerprint = format!("{spec:?} {targets:?}");
        let tls = match &spec.tls {
            None => None,
            Some(t) => {
                if t.sni.is_empty() {
                    let msg = "an upstream TLS name is required: it is what the certificate is verified against".into();
                    self.error(file, at("tls.sni"), msg, None);
                }
                let ca = match &t.ca_file {
                    None => None,
                    Some(ca) => {
                        let path = self.resolve(ca);
                        let certs = self.read(&path).map_err(|source| CertError::Read {
                            path: path.display().to_string(),
                            source,
                        });
                        if let Ok(bytes) = &certs {
                            fingerprint.push_str(&hex::encode(Sha256::digest(bytes)));
                        }
                        match certs.and_then(|bytes| tls::parse_pem_certs(&path, &bytes)) {
                            Ok(certs) => {
                                let wrapped: Vec<WrappedX509> = certs
                                    .into_iter()
                                    .map(|c| {
                                        WrappedX509::new(
                                            c.to_vec(),
                                            pingora::utils::tls::parse_x509,
                                        )
                                    })
                                    .collect();
                                Some(Arc::from(wrapped.into_boxed_slice()))
                            }
                            Err(e) => {
                                self.error(file, at("tls.ca_file"), e.to_string(), None);
                                None
                            }
                        }
                    }
                };
                Some(UpstreamTls {
                    sni: t.sni.clone(),
                    ca,
                })
            }
        };
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

    /// `defined` holds every upstream written, so a route naming a broken one is not reported twice.
    fn routes(
        &mut self,
        specs: Vec<(PathBuf, usize, RouteSpec)>,
        pools: &BTreeMap<String, Arc<Pool>>,
        defined: &BTreeMap<String, (PathBuf, UpstreamSpec)>,
    ) -> RouteTable {
        let mut compiled = Vec::new();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (order, (file, i, spec)) in specs.into_iter().enumerate() {
            let before = self.errors.len();
            let at = |key: &str| format!("routes[{i}].{key}");
            if spec.name.is_empty() {
                self.error(&file, at("name"), "must not be empty".into(), None);
            } else if let Some(other) = names.insert(spec.name.clone(), file.clone()) {
                let msg = format!(
                    "route name {:?} is already used in {}",
                    spec.name,
                    other.display()
                );
                self.error(&file, at("name"), msg, None);
            }
            let pool = pools.get(&spec.upstream).cloned();
            if !defined.contains_key(&spec.upstream) {
                let known: Vec<&str> = defined.keys().map(String::as_str).collect();
                let msg = format!("unknown upstream {:?}", spec.upstream);
                self.error(
                    &file,
                    at("upstream"),
                    msg,
                    Some(format!("defined upstreams: {}", known.join(", "))),
                );
            }
            let m = &spec.matcher;
            let path = match (&m.path, &m.path_prefix) {
                (Some(_), Some(_)) => {
                    self.error(
                        &file,
                        at("match"),
                        "give either path or path_prefix, not both".into(),
                        None,
                    );
                    None
                }
                (Some(p), None) => {
                    self.path_pattern(&file, at("match.path"), PathMatch::exact_or_template(p))
                }
                (None, Some(p)) => {
                    self.path_pattern(&file, at("match.path_prefix"), PathMatch::prefix(p))
                }
                (None, None) => Some(PathMatch::Any),
            };
            let mut hosts = Vec::new();
            for (h, host) in m.hosts.iter().enumerate() {
                let valid = !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'))
                    && (!host.contains('*')
                        || (host.starts_with("*.") && host.matches('*').count() == 1));
                if valid {
                    hosts.push(HostMatch::parse(host));
                } else {
                    let msg = format!("{host:?} is not a host name or *.suffix pattern");
                    self.error(
                        &file,
                        at(&format!("match.hosts[{h}]")),
                        msg,
                        Some("no port, no scheme".into()),
                    );
                }
            }
            let mut methods = Vec::new();
            for (k, method) in m.methods.iter().enumerate() {
                match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                    Ok(parsed) => methods.push(parsed),
                    Err(_) => {
                        let msg = format!("{method:?} is not an HTTP method");
                        self.error(&file, at(&format!("match.methods[{k}]")), msg, None);
                    }
                }
            }
            if let Some(prefix) = &spec.strip_prefix {
                if !prefix.starts_with('/') || prefix.len() < 2 {
                    let msg = format!("{prefix:?} must start with '/' and not be '/' alone");
                    self.error(&file, at("strip_prefix"), msg, None);
                }
            }
            if let Some(host) = &spec.host_override {
                if host.is_empty() || HeaderValue::from_str(host).is_err() {
                    self.error(
                        &file,
                        at("host_override"),
                        format!("{host:?} is not a valid Host value"),
                        None,
                    );
                }
            }
            if self.errors.len() > before {
                continue;
            }
            if let (Some(pool), Some(path)) = (pool, path) {
                compiled.push(Route {
                    metrics: RouteMetrics::new(&spec.name),
                    name: spec.name.as_str().into(),
                    hosts,
                    path,
                    methods,
                    pool,
                    strip_prefix: spec.strip_prefix,
                    host_override: spec.host_override,
                    order,
                });
            }
        }
        RouteTable::new(compiled)
    }

    fn path_pattern(
        &mut self,
        file: &Path,
        key: String,
        parsed: Result<PathMatch, crate::routing::PathPatternError>,
    ) -> Option<PathMatch> {
        match parsed {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(file, key, e.to_string(), None);
                None
            }
        }
    }
}

fn parse_hash_key(key: &str) -> Result<HashKey, String> {
    if key == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    match key.strip_prefix("header:") {
        Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("{name:?} is not a header name")),
        None => Err(format!("{key:?} is not a hash key")),
    }
}
