//! `conf/identity.yaml`: what the operator writes (serde structs, unknown keys rejected) and the
//! compiled [`Settings`] the issuer reads. `compile` is the only place configuration errors arise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    pub keys: KeysFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub lockout: LockoutFile,
    #[serde(default = "default_audit_log")]
    pub audit_log: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
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
    pub dir: PathBuf,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlg>,
    #[serde(default, with = "humantime_serde")]
    pub rotate_every: Option<Duration>,
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutFile {
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_base_delay", with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for LockoutFile {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            base_delay: default_base_delay(),
            max_delay: default_max_delay(),
        }
    }
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
fn default_audit_log() -> String {
    "-".into()
}
fn default_max_body() -> usize {
    16 * 1024
}

/// Claims the issuer sets itself; a user attribute may not shadow one of them.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "nonce",
    "azp",
    "acr",
    "amr",
    "at_hash",
    "sid",
    "roles",
    "email",
    "name",
    "typ",
    "cnf",
];

/// One problem in the configuration, with the key path that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Process settings: read at start-up; a reload that changes them only warns.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    pub issuer: String,
    pub listen: String,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub admin: String,
    pub keys_dir: PathBuf,
    pub algorithms: Vec<SigningAlg>,
    pub rotate_every: Option<Duration>,
    pub jwks_max_age: Duration,
    pub audit_log: String,
}

/// Everything a reload may change: who exists and what they may get.
#[derive(Debug)]
pub struct Settings {
    pub process: ProcessSettings,
    pub tokens: TokensFile,
    pub session: SessionFile,
    pub lockout: LockoutFile,
    pub max_body_bytes: usize,
    pub users: HashMap<String, Arc<User>>,
    pub clients: HashMap<String, Arc<Client>>,
    /// sha256 of the file: lets a reload tell "unchanged" from "applied".
    pub hash: String,
}

#[derive(Debug)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub secret_hash: Option<String>,
    pub grant_types: BTreeSet<GrantType>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: BTreeSet<String>,
    pub roles: Vec<String>,
    pub signing_alg: SigningAlg,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
}

/// Reads, parses and compiles `path`. Relative paths inside are relative to the file's directory.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let name = path.display().to_string();
    let one = |key: &str, message: String| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            key: key.into(),
            message,
        }])
    };
    let bytes = std::fs::read(path).map_err(|e| one("(file)", format!("cannot read: {e}")))?;
    let file: File = serde_yaml::from_slice(&bytes).map_err(|e| one("(yaml)", e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    compile(file, &name, base, hex_sha256(&bytes))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn compile(
    file: File,
    name: &str,
    base: &Path,
    hash: String,
) -> Result<Settings, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |key: String, message: String| {
        errors.push(ConfigError {
            file: name.to_string(),
            key,
            message,
        })
    };

    match url::Url::parse(&file.issuer) {
        Ok(u)
            if (u.scheme() == "https" || u.scheme() == "http")
                && u.query().is_none()
                && u.fragment().is_none() => {}
        _ => err(
            "issuer".into(),
            "must be an http(s) URL without query or fragment (OIDC Discovery §3)".into(),
        ),
    }
    for (key, addr) in [("listen", &file.listen), ("admin", &file.admin)] {
        if addr.parse::<SocketAddr>().is_err() {
            err(key.into(), format!("{addr:?} is not an ip:port address"));
        }
    }
    if file.keys.algorithms.is_empty() {
        err(
            "keys.algorithms".into(),
            "name at least one of RS256, ES256, EdDSA".into(),
        );
    }
    let mut seen_alg = BTreeSet::new();
    for alg in &file.keys.algorithms {
        if !seen_alg.insert(*alg) {
            err("keys.algorithms".into(), format!("{alg:?} is listed twice"));
        }
    }
    if file
        .keys
        .rotate_every
        .is_some_and(|d| d < Duration::from_secs(60))
    {
        err("keys.rotate_every".into(), "must be at least 1m".into());
    }
    if file.lockout.max_failures == 0 {
        err("lockout.max_failures".into(), "must be at least 1".into());
    }
    if file.max_body_bytes < 1024 {
        err("max_body_bytes".into(), "must be at least 1024".into());
    }
    if file.session.cookie.is_empty()
        || !file
            .session
            .cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        err(
            "session.cookie".into(),
            "must be letters, digits, '_' or '-'".into(),
        );
    }

    let mut users = HashMap::new();
    for (i, u) in file.users.into_iter().enumerate() {
        let key = format!("users[{i}]");
        if u.username.is_empty() {
            err(format!("{key}.username"), "must not be empty".into());
        }
        if let Err(e) = crate::password::check_hash(&u.password_hash) {
            err(format!("{key}.password_hash"), e);
        }
        for attr in u.attributes.keys() {
            if RESERVED_CLAIMS.contains(&attr.as_str()) {
                err(
                    format!("{key}.attributes.{attr}"),
                    "is a claim the issuer sets itself; choose another name".into(),
                );
            }
        }
        let user = User {
            username: u.username,
            password_hash: u.password_hash,
            email: u.email,
            name: u.name,
            roles: u.roles,
            attributes: u.attributes,
        };
        if users
            .insert(user.username.clone(), Arc::new(user))
            .is_some()
        {
            err(format!("{key}.username"), "is declared twice".into());
        }
    }

    let default_alg = file
        .keys
        .algorithms
        .first()
        .copied()
        .unwrap_or(SigningAlg::RS256);
    let mut clients = HashMap::new();
    for (i, c) in file.clients.into_iter().enumerate() {
        let key = format!("clients[{i}]");
        if c.id.is_empty() {
            err(format!("{key}.id"), "must not be empty".into());
        }
        if let Some(h) = &c.secret_hash {
            if let Err(e) = crate::password::check_hash(h) {
                err(format!("{key}.secret_hash"), e);
            }
        }
        let grants: BTreeSet<GrantType> = c.grant_types.iter().copied().collect();
        if grants.is_empty() {
            err(
                format!("{key}.grant_types"),
                "name at least one grant type".into(),
            );
        }
        if c.secret_hash.is_none() && grants.contains(&GrantType::ClientCredentials) {
            err(
                format!("{key}.grant_types"),
                "client_credentials needs a secret_hash: a public client cannot prove who it is"
                    .into(),
            );
        }
        if grants.contains(&GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
            err(
                format!("{key}.redirect_uris"),
                "authorization_code needs at least one redirect URI".into(),
            );
        }
        for (j, uri) in c
            .redirect_uris
            .iter()
            .chain(&c.post_logout_redirect_uris)
            .enumerate()
        {
            match url::Url::parse(uri) {
                Ok(u) if u.fragment().is_none() && matches!(u.scheme(), "http" | "https") => {}
                _ => err(
                    format!("{key}.redirect_uris[{j}]"),
                    format!("{uri:?} must be an absolute http(s) URL without fragment (RFC 6749 §3.1.2)"),
                ),
            }
        }
        if grants.contains(&GrantType::ClientCredentials) && c.audiences.is_empty() {
            err(
                format!("{key}.audiences"),
                "client_credentials needs at least one allowed audience".into(),
            );
        }
        let alg = c.signing_alg.unwrap_or(default_alg);
        if !file.keys.algorithms.contains(&alg) {
            err(
                format!("{key}.signing_alg"),
                format!("{alg:?} is not in keys.algorithms"),
            );
        }
        for s in &c.scopes {
            if s.is_empty() || s.contains(' ') || s.contains('"') || s.contains('\\') {
                err(
                    format!("{key}.scopes"),
                    format!("{s:?} is not a valid scope token (RFC 6749 §3.3)"),
                );
            }
        }
        let client = Client {
            id: c.id,
            secret_hash: c.secret_hash,
            grant_types: grants,
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            audiences: c.audiences,
            scopes: c.scopes.into_iter().collect(),
            roles: c.roles,
            signing_alg: alg,
        };
        if clients
            .insert(client.id.clone(), Arc::new(client))
            .is_some()
        {
            err(format!("{key}.id"), "is declared twice".into());
        }
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Settings {
        process: ProcessSettings {
            issuer: file.issuer.trim_end_matches('/').to_string(),
            listen: file.listen,
            tls: file.tls.map(|t| (base.join(t.cert), base.join(t.key))),
            admin: file.admin,
            keys_dir: base.join(file.keys.dir),
            algorithms: file.keys.algorithms,
            rotate_every: file.keys.rotate_every,
            jwks_max_age: file.keys.jwks_max_age,
            audit_log: if file.audit_log == "-" {
                file.audit_log
            } else {
                base.join(&file.audit_log).display().to_string()
            },
        },
        tokens: file.tokens,
        session: file.session,
        lockout: file.lockout,
        max_body_bytes: file.max_body_bytes,
        users,
        clients,
        hash,
    })
}
