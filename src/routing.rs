//! The compiled route table and the one rule that picks a route for a request.
//!
//! Most specific wins, compared field by field in this order:
//! 1. host: an exact name beats a `*.suffix` wildcard (a longer suffix beats a shorter one),
//!    which beats a route with no `hosts`;
//! 2. path: an exact path beats a template (`/documents/{id}`; more literal segments first, then
//!    more segments), which beats a prefix (longer first), which beats a route with no path;
//! 3. methods: a route that lists methods beats one that accepts any;
//! 4. otherwise the route written first wins.
//!
//! A lookup scores every route that matches and keeps the best; route tables are small, and a
//! linear scan keeps the rule obvious.

use std::cmp::Reverse;
use std::sync::Arc;

use http::Method;

use crate::metrics::RouteMetrics;
use crate::route_policy::RoutePolicy;
use crate::upstream::Pool;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Capture(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> HostMatch {
        let lower = pattern.to_ascii_lowercase();
        match lower.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_string()),
            None => HostMatch::Exact(lower),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Any => (0, 0),
            HostMatch::Suffix(s) => (1, s.len()),
            HostMatch::Exact(_) => (2, 0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    Exact(String),
    Template(Vec<Segment>),
    Prefix(String),
}

/// Why a path pattern was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathPatternError {
    #[error("must start with '/'")]
    NotAbsolute,
    #[error("segment {0:?} mixes text and a {{capture}}; a capture must be a whole segment")]
    PartialCapture(String),
    #[error("capture name {0:?} must be letters, digits or '_'")]
    BadCaptureName(String),
    #[error("capture {0:?} appears twice")]
    DuplicateCapture(String),
}

impl PathMatch {
    pub fn exact_or_template(pattern: &str) -> Result<PathMatch, PathPatternError> {
        if !pattern.starts_with('/') {
            return Err(PathPatternError::NotAbsolute);
        }
        if !pattern.contains(['{', '}']) {
            return Ok(PathMatch::Exact(pattern.to_string()));
        }
        let mut segments = Vec::new();
        for raw in pattern[1..].split('/') {
            let is_capture = raw.starts_with('{') && raw.ends_with('}') && raw.len() >= 2;
            if is_capture {
                let name = &raw[1..raw.len() - 1];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(PathPatternError::BadCaptureName(name.to_string()));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Capture(n) if n == name))
                {
                    return Err(PathPatternError::DuplicateCapture(name.to_string()));
                }
                segments.push(Segment::Capture(name.to_string()));
            } else if raw.contains(['{', '}']) {
                return Err(PathPatternError::PartialCapture(raw.to_string()));
            } else {
                segments.push(Segment::Literal(raw.to_string()));
            }
        }
        Ok(PathMatch::Template(segments))
    }

    pub fn prefix(prefix: &str) -> Result<PathMatch, PathPatternError> {
        if !prefix.starts_with('/') {
            return Err(PathPatternError::NotAbsolute);
        }
        Ok(PathMatch::Prefix(prefix.to_string()))
    }

    /// Fills `captures` for templates; returns whether the path matched.
    fn matches(&self, path: &str, captures: &mut Vec<(Arc<str>, String)>) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Template(segments) => {
                captures.clear();
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for segment in segments {
                    let Some(part) = parts.next() else {
                        return false;
                    };
                    match segment {
                        Segment::Literal(l) if l == part => {}
                        Segment::Capture(name) if !part.is_empty() => {
                            captures.push((Arc::from(name.as_str()), part.to_string()))
                        }
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize, usize) {
        match self {
            PathMatch::Any => (0, 0, 0),
            PathMatch::Prefix(p) => (1, p.len(), 0),
            PathMatch::Template(segments) => {
                let literals = segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count();
                (2, literals, segments.len())
            }
            PathMatch::Exact(_) => (3, 0, 0),
        }
    }
}

/// A route as the proxy reads it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    /// Empty = any method.
    pub methods: Vec<Method>,
    pub pool: Arc<Pool>,
    pub strip_prefix: Option<String>,
    pub host_override: Option<String>,
    /// What the route demands between routing and the upstream.
    pub policy: RoutePolicy,
    /// Position in the files, for the final tie-break.
    pub order: usize,
    pub metrics: RouteMetrics,
}

impl Route {
    fn host_rank(&self, host: &str) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some(HostMatch::Any.rank());
        }
        self.hosts
            .iter()
            .filter(|h| h.matches(host))
            .map(HostMatch::rank)
            .max()
    }

    /// The path as the upstream should see it.
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.strip_prefix {
            Some(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some("") => "/".into(),
                Some(rest) if rest.starts_with('/') => rest.into(),
                Some(rest) => format!("/{rest}").into(),
                None => path.into(),
            },
            None => path.into(),
        }
    }
}

/// What a lookup found.
pub enum RouteLookup<'a> {
    Found {
        route: &'a Arc<Route>,
        captures: Vec<(Arc<str>, String)>,
    },
    /// Host and path matched some route, but none accepts this method.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `host` must be lower case without a port.
    pub fn lookup(&self, host: &str, path: &str, method: &Method) -> RouteLookup<'_> {
        type Key = ((u8, usize), (u8, usize, usize), bool, Reverse<usize>);
        let mut best: Option<(&Arc<Route>, Key)> = None;
        let mut captures = Vec::new();
        let mut best_captures = Vec::new();
        let mut allowed: Vec<Method> = Vec::new();
        for route in &self.routes {
            let Some(host_rank) = route.host_rank(host) else {
                continue;
            };
            if !route.path.matches(path, &mut captures) {
                continue;
            }
            if !route.methods.is_empty() && !route.methods.contains(method) {
                allowed.extend(route.methods.iter().cloned());
                continue;
            }
            let key = (
                host_rank,
                route.path.rank(),
                !route.methods.is_empty(),
                Reverse(route.order),
            );
            if best.as_ref().is_none_or(|(_, k)| key > *k) {
                best = Some((route, key));
                best_captures = std::mem::take(&mut captures);
            }
        }
        match best {
            Some((route, _)) => RouteLookup::Found {
                route,
                captures: best_captures,
            },
            None if !allowed.is_empty() => {
                allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allowed.dedup();
                RouteLookup::MethodNotAllowed { allowed }
            }
            None => RouteLookup::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RouteMetrics;
    use crate::route_policy::RoutePolicy;
    use crate::upstream::Pool;

    fn route(name: &str, hosts: &[&str], path: PathMatch, methods: &[&str], order: usize) -> Route {
        Route {
            name: name.into(),
            hosts: hosts.iter().map(|h| HostMatch::parse(h)).collect(),
            path,
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            pool: Pool::for_tests(),
            strip_prefix: None,
            host_override: None,
            policy: RoutePolicy::default(),
            order,
            metrics: RouteMetrics::new(name),
        }
    }

    fn found(table: &RouteTable, host: &str, path: &str, method: &str) -> Option<String> {
        match table.lookup(host, path, &method.parse().unwrap()) {
            RouteLookup::Found { route, .. } => Some(route.name.to_string()),
            _ => None,
        }
    }

    fn tpl(p: &str) -> PathMatch {
        PathMatch::exact_or_template(p).unwrap()
    }

    #[test]
    fn most_specific_path_wins_regardless_of_order() {
        let table = RouteTable::new(vec![
            route(
                "prefix",
                &[],
                PathMatch::prefix("/documents").unwrap(),
                &[],
                0,
            ),
            route("template", &[], tpl("/documents/{id}"), &[], 1),
            route("exact", &[], tpl("/documents/new"), &[], 2),
            route(
                "longer-prefix",
                &[],
                PathMatch::prefix("/documents/archive/").unwrap(),
                &[],
                3,
            ),
        ]);
        assert_eq!(
            found(&table, "x", "/documents/new", "GET").as_deref(),
            Some("exact")
        );
        assert_eq!(
            found(&table, "x", "/documents/42", "GET").as_deref(),
            Some("template")
        );
        assert_eq!(
            found(&table, "x", "/documents/42/x", "GET").as_deref(),
            Some("prefix")
        );
        assert_eq!(
            found(&table, "x", "/documents/archive/1", "GET").as_deref(),
            Some("longer-prefix")
        );
        assert_eq!(found(&table, "x", "/other", "GET"), None);
    }

    #[test]
    fn template_captures_and_literal_count() {
        let table = RouteTable::new(vec![
            route("two-captures", &[], tpl("/{kind}/{id}"), &[], 0),
            route("one-literal", &[], tpl("/documents/{id}"), &[], 1),
        ]);
        match table.lookup("h", "/documents/7", &Method::GET) {
            RouteLookup::Found { route, captures } => {
                assert_eq!(&*route.name, "one-literal");
                assert_eq!(captures, vec![(Arc::from("id"), "7".to_string())]);
            }
            _ => panic!("no match"),
        }
        assert_eq!(
            found(&table, "h", "/documents/", "GET"),
            None,
            "empty capture"
        );
    }

    #[test]
    fn host_exact_beats_wildcard_beats_any() {
        let table = RouteTable::new(vec![
            route("any", &[], PathMatch::Any, &[], 0),
            route("wild", &["*.example.com"], PathMatch::Any, &[], 1),
            route("deep-wild", &["*.api.example.com"], PathMatch::Any, &[], 2),
            route("exact", &["www.example.com"], PathMatch::Any, &[], 3),
        ]);
        assert_eq!(
            found(&table, "www.example.com", "/", "GET").as_deref(),
            Some("exact")
        );
        assert_eq!(
            found(&table, "a.example.com", "/", "GET").as_deref(),
            Some("wild")
        );
        assert_eq!(
            found(&table, "v1.api.example.com", "/", "GET").as_deref(),
            Some("deep-wild")
        );
        assert_eq!(
            found(&table, "example.com", "/", "GET").as_deref(),
            Some("any")
        );
    }

    #[test]
    fn host_outranks_path_and_wildcard_host_in_mixed_route_is_ranked_correctly() {
        let table = RouteTable::new(vec![
            route(
                "mixed",
                &["exact.test", "*.wild.test"],
                PathMatch::Any,
                &[],
                0,
            ),
            route("wild-exact-path", &["*.wild.test"], tpl("/p"), &[], 1),
        ]);
        // Both match via the wildcard; the path then decides.
        assert_eq!(
            found(&table, "a.wild.test", "/p", "GET").as_deref(),
            Some("wild-exact-path")
        );
        assert_eq!(
            found(&table, "exact.test", "/p", "GET").as_deref(),
            Some("mixed")
        );
    }

    #[test]
    fn methods_filter_and_report_allowed() {
        let table = RouteTable::new(vec![
            route("read", &[], tpl("/d"), &["GET", "HEAD"], 0),
            route("write", &[], tpl("/d"), &["PUT"], 1),
        ]);
        assert_eq!(found(&table, "h", "/d", "PUT").as_deref(), Some("write"));
        match table.lookup("h", "/d", &Method::DELETE) {
            RouteLookup::MethodNotAllowed { allowed } => {
                assert_eq!(allowed, vec![Method::GET, Method::HEAD, Method::PUT])
            }
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!(
            PathMatch::exact_or_template("/a/x{id}"),
            Err(PathPatternError::PartialCapture("x{id}".into()))
        );
        assert_eq!(
            PathMatch::exact_or_template("/a/{id}/{id}"),
            Err(PathPatternError::DuplicateCapture("id".into()))
        );
        assert_eq!(
            PathMatch::exact_or_template("a"),
            Err(PathPatternError::NotAbsolute)
        );
        assert!(matches!(
            PathMatch::exact_or_template("/{a-b}"),
            Err(PathPatternError::BadCaptureName(_))
        ));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let mut r = route("r", &[], PathMatch::prefix("/api").unwrap(), &[], 0);
        r.strip_prefix = Some("/api".into());
        assert_eq!(r.upstream_path("/api/users?x=1"), "/users?x=1");
        assert_eq!(r.upstream_path("/api"), "/");
        assert_eq!(r.upstream_path("/apix"), "/x");
        assert_eq!(r.upstream_path("/other"), "/other");
    }
}
