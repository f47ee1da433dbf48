//! What the user writes: serde structs mirroring the YAML files, one to one.
//!
//! Nothing here is read on the request path. `compile` turns these into the runtime snapshot and is
//! the only place that judges whether a value makes sense; these types only reject unknown keys
//! and wrong shapes.

use serde::Deserialize;

mod rate_limiting;
pub use rate_limiting::{RateLimitBackend, RateLimitSpec, RateLimitingSpec, RedisSpec};

// Upstream settings are shaped by the module that runs them, which must not import config.
pub use crate::upstream::settings::{HealthCheckKind, HealthCheckSpec, TimeoutSpec};
use std::collections::BTreeMap;
use std::time::Duration;

/// `gatehouse.yaml`: process settings, listeners, certificates, and optionally routes and pools.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MainFile {
    #[serde(default)]
    pub server: ServerSpec,
    pub listeners: Vec<ListenerSpec>,
    #[serde(default)]
    pub admin: AdminSpec,
    #[serde(default)]
    pub access_log: AccessLogSpec,
    #[serde(default)]
    pub tls: TlsSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub embedded: EmbeddedSpec,
    #[serde(default)]
    pub auth: AuthSpec,
    /// Where routes' authorization callouts go, and the decision cache.
    #[serde(default)]
    pub authz: AuthzSpec,
    #[serde(default)]
    pub paths: PathsSpec,
    #[serde(default)]
    pub rate_limiting: RateLimitingSpec,
    /// CIDRs of our own proxies: only a peer in one of them may name the client in
    /// `X-Forwarded-For`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Further files holding `upstreams` and `routes`, relative to this file.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// Sibling services run inside the gateway process (start-up only). Production runs them as
/// their own processes and leaves this out.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSpec {
    /// The `gatehouse-identity` configuration to serve from this process.
    #[serde(default)]
    pub identity: Option<String>,
    /// The `gatehouse-authz` configuration to serve from this process.
    #[serde(default)]
    pub authz: Option<String>,
}

/// A file named in `include:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// Process-level settings. Read at start-up only: changing them needs a restart or an upgrade.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSpec {
    /// Worker threads per listener service.
    pub threads: usize,
    /// Lets idle threads of a service take work from busy ones. Off by default: on a small box
    /// a proxy ran faster without it (see ARCHITECTURE.md).
    pub work_stealing: bool,
    /// After SIGTERM (or an upgrade hand-over) listeners close at once; in-flight requests get
    /// this long to finish.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// After the grace period, how long stopping the runtimes may wait for work still running.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub upstream_keepalive_pool_size: usize,
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            threads: 1,
            work_stealing: false,
            grace_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            upgrade_sock: "/tmp/gatehouse_upgrade.sock".into(),
            pid_file: "/tmp/gatehouse.pid".into(),
            upstream_keepalive_pool_size: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    pub address: String,
    #[serde(default)]
    pub tls: bool,
    /// Answer every request with a 308 to `https://<host>:<port><path>`.
    #[serde(default)]
    pub redirect_https_port: Option<u16>,
    /// Accept cleartext HTTP/2 (prior knowledge) on a plain listener.
    #[serde(default)]
    pub h2c: bool,
    /// TLS listeners: let returning clients resume their sessions with tickets.
    #[serde(default = "yes")]
    pub session_tickets: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSpec {
    pub address: String,
}

impl Default for AdminSpec {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
    Off,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSpec {
    pub format: AccessLogFormat,
}

/// Request limits, applied before routing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// Total size of request header names and values; larger requests get 431.
    pub max_request_header_bytes: usize,
    /// Largest request body; a larger declared `Content-Length` gets 413 before any byte of the
    /// body is read, a larger streamed body 413 when it crosses the limit. No limit by default.
    pub max_request_body_bytes: Option<u64>,
    /// Time for a whole HTTP/1 request header, from the moment the connection is ready for a
    /// request (keep-alive idle time included); the connection is closed when it runs out.
    #[serde(with = "humantime_serde")]
    pub request_header_timeout: Duration,
    /// Longest wait for the next piece of a request body (an idle timeout: a large upload that
    /// keeps moving is not cut off).
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        let service = gatehouse_service::Timeouts::default();
        Self {
            max_request_header_bytes: gatehouse_service::buffered::MAX_HEADER_BYTES,
            max_request_body_bytes: None,
            request_header_timeout: service.header,
            request_body_timeout: service.body,
        }
    }
}

impl LimitsSpec {
    /// The same deadlines for the admin listener.
    pub fn timeouts(&self) -> gatehouse_service::Timeouts {
        gatehouse_service::Timeouts {
            header: self.request_header_timeout,
            body: self.request_body_timeout,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSpec {
    pub certificates: Vec<CertificateSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: String,
    pub key: String,
    /// Server names this certificate answers for (exact or `*.suffix`); default: its SAN DNS names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Development only: when both files are missing, write a self-signed pair for `names`.
    #[serde(default)]
    pub generate_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub targets: Vec<TargetSpec>,
    #[serde(default)]
    pub balance: BalanceSpec,
    /// For `consistent_hash`: `client_ip`, `claim:<name>` (a verified token claim) or
    /// `header:<name>` (not one in the identity namespace: a client can write it).
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default)]
    pub passive: PassiveSpec,
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    #[serde(default)]
    pub tls: Option<UpstreamTlsSpec>,
}

/// `"127.0.0.1:9001"` or `{address: "127.0.0.1:9001", weight: 3}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TargetSpec {
    Address(String),
    Weighted {
        address: String,
        #[serde(default = "one")]
        weight: usize,
    },
}

fn one() -> usize {
    1
}

impl TargetSpec {
    pub fn address(&self) -> &str {
        match self {
            TargetSpec::Address(a) | TargetSpec::Weighted { address: a, .. } => a,
        }
    }
    pub fn weight(&self) -> usize {
        match self {
            TargetSpec::Address(_) => 1,
            TargetSpec::Weighted { weight, .. } => *weight,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceSpec {
    #[default]
    RoundRobin,
    ConsistentHash,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveSpec {
    /// How long a target that refused a connection is skipped; `0s` turns passive ejection off.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for PassiveSpec {
    fn default() -> Self {
        Self {
            eject_for: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// Name sent as SNI and checked against the target's certificate. Required: Pingora skips
    /// verification when SNI is empty, and Gatehouse never ships that.
    pub sni: String,
    /// PEM bundle of CAs to trust instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub host_override: Option<String>,
    /// Token verification on this route; absent = `mode: none`.
    #[serde(default)]
    pub auth: Option<RouteAuthSpec>,
    /// Extra verified claims sent upstream: header name → claim name, beside the defaults
    /// (`X-User-ID` ← `sub`, `X-User-Roles` ← roles, `X-Jwt-Email` ← `email`).
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Remove `Authorization` before forwarding (the upstream then sees only verified headers).
    #[serde(default)]
    pub strip_authorization: bool,
    /// Send a gateway-signed assertion of the verified identity in `X-Gatehouse-Assertion`.
    #[serde(default)]
    pub assertion: Option<RouteAssertionSpec>,
    /// Ask the policy service whether this request is allowed.
    #[serde(default)]
    pub authz: Option<RouteAuthzSpec>,
    /// Absent: `rate_limiting.default`; `[]`: none.
    #[serde(default)]
    pub rate_limits: Option<Vec<RateLimitSpec>>,
}

/// `routes[].authz`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthzSpec {
    #[serde(default)]
    pub mode: AuthzMode,
    /// The action for every method; or give `actions`.
    #[serde(default)]
    pub action: Option<String>,
    /// Action by method; default `GET/HEAD → view, POST → create, PUT/PATCH → edit, DELETE → delete`.
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
    pub resource: AuthzResourceSpec,
    /// Claims copied into `principal.attributes`.
    #[serde(default)]
    pub principal_attributes: Vec<String>,
    /// Let the request through when the policy service fails (logged and counted each time).
    #[serde(default)]
    pub fail_open: bool,
    /// Status when the policy service fails and `fail_open` is off.
    #[serde(default = "default_failure_status")]
    pub failure_status: u16,
    /// Name the deciding policy and rule in the 403 body.
    #[serde(default)]
    pub expose_reason: bool,
}

fn default_failure_status() -> u16 {
    503
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthzMode {
    /// The `gatehouse-authz` library in this process (`embedded.authz`'s policies, hot-reloaded).
    #[default]
    Embedded,
    /// HTTP to a `gatehouse-authz` service (`authz.remote`).
    Remote,
    Off,
}

/// `routes[].authz.resource`. Values: `{capture}` (the path template's), `header:<name>`,
/// `query:<name>`, `claim:<name>`, or literal text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzResourceSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `authz`: the remote policy service and the decision cache.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzSpec {
    pub remote: Option<RemoteAuthzSpec>,
    pub cache: DecisionCacheSpec,
}

/// `authz.remote`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteAuthzSpec {
    /// Base URL of a `gatehouse-authz` service (`/authz/v1/authorize` is appended).
    pub url: String,
    /// Whole call, connection included.
    #[serde(default = "default_remote_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that open the circuit ...
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// ... for this long: calls fail at once, then one trial call decides.
    #[serde(default = "default_circuit_open_for", with = "humantime_serde")]
    pub circuit_open_for: Duration,
    /// Calls in flight at most, and idle keep-alive connections kept to the service.
    #[serde(default = "default_remote_pool")]
    pub pool_size: usize,
}

fn default_remote_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open_for() -> Duration {
    Duration::from_secs(5)
}
fn default_remote_pool() -> usize {
    32
}

/// `authz.cache`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheSpec {
    /// Decisions remembered; 0 turns the cache off.
    pub max_entries: usize,
    #[serde(with = "humantime_serde")]
    pub allow_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub deny_ttl: Duration,
}

impl Default for DecisionCacheSpec {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            allow_ttl: Duration::from_secs(10),
            deny_ttl: Duration::from_secs(2),
        }
    }
}

/// `routes[].auth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthSpec {
    pub mode: AuthMode,
    /// Names under `auth.issuers` whose tokens this route accepts; empty = every issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Every one of these scopes must be granted (403 otherwise).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// At least one of these roles must be held (403 otherwise).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Also accept the token from this cookie (after `Authorization: Bearer`).
    #[serde(default)]
    pub token_cookie: Option<String>,
    /// Also accept the token, bare, from this header (after `Authorization: Bearer`).
    #[serde(default)]
    pub token_header: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No valid token → 401.
    Required,
    /// No token → anonymous; a token that is present must be valid.
    Optional,
    /// Tokens are not looked at.
    #[default]
    None,
}

/// `routes[].assertion`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteAssertionSpec {
    /// `aud` of the assertion; default: the route's upstream name.
    #[serde(default)]
    pub audience: Option<String>,
}

/// `auth`: the token issuers the gateway trusts and how identity reaches upstreams.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSpec {
    /// Issuers by name (the names routes use in `auth.issuers`).
    pub issuers: BTreeMap<String, IssuerSpec>,
    /// Longer bearer tokens are refused (401) before any parsing.
    pub max_token_bytes: usize,
    /// Verified tokens remembered (each until its `exp`), so a busy client costs one signature
    /// check, not one per request. 0 turns the cache off.
    pub verified_token_cache: usize,
    /// Header-name prefixes (case-insensitive) that only the gateway may send upstream: every
    /// client-sent header starting with one is removed, on every route.
    pub identity_namespace: Vec<String>,
    /// The gateway's own signing key for `routes[].assertion` (start-up only).
    pub assertion: AssertionSpec,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            issuers: BTreeMap::new(),
            max_token_bytes: 8192,
            verified_token_cache: 10_000,
            identity_namespace: ["X-User-", "X-Jwt-", "X-Auth-", "X-Gatehouse-"]
                .map(String::from)
                .to_vec(),
            assertion: AssertionSpec::default(),
        }
    }
}

/// `auth.issuers.<name>`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Where the key set is; default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted (the key still pins its own).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Accepted `typ` header values (e.g. `at+jwt`, RFC 9068); empty = not checked.
    #[serde(default)]
    pub token_types: Vec<String>,
    /// Claim holding granted scopes (a space-separated string or an array).
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Claim holding roles (an array or a string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default)]
    pub refresh: RefreshSpec,
    /// PEM bundle of CAs to trust for an HTTPS issuer instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The issuer's revocation feed; absent = tokens are not checked for revocation.
    #[serde(default)]
    pub revocations: Option<RevocationFeedSpec>,
}

/// `auth.issuers.<name>.revocations`: the feed of revoked tokens and subjects the gateway
/// follows (issue #13). The secret itself is never written here: a file or an environment
/// variable holds it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevocationFeedSpec {
    /// `GET <url>?after=<cursor>` on the issuer's public listener.
    pub url: String,
    /// The gateway's client at the issuer (scope `revocations:read`).
    pub client_id: String,
    /// A file holding the client secret (relative to this file; surrounding whitespace trimmed).
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Time between polls once caught up (100ms..60s).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// One poll, body included.
    #[serde(default = "default_feed_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_feed_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_scope_claim() -> String {
    "scope".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}

/// `auth.issuers.<name>.refresh`: how the key set is kept fresh.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSpec {
    /// The JWKS is refetched after its `Cache-Control: max-age`, but never sooner than this ...
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// ... nor later than this (also the interval when the answer has no max-age).
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often (shared by every
    /// request that misses meanwhile).
    #[serde(with = "humantime_serde")]
    pub unknown_kid_cooldown: Duration,
    /// One fetch (discovery or JWKS) may take this long.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for RefreshSpec {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(900),
            unknown_kid_cooldown: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// `auth.assertion`: the gateway's signing key (start-up only).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionSpec {
    /// Where the key is generated and kept (created 0700; the key file 0600).
    pub key_dir: String,
    /// `iss` of the assertions.
    pub issuer: String,
    /// Lifetime of an assertion (never past the verified token's `exp`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for AssertionSpec {
    fn default() -> Self {
        Self {
            key_dir: "var/gateway/keys".into(),
            issuer: "gatehouse".into(),
            ttl: Duration::from_secs(60),
        }
    }
}

/// `paths`: how request paths are normalised before routing and forwarding.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsSpec {
    /// Merge `//` into `/`.
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` (an encoded `/` or `\`) in a path.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathsSpec {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400.
    #[default]
    Reject,
    /// Forward them encoded, unchanged.
    Keep,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact names or `*.suffix`; absent = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exact path, or a template with `{name}` segments.
    #[serde(default)]
    pub path: Option<String>,
    /// Any path that starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Absent = any method.
    #[serde(default)]
    pub methods: Vec<String>,
}
