//! What the issuer reads: the compiled configuration, built only by `compile`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_service::Timeouts;

use super::file::{AuditRotationFile, GrantType, LockoutFile, SessionFile, TokensFile};
use crate::keys::{KekSource, SigningAlg};
use crate::state::StateUrl;

/// Process settings: read at start-up; a reload that changes them only warns.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    pub issuer: String,
    pub listen: String,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub admin: String,
    pub state: StateUrl,
    /// Key files of an earlier version, imported into the store once (`keys.dir`).
    pub keys_dir: Option<PathBuf>,
    /// Where the key-encryption key comes from (`keys.encryption_key`, or its default).
    pub encryption_key: KekSource,
    pub algorithms: Vec<SigningAlg>,
    pub rotate_every: Option<Duration>,
    pub jwks_max_age: Duration,
    pub audit_log: String,
    pub audit_rotation: AuditRotationFile,
    /// argon2 checks running at once, and waiting for one (`limits`).
    pub hash_concurrency: usize,
    pub hash_queue: usize,
}

/// Everything a reload may change: who exists and what they may get.
#[derive(Debug)]
pub struct Settings {
    pub process: ProcessSettings,
    pub tokens: TokensFile,
    pub session: SessionFile,
    pub lockout: LockoutFile,
    pub max_body_bytes: usize,
    /// Read per request on the public listener, so a reload applies them; the admin listener
    /// takes the ones it started with.
    pub timeouts: Timeouts,
    pub users: HashMap<String, Arc<User>>,
    pub clients: HashMap<String, Arc<Client>>,
    /// Every client's `allowed_origins`: a preflight names no client, so CORS answers for the
    /// union (tokens stay bound to client authentication and PKCE whatever the origin).
    pub cors_origins: BTreeSet<String>,
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
    /// May introspect every client's tokens, not only its own.
    pub resource_server: bool,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
}
