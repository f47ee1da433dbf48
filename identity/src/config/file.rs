//! What the operator writes in `conf/identity.yaml`: serde types mirroring the YAML, unknown
//! keys rejected, defaults filled in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_service::Timeouts;
use serde::Deserialize;

use crate::keys::SigningAlg;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub issuer: String,
    pub listen: String,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    pub admin: String,
    /// Where grants, sessions, revocations, locks and keys are kept: `sqlite://PATH` (default:
    /// `state.db` beside `keys.dir`) or `postgres://…` for several instances.
    #[serde(default)]
    pub state: Option<String>,
    pub keys: KeysFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub lockout: LockoutFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default = "default_audit_log")]
    pub audit_log: String,
    /// When `audit_log` is a file: rotate it by size, as the decision log does.
    #[serde(default)]
    pub audit_rotation: AuditRotationFile,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Deadlines for a request's header and body on both listeners (slow clients).
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub users: Vec<UserFile>,
    #[serde(default)]
    pub clients: Vec<ClientFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Where an earlier version kept the keys as files: imported into the state store once,
    /// when the store holds none. Also places the default `state` database beside it.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The key-encryption key that seals the private keys in the state store.
    #[serde(default)]
    pub encryption_key: Option<EncryptionKeyFile>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlg>,
    #[serde(default, with = "humantime_serde")]
    pub rotate_every: Option<Duration>,
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
}

/// `keys.encryption_key`: exactly one of `file` (relative to the config directory) or `env`.
/// Either holds base64 of 32 random bytes: `head -c 32 /dev/urandom | base64`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKeyFile {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub id_token_ttl: Duration,
    #[serde(default = "default_refresh_ttl", with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    #[serde(default = "default_code_ttl", with = "humantime_serde")]
    pub authorization_code_ttl: Duration,
}

impl Default for TokensFile {
    fn default() -> Self {
        Self {
            access_token_ttl: default_access_ttl(),
            id_token_ttl: default_access_ttl(),
            refresh_token_ttl: default_refresh_ttl(),
            authorization_code_ttl: default_code_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "default_cookie")]
    pub cookie: String,
}

impl Default for SessionFile {
    fn default() -> Self {
        Self {
            ttl: default_session_ttl(),
            cookie: default_cookie(),
        }
    }
}

/// `audit.log` → `audit.log.1` → … → `.{keep_files}` once a file reaches `max_file_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditRotationFile {
    pub max_file_bytes: u64,
    pub keep_files: usize,
}

impl Default for AuditRotationFile {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * 1024 * 1024,
            keep_files: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutFile {
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_base_delay", with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
    /// Failures one client IP may spend, per kind of secret, before it is throttled; they come
    /// back one by one over `ip_window` (see `lockout.rs`).
    #[serde(default = "default_ip_max_failures")]
    pub ip_max_failures: u32,
    #[serde(default = "default_ip_window", with = "humantime_serde")]
    pub ip_window: Duration,
}

impl Default for LockoutFile {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            base_delay: default_base_delay(),
            max_delay: default_max_delay(),
            ip_max_failures: default_ip_max_failures(),
            ip_window: default_ip_window(),
        }
    }
}

/// Bounds on the work an unauthenticated request can cause. Absent values are filled in by
/// `compile` (they depend on the machine).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// argon2 checks (passwords, client secrets) running at once; default: the number of cores.
    #[serde(default)]
    pub hash_concurrency: Option<usize>,
    /// Checks that may wait for one of those; beyond, 503. Default: 4 × `hash_concurrency`.
    #[serde(default)]
    pub hash_queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub username: String,
    pub password_hash: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub id: String,
    /// Absent = a public client (browser or native app): PKCE S256 is then mandatory.
    #[serde(default)]
    pub secret_hash: Option<String>,
    pub grant_types: Vec<GrantType>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles carried by tokens a service gets for itself (client_credentials).
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub signing_alg: Option<SigningAlg>,
    /// Browser origins (`scheme://host[:port]`) whose scripts may call `/token`, `/userinfo`,
    /// `/jwks.json` and `/revoke` (CORS).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// May introspect tokens issued to any client (an API checking the tokens it receives);
    /// otherwise a client introspects only its own (the others answer `active: false`).
    #[serde(default)]
    pub resource_server: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    Password,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "authorization_code" => GrantType::AuthorizationCode,
            "refresh_token" => GrantType::RefreshToken,
            "client_credentials" => GrantType::ClientCredentials,
            "password" => GrantType::Password,
            _ => return None,
        })
    }
}

fn default_algorithms() -> Vec<SigningAlg> {
    vec![SigningAlg::RS256, SigningAlg::ES256]
}
fn default_jwks_max_age() -> Duration {
    Duration::from_secs(300)
}
fn default_access_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_refresh_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_code_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_cookie() -> String {
    "gatehouse_sso".into()
}
fn default_max_failures() -> u32 {
    5
}
fn default_base_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_ip_max_failures() -> u32 {
    100
}
fn default_ip_window() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_audit_log() -> String {
    "-".into()
}
fn default_max_body() -> usize {
    16 * 1024
}
