//! `routes`: matchers (hosts, path, methods), the pool each route sends to, and its rewrites,
//! compiled into the [`RouteTable`] the proxy looks requests up in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderValue, Method};

use super::auth::Trust;
use super::key_path::KeyPath;
use super::{Compiler, DefinedUpstreams, WrittenRoutes};
use crate::config::file::{AuthSpec, MatchSpec, RouteSpec};
use crate::metrics::RouteMetrics;
use crate::routing::{HostMatch, PathMatch, PathPatternError, Route, RouteTable};
use crate::upstream::Pool;

/// A route's `match` section, compiled.
struct Matcher {
    hosts: Vec<HostMatch>,
    path: PathMatch,
    methods: Vec<Method>,
}

impl Compiler {
    /// `defined` holds every upstream written, so a route naming a broken one is not reported twice.
    pub(super) fn routes(
        &mut self,
        specs: WrittenRoutes,
        pools: &BTreeMap<String, Arc<Pool>>,
        defined: &DefinedUpstreams,
        auth: &AuthSpec,
        trust: &Trust,
    ) -> RouteTable {
        let mut compiled = Vec::new();
        // Route names label metrics and log lines: they must be unique across all files.
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (order, (file, i, spec)) in specs.into_iter().enumerate() {
            let before = self.errors.len();
            let at = KeyPath::root("routes").index(i);
            self.check_route_name(&file, &at.field("name"), &spec.name, &mut names);
            let pool =
                self.route_pool(&file, &at.field("upstream"), &spec.upstream, pools, defined);
            let matcher = self.matcher(&file, &at.field("match"), &spec.matcher);
            self.check_rewrites(&file, &at, &spec);
            let policy = self.route_policy(&file, &at, &spec, auth, trust);
            if self.errors.len() > before {
                continue;
            }
            // Both are present when no problem was recorded; a pool that failed to build was
            // reported under `upstreams`.
            if let (Some(pool), Some(matcher)) = (pool, matcher) {
                compiled.push(Route {
                    metrics: RouteMetrics::new(&spec.name),
                    name: spec.name.as_str().into(),
                    hosts: matcher.hosts,
                    path: matcher.path,
                    methods: matcher.methods,
                    pool,
                    strip_prefix: spec.strip_prefix,
                    host_override: spec.host_override,
                    policy,
                    order,
                });
            }
        }
        RouteTable::new(compiled)
    }

    fn check_route_name(
        &mut self,
        file: &Path,
        at: &KeyPath,
        name: &str,
        names: &mut BTreeMap<String, PathBuf>,
    ) {
        if name.is_empty() {
            self.error(file, at, "must not be empty", None);
        } else if let Some(other) = names.insert(name.to_string(), file.to_path_buf()) {
            let msg = format!("route name {name:?} is already used in {}", other.display());
            self.error(file, at, msg, None);
        }
    }

    fn route_pool(
        &mut self,
        file: &Path,
        at: &KeyPath,
        upstream: &str,
        pools: &BTreeMap<String, Arc<Pool>>,
        defined: &DefinedUpstreams,
    ) -> Option<Arc<Pool>> {
        if !defined.contains_key(upstream) {
            let known: Vec<&str> = defined.keys().map(String::as_str).collect();
            let msg = format!("unknown upstream {upstream:?}");
            let hint = Some(format!("defined upstreams: {}", known.join(", ")));
            self.error(file, at, msg, hint);
        }
        pools.get(upstream).cloned()
    }

    /// `None` when the path pattern is unusable; host and method problems are recorded only.
    fn matcher(&mut self, file: &Path, at: &KeyPath, m: &MatchSpec) -> Option<Matcher> {
        let path = match (&m.path, &m.path_prefix) {
            (Some(_), Some(_)) => {
                let msg = "give either path or path_prefix, not both";
                self.error(file, at, msg, None);
                None
            }
            (Some(p), None) => {
                self.path_pattern(file, &at.field("path"), PathMatch::exact_or_template(p))
            }
            (None, Some(p)) => {
                self.path_pattern(file, &at.field("path_prefix"), PathMatch::prefix(p))
            }
            (None, None) => Some(PathMatch::Any),
        };
        let hosts = self.hosts(file, &at.field("hosts"), &m.hosts);
        let methods = self.methods(file, &at.field("methods"), &m.methods);
        Some(Matcher {
            hosts,
            path: path?,
            methods,
        })
    }

    fn path_pattern(
        &mut self,
        file: &Path,
        at: &KeyPath,
        parsed: Result<PathMatch, PathPatternError>,
    ) -> Option<PathMatch> {
        match parsed {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(file, at, e.to_string(), None);
                None
            }
        }
    }

    fn hosts(&mut self, file: &Path, at: &KeyPath, hosts: &[String]) -> Vec<HostMatch> {
        let mut matches = Vec::new();
        for (h, host) in hosts.iter().enumerate() {
            let valid = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'))
                && (!host.contains('*')
                    || (host.starts_with("*.") && host.matches('*').count() == 1));
            if valid {
                matches.push(HostMatch::parse(host));
            } else {
                let msg = format!("{host:?} is not a host name or *.suffix pattern");
                self.error(file, at.index(h), msg, Some("no port, no scheme".into()));
            }
        }
        matches
    }

    fn methods(&mut self, file: &Path, at: &KeyPath, methods: &[String]) -> Vec<Method> {
        let mut parsed = Vec::new();
        for (k, method) in methods.iter().enumerate() {
            match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                Ok(m) => parsed.push(m),
                Err(_) => {
                    let msg = format!("{method:?} is not an HTTP method");
                    self.error(file, at.index(k), msg, None);
                }
            }
        }
        parsed
    }

    /// `strip_prefix` and `host_override`: what the route changes before forwarding.
    fn check_rewrites(&mut self, file: &Path, at: &KeyPath, spec: &RouteSpec) {
        if let Some(prefix) = &spec.strip_prefix {
            if !prefix.starts_with('/') || prefix.len() < 2 {
                let msg = format!("{prefix:?} must start with '/' and not be '/' alone");
                self.error(file, at.field("strip_prefix"), msg, None);
            }
        }
        if let Some(host) = &spec.host_override {
            if host.is_empty() || HeaderValue::from_str(host).is_err() {
                let msg = format!("{host:?} is not a valid Host value");
                self.error(file, at.field("host_override"), msg, None);
            }
        }
    }
}
