//! Signing keys: generated on first start, persisted, rotated on a schedule or on command,
//! published as a JWKS (RFC 7517).
//!
//! A key lives through three states: `next` → `active` → `retired`. A rotation publishes a `next`
//! key per algorithm and signs nothing with it until the JWKS cache max-age has passed: a
//! verifier that fetched the JWKS just before the rotation may use its copy that long, and
//! would refuse a token whose `kid` it has never seen. Then the next key becomes `active` and
//! the one it replaces `retired`. A retired key stays in the JWKS for `retention` (the longest
//! token lifetime plus the JWKS cache max-age), so every token it signed verifies until it
//! expires; then it leaves the JWKS and its private half is deleted. An immediate rotation (for
//! a compromised key) skips the wait: a fresh key signs at once, and a waiting next key, which
//! signed nothing and was kept beside the others, is withdrawn.
//!
//! Where the keys are kept is a [`KeyStorage`]'s business: PKCS#8 PEM files (0600) in a 0700
//! directory with `keyring.json` (`files`: the gateway's assertion key), or rows of the identity
//! state store whose private halves are sealed with the key-encryption key (`stored`, `kek`:
//! the issuer, whose instances share the keys). Every change is computed on the set held in
//! memory, written, and only then published. The store's writes are a compare-and-set on a
//! version: when another instance changed the keys first, the ring reloads them and decides
//! again on what it finds, so a rotation that finds a next key waiting publishes none, and a
//! next key falls due once, on one instance. [`KeyRing::refresh`] picks up the others' changes.

mod files;
pub mod kek;
mod stored;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use kek::{Kek, KekError, KekSource};

use crate::state::{KeysWritten, Store, StoreError};

#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlg {
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA];

    pub fn jose(self) -> Algorithm {
        match self {
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::EdDSA => Algorithm::EdDSA,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }

    /// The algorithm [`SigningAlg::as_str`] names.
    pub fn parse(name: &str) -> Option<SigningAlg> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// How many times a change is decided again after another instance changed the keys first.
const ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("generating a {0:?} key failed")]
    Generate(SigningAlg),
    #[error("no active {0:?} key")]
    NoActiveKey(SigningAlg),
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("building the JWKS failed: {0}")]
    Jwks(String),
    /// The store did not answer: the keys held in memory stay as they are.
    #[error("signing keys: {0}")]
    Store(#[from] StoreError),
    /// The key-encryption key is missing, malformed or not the store's.
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("signing key {kid} in the state store: {message}")]
    Stored { kid: String, message: String },
    #[error("the signing keys kept changing under this instance ({ATTEMPTS} attempts); try again")]
    Conflict,
}

/// Where a key is in its life (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signs new tokens; one per algorithm.
    #[default]
    Active,
    /// Published so the tokens it signed verify; signs nothing.
    Retired,
}

impl KeyState {
    pub const ALL: [KeyState; 3] = [KeyState::Next, KeyState::Active, KeyState::Retired];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }

    /// The state [`KeyState::as_str`] names.
    pub fn parse(name: &str) -> Option<KeyState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One key's public record (`keyring.json` entry, or a `signing_keys` row without its sealed
/// private half).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    kid: String,
    alg: SigningAlg,
    created_at: u64,
    /// Absent from key rings written before next keys existed: their keys read as active, and
    /// loading turns those with a `retired_at` into retired ones.
    #[serde(default)]
    state: KeyState,
    /// When the key starts (a next key) or started (an active one) signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signs_from: Option<u64>,
    #[serde(default)]
    retired_at: Option<u64>,
}

pub struct SigningKey {
    record: KeyRecord,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: Jwk,
    /// The private half (PKCS#8 DER), for the storage to write; shared by the key's states.
    pkcs8: Arc<Zeroizing<Vec<u8>>>,
}

impl SigningKey {
    pub fn kid(&self) -> &str {
        &self.record.kid
    }
    pub fn alg(&self) -> SigningAlg {
        self.record.alg
    }
    pub fn state(&self) -> KeyState {
        self.record.state
    }
    pub fn created_at(&self) -> u64 {
        self.record.created_at
    }
    pub fn signs_from(&self) -> Option<u64> {
        self.record.signs_from
    }
    pub fn retired_at(&self) -> Option<u64> {
        self.record.retired_at
    }
}

/// What is published at one moment: every key still in the JWKS, and the JWKS body.
pub struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    pub jwks: Vec<u8>,
    /// The storage's version these keys were read or written at.
    version: u64,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.kid() == kid)
    }
    pub fn active(&self, alg: SigningAlg) -> Option<&Arc<SigningKey>> {
        self.in_state(alg, KeyState::Active)
    }
    pub fn next(&self, alg: SigningAlg) -> Option<&Arc<SigningKey>> {
        self.in_state(alg, KeyState::Next)
    }
    fn in_state(&self, alg: SigningAlg, state: KeyState) -> Option<&Arc<SigningKey>> {
        self.keys
            .iter()
            .find(|k| k.alg() == alg && k.state() == state)
    }
    pub fn count(&self, state: KeyState) -> usize {
        self.keys.iter().filter(|k| k.state() == state).count()
    }
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid().to_string()).collect()
    }
    /// Every published key, in the JWKS's order (oldest first).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.keys.iter()
    }
}

/// How a rotation replaces the signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationMode {
    /// Publish a next key now; it signs once `publish_for` (the JWKS cache max-age) has passed.
    Staged { publish_for: Duration },
    /// A fresh key signs at once: for a key that may be compromised.
    Immediate,
}

/// What a rotation did for one algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub alg: SigningAlg,
    pub kid: String,
    /// `Next` after a staged rotation, `Active` after an immediate one.
    pub state: KeyState,
    pub signs_from: u64,
    /// The key it replaces: signing until `signs_from` (staged), or retired now (immediate).
    pub replaces: Option<String>,
    /// False when a staged rotation found this next key already waiting and left it as it was
    /// (restarting its wait would only delay it); also when another instance published it a
    /// moment before.
    pub created: bool,
    /// A waiting next key an immediate rotation withdrew from the JWKS.
    pub withdrawn: Option<String>,
}

/// Outcome of a rotation, one change per algorithm.
pub type Rotation = Vec<KeyChange>;

/// A next key that started signing, and the key it retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub alg: SigningAlg,
    pub kid: String,
    pub retired: Option<String>,
}

/// Where a ring's keys are kept. `write` persists a whole change or nothing; `version` moves
/// with every write, whoever made it (a file-kept ring has one writer and stays at 0).
trait KeyStorage: Send + Sync {
    /// Where the keys are, for logs.
    fn location(&self) -> String;
    /// Every recorded key with its private half, and the version they were read at.
    fn load(&self) -> Result<(u64, Vec<SigningKey>), KeyError>;
    /// The version now; cheap, asked every second.
    fn version(&self) -> Result<u64, KeyError>;
    /// Replaces `before` (read or written at `version`) with `after`; `Conflict`, writing
    /// nothing, when the version moved meanwhile.
    fn write(
        &self,
        version: u64,
        before: &[Arc<SigningKey>],
        after: &[Arc<SigningKey>],
    ) -> Result<KeysWritten, KeyError>;
}

/// A change decided on the published set: the new key list (`None`: nothing to write) and
/// what to report.
type Decision<T> = (Option<Vec<Arc<SigningKey>>>, T);

pub struct KeyRing {
    storage: Box<dyn KeyStorage>,
    algorithms: Vec<SigningAlg>,
    current: ArcSwap<KeySet>,
    /// Serialises changes within the process: the scheduler and the admin command may race.
    /// (Other instances are kept out by the storage's compare-and-set.)
    changing: Mutex<()>,
}

impl KeyRing {
    /// Loads the keys kept as files in `dir`, creating the directory (0700) and any missing
    /// active key. The gateway's assertion signer keeps its key this way.
    pub fn open(dir: &Path, algorithms: &[SigningAlg], now: u64) -> Result<Self, KeyError> {
        Self::with_storage(Box::new(files::FileKeys::create(dir)?), algorithms, now)
    }

    /// Loads the keys kept in the identity state store, sealed with the key-encryption key from
    /// `kek`, and generates any missing active key. A wrong key-encryption key is refused
    /// ([`KekError::Mismatch`]). When the store holds no key yet and `legacy_dir` holds a key
    /// ring kept as files by an earlier version, its keys are imported first (same kids, so
    /// tokens in flight still verify); the files are left in place.
    pub fn open_in_store(
        store: Arc<Store>,
        kek: &KekSource,
        legacy_dir: Option<&Path>,
        algorithms: &[SigningAlg],
        now: u64,
    ) -> Result<Self, KeyError> {
        let storage = stored::StoredKeys::unlock(store, kek)?;
        if let Some(dir) = legacy_dir {
            storage.import_files(dir)?;
        }
        Self::with_storage(Box::new(storage), algorithms, now)
    }

    fn with_storage(
        storage: Box<dyn KeyStorage>,
        algorithms: &[SigningAlg],
        now: u64,
    ) -> Result<Self, KeyError> {
        let ring = Self {
            storage,
            algorithms: algorithms.to_vec(),
            current: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                jwks: Vec::new(),
                version: 0,
            }),
            changing: Mutex::new(()),
        };
        {
            let _guard = ring.lock();
            ring.reload()?;
            // An algorithm dropped from the config stops signing but stays published for a
            // while. A next key that fell due while the issuer was down takes over at the first
            // tick, where the switch is audited like any other.
            let generated = ring.change(|set| ring.settle(set, now, true))?;
            ring.log_generated(&generated);
        }
        Ok(ring)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Signs `claims` with the active key for `alg`; returns the compact JWS.
    pub fn sign<T: Serialize>(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: &T,
    ) -> Result<(String, String), KeyError> {
        let set = self.current();
        let key = set.active(alg).ok_or(KeyError::NoActiveKey(alg))?;
        let mut header = Header::new(alg.jose());
        header.typ = Some(typ.into());
        header.kid = Some(key.kid().to_string());
        let token = jsonwebtoken::encode(&header, claims, &key.encoding).map_err(KeyError::Sign)?;
        Ok((token, key.kid().to_string()))
    }

    /// Picks up changes another instance made: when the storage's version moved, reloads the
    /// keys (and gives an algorithm whose active key another instance retired a new one).
    /// Returns whether the published set changed. A store that does not answer leaves the keys
    /// held in memory as they are.
    pub fn refresh(&self, now: u64) -> Result<bool, KeyError> {
        if self.storage.version()? == self.current().version {
            return Ok(false);
        }
        let _guard = self.lock();
        self.reload()?;
        let generated = self.change(|set| self.settle(set, now, false))?;
        self.log_generated(&generated);
        Ok(true)
    }

    /// Rotates every algorithm's key (see [`RotationMode`]).
    pub fn rotate(&self, now: u64, mode: RotationMode) -> Result<Rotation, KeyError> {
        let _guard = self.lock();
        self.change(|old| {
            let mut keys = old.keys.clone();
            let mut rotation = Vec::new();
            for &alg in &self.algorithms {
                let replaces = old.active(alg).map(|k| k.kid().to_string());
                let waiting = old.next(alg);
                let (state, signs_from, withdrawn) = match (mode, waiting) {
                    (RotationMode::Staged { .. }, Some(next)) => {
                        rotation.push(KeyChange {
                            alg,
                            kid: next.kid().to_string(),
                            state: KeyState::Next,
                            signs_from: next.signs_from().unwrap_or(now),
                            replaces,
                            created: false,
                            withdrawn: None,
                        });
                        continue;
                    }
                    // `now` is truncated to the second, so a JWKS fetched just before this
                    // rotation may live almost a second past `now + max-age`: wait one more.
                    (RotationMode::Staged { publish_for }, None) => {
                        (KeyState::Next, now + publish_for.as_secs() + 1, None)
                    }
                    (RotationMode::Immediate, waiting) => {
                        keys.retain(|k| !(k.alg() == alg && k.state() == KeyState::Next));
                        for k in keys.iter_mut() {
                            if k.alg() == alg && k.state() == KeyState::Active {
                                *k = Arc::new(k.moved_to(KeyState::Retired, now));
                            }
                        }
                        let withdrawn = waiting.map(|k| k.kid().to_string());
                        (KeyState::Active, now, withdrawn)
                    }
                };
                let fresh = generate(alg, now, state, signs_from)?;
                rotation.push(KeyChange {
                    alg,
                    kid: fresh.kid().to_string(),
                    state,
                    signs_from,
                    replaces,
                    created: true,
                    withdrawn,
                });
                keys.push(Arc::new(fresh));
            }
            let changed = rotation.iter().any(|c| c.created);
            Ok((changed.then_some(keys), rotation))
        })
    }

    /// Next keys whose time has come start signing; the key each replaces is retired.
    pub fn activate_due(&self, now: u64) -> Result<Vec<Activation>, KeyError> {
        let _guard = self.lock();
        self.change(|old| {
            let due: Vec<Activation> = old
                .keys
                .iter()
                .filter(|k| k.state() == KeyState::Next && k.signs_from().is_none_or(|t| t <= now))
                .map(|k| Activation {
                    alg: k.alg(),
                    kid: k.kid().to_string(),
                    retired: old.active(k.alg()).map(|a| a.kid().to_string()),
                })
                .collect();
            if due.is_empty() {
                return Ok((None, due));
            }
            let keys = old
                .keys
                .iter()
                .map(|k| {
                    let switching = due.iter().any(|a| a.alg == k.alg());
                    match k.state() {
                        KeyState::Next if switching => Arc::new(k.moved_to(KeyState::Active, now)),
                        KeyState::Active if switching => {
                            Arc::new(k.moved_to(KeyState::Retired, now))
                        }
                        _ => k.clone(),
                    }
                })
                .collect();
            Ok((Some(keys), due))
        })
    }

    /// Whether the schedule calls for a rotation: the oldest active key was created `every`
    /// ago, and no next key is already waiting. Counting from creation, not activation, keeps
    /// the period at `every` from one published key to the next.
    pub fn rotation_due(&self, now: u64, every: Duration) -> bool {
        let set = self.current();
        if set.count(KeyState::Next) > 0 {
            return false;
        }
        set.keys
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .map(|k| k.created_at())
            .min()
            .is_some_and(|since| now >= since.saturating_add(every.as_secs()))
    }

    /// Drops retired keys older than `retention` from the JWKS and deletes their private halves.
    pub fn prune(&self, now: u64, retention: Duration) -> Result<Vec<String>, KeyError> {
        let _guard = self.lock();
        self.change(|old| {
            let expired = |k: &SigningKey| {
                k.record
                    .retired_at
                    .is_some_and(|t| now >= t.saturating_add(retention.as_secs()))
            };
            let dropped: Vec<String> = old
                .keys
                .iter()
                .filter(|k| expired(k))
                .map(|k| k.kid().to_string())
                .collect();
            if dropped.is_empty() {
                return Ok((None, dropped));
            }
            let keys = old.keys.iter().filter(|k| !expired(k)).cloned().collect();
            Ok((Some(keys), dropped))
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Retires the keys of algorithms no longer configured (`retire_dropped`: at start only;
    /// an instance whose configuration differs must not retire its peers' keys every second)
    /// and generates an active key for each configured algorithm that has none. Returns the
    /// algorithms given a key.
    fn settle(
        &self,
        set: &KeySet,
        now: u64,
        retire_dropped: bool,
    ) -> Result<Decision<Vec<SigningAlg>>, KeyError> {
        let mut changed = false;
        let mut keys: Vec<Arc<SigningKey>> = Vec::with_capacity(set.keys.len());
        for k in &set.keys {
            if retire_dropped
                && k.state() != KeyState::Retired
                && !self.algorithms.contains(&k.alg())
            {
                keys.push(Arc::new(k.moved_to(KeyState::Retired, now)));
                changed = true;
            } else {
                keys.push(k.clone());
            }
        }
        let mut generated = Vec::new();
        for &alg in &self.algorithms {
            if !keys
                .iter()
                .any(|k| k.alg() == alg && k.state() == KeyState::Active)
            {
                keys.push(Arc::new(generate(alg, now, KeyState::Active, now)?));
                generated.push(alg);
                changed = true;
            }
        }
        Ok((changed.then_some(keys), generated))
    }

    fn log_generated(&self, generated: &[SigningAlg]) {
        for alg in generated {
            tracing::info!(alg = alg.as_str(), keys = %self.storage.location(), "generated a signing key");
        }
    }

    /// Decides a change on the published set, writes it, then publishes it. When another
    /// instance changed the keys first, reloads them and decides again on what it finds.
    /// Called with `changing` held.
    fn change<T>(
        &self,
        mut decide: impl FnMut(&KeySet) -> Result<Decision<T>, KeyError>,
    ) -> Result<T, KeyError> {
        for _ in 0..ATTEMPTS {
            let old = self.current();
            let (keys, outcome) = decide(&old)?;
            let Some(keys) = keys else {
                return Ok(outcome);
            };
            match self.storage.write(old.version, &old.keys, &keys)? {
                KeysWritten::At(version) => {
                    self.publish(keys, version)?;
                    return Ok(outcome);
                }
                KeysWritten::Conflict => {
                    tracing::info!(
                        "another instance changed the signing keys first: reloading them and deciding again"
                    );
                    self.reload()?;
                }
            }
        }
        Err(KeyError::Conflict)
    }

    /// Publishes what the storage holds now.
    fn reload(&self) -> Result<(), KeyError> {
        let (version, keys) = self.storage.load()?;
        self.publish(keys.into_iter().map(Arc::new).collect(), version)
    }

    /// Makes `keys` (written at `version`) the published set. Oldest first, then by kid: every
    /// instance holding the same keys publishes the same JWKS.
    fn publish(&self, mut keys: Vec<Arc<SigningKey>>, version: u64) -> Result<(), KeyError> {
        keys.sort_by(|a, b| (a.created_at(), a.kid()).cmp(&(b.created_at(), b.kid())));
        let jwks = serde_json::to_vec(&JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        })
        .map_err(|e| KeyError::Jwks(e.to_string()))?;
        self.current.store(Arc::new(KeySet {
            keys,
            jwks,
            version,
        }));
        Ok(())
    }
}

impl SigningKey {
    /// This key in `state` from `now` on.
    fn moved_to(&self, state: KeyState, now: u64) -> SigningKey {
        let mut record = self.record.clone();
        record.state = state;
        match state {
            KeyState::Retired => record.retired_at = Some(now),
            KeyState::Active => record.signs_from = Some(record.signs_from.unwrap_or(now)),
            KeyState::Next => {}
        }
        SigningKey {
            record,
            encoding: self.encoding.clone(),
            decoding: self.decoding.clone(),
            jwk: self.jwk.clone(),
            pkcs8: self.pkcs8.clone(),
        }
    }
}

/// A fresh key pair for `alg`; its kid is its public key's RFC 7638 thumbprint.
fn generate(
    alg: SigningAlg,
    now: u64,
    state: KeyState,
    signs_from: u64,
) -> Result<SigningKey, KeyError> {
    let pkcs8 = match alg {
        SigningAlg::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map(|d| d.as_ref().to_vec()),
        SigningAlg::ES256 => aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec()),
        SigningAlg::EdDSA => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec()),
    }
    .map_err(|_| KeyError::Generate(alg))?;
    let pkcs8 = Zeroizing::new(pkcs8);
    let (encoding, jwk) = key_material(alg, &pkcs8).map_err(|_| KeyError::Generate(alg))?;
    let record = KeyRecord {
        kid: jwk.thumbprint(ThumbprintHash::SHA256),
        alg,
        created_at: now,
        state,
        signs_from: Some(signs_from),
        retired_at: None,
    };
    finish_key(record, encoding, jwk, pkcs8).map_err(|_| KeyError::Generate(alg))
}

/// A recorded key from its private half (PKCS#8 DER), which must match the record's kid.
fn restore(record: KeyRecord, pkcs8: Zeroizing<Vec<u8>>) -> Result<SigningKey, String> {
    let (encoding, jwk) = key_material(record.alg, &pkcs8)?;
    if jwk.thumbprint(ThumbprintHash::SHA256) != record.kid {
        return Err("key does not match its kid (RFC 7638 thumbprint)".into());
    }
    finish_key(record, encoding, jwk, pkcs8)
}

/// The signing key and public JWK of a PKCS#8 private key.
fn key_material(alg: SigningAlg, pkcs8: &[u8]) -> Result<(EncodingKey, Jwk), String> {
    let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())));
    parse_private_key(alg, pem.as_bytes())
}

fn parse_private_key(alg: SigningAlg, pem: &[u8]) -> Result<(EncodingKey, Jwk), String> {
    let encoding = match alg {
        SigningAlg::RS256 => EncodingKey::from_rsa_pem(pem),
        SigningAlg::ES256 => EncodingKey::from_ec_pem(pem),
        SigningAlg::EdDSA => EncodingKey::from_ed_pem(pem),
    }
    .map_err(|e| format!("not a PKCS#8 {alg:?} private key: {e}"))?;
    let jwk = match alg {
        // jsonwebtoken derives RSA and EC public keys but not Ed25519 ones (RFC 8037 §2).
        SigningAlg::EdDSA => ed25519_jwk(encoding.inner())?,
        _ => Jwk::from_encoding_key(&encoding, alg.jose())
            .map_err(|e| format!("cannot derive the public key: {e}"))?,
    };
    Ok((encoding, jwk))
}

fn ed25519_jwk(pkcs8: &[u8]) -> Result<Jwk, String> {
    use aws_lc_rs::signature::KeyPair;
    use base64::Engine;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|e| format!("not an Ed25519 key: {e}"))?;
    Ok(Jwk {
        common: CommonParameters {
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }),
    })
}

fn finish_key(
    record: KeyRecord,
    encoding: EncodingKey,
    mut jwk: Jwk,
    pkcs8: Zeroizing<Vec<u8>>,
) -> Result<SigningKey, String> {
    jwk.common.key_id = Some(record.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(SigningKey {
        record,
        encoding,
        decoding,
        jwk,
        pkcs8: Arc::new(pkcs8),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::files::STATE_FILE;
    use super::*;

    const STAGED: RotationMode = RotationMode::Staged {
        publish_for: Duration::from_secs(300),
    };

    fn states(ring: &KeyRing) -> Vec<(String, KeyState)> {
        ring.current()
            .iter()
            .map(|k| (k.kid().to_string(), k.state()))
            .collect()
    }

    fn state_of(ring: &KeyRing, kid: &str) -> KeyState {
        ring.current().find(kid).map(|k| k.state()).unwrap()
    }

    #[test]
    fn keys_persist_rotate_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let algs = [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA];
        let ring = KeyRing::open(dir.path(), &algs, 100).unwrap();
        let first = ring.current().kids();
        assert_eq!(first.len(), 3);
        for kid in &first {
            let mode = fs::metadata(dir.path().join(format!("{kid}.pem")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reopening loads the same keys instead of generating new ones.
        let again = KeyRing::open(dir.path(), &algs, 200).unwrap();
        assert_eq!(again.current().kids(), first);

        let rotation = again.rotate(300, RotationMode::Immediate).unwrap();
        assert_eq!(rotation.len(), 3);
        assert!(rotation
            .iter()
            .all(|c| c.state == KeyState::Active && c.signs_from == 300 && c.created));
        assert_eq!(again.current().kids().len(), 6);
        assert_eq!(again.current().count(KeyState::Active), 3);
        assert_eq!(again.current().count(KeyState::Retired), 3);
        assert!(again
            .prune(310, Duration::from_secs(60))
            .unwrap()
            .is_empty());
        let dropped = again.prune(360, Duration::from_secs(60)).unwrap();
        assert_eq!(dropped.len(), 3);
        assert!(!dir.path().join(format!("{}.pem", first[0])).exists());
        let reopened = KeyRing::open(dir.path(), &algs, 400).unwrap();
        assert_eq!(reopened.current().kids(), again.current().kids());
    }

    #[test]
    fn a_staged_rotation_publishes_next_keys_that_sign_after_the_cache_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let algs = [SigningAlg::ES256, SigningAlg::EdDSA];
        let ring = KeyRing::open(dir.path(), &algs, 100).unwrap();
        let old = ring
            .current()
            .active(SigningAlg::ES256)
            .unwrap()
            .kid()
            .to_string();

        let rotation = ring.rotate(1000, STAGED).unwrap();
        let es = rotation
            .iter()
            .find(|c| c.alg == SigningAlg::ES256)
            .unwrap();
        assert_eq!(es.state, KeyState::Next);
        // One second more than the max-age: `now` is truncated to the second.
        assert_eq!(es.signs_from, 1301);
        assert_eq!(es.replaces.as_deref(), Some(old.as_str()));
        let next = es.kid.clone();
        // Published at once, not signing.
        assert!(String::from_utf8_lossy(&ring.current().jwks).contains(&next));
        assert_eq!(state_of(&ring, &next), KeyState::Next);
        let (_, kid) = ring
            .sign(SigningAlg::ES256, "JWT", &serde_json::json!({}))
            .unwrap();
        assert_eq!(kid, old);

        // A second rotation while it waits changes nothing and does not restart the wait.
        let before = states(&ring);
        let again = ring.rotate(1100, STAGED).unwrap();
        let es = again.iter().find(|c| c.alg == SigningAlg::ES256).unwrap();
        assert_eq!(
            (es.kid.as_str(), es.signs_from, es.created),
            (next.as_str(), 1301, false)
        );
        assert_eq!(states(&ring), before);

        // Not due a second early; then it signs and the old key retires.
        assert!(ring.activate_due(1300).unwrap().is_empty());
        let activated = ring.activate_due(1301).unwrap();
        assert_eq!(activated.len(), 2);
        let es = activated
            .iter()
            .find(|a| a.alg == SigningAlg::ES256)
            .unwrap();
        assert_eq!(
            (es.kid.as_str(), es.retired.as_deref()),
            (next.as_str(), Some(old.as_str()))
        );
        assert_eq!(state_of(&ring, &next), KeyState::Active);
        assert_eq!(state_of(&ring, &old), KeyState::Retired);
        assert_eq!(ring.current().find(&old).unwrap().retired_at(), Some(1301));
        let (_, kid) = ring
            .sign(SigningAlg::ES256, "JWT", &serde_json::json!({}))
            .unwrap();
        assert_eq!(kid, next);
        assert!(ring.activate_due(2000).unwrap().is_empty());
    }

    #[test]
    fn a_next_key_survives_a_restart_and_takes_over_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let algs = [SigningAlg::ES256];
        let ring = KeyRing::open(dir.path(), &algs, 100).unwrap();
        ring.rotate(1000, STAGED).unwrap();
        let before = states(&ring);
        drop(ring);

        let reopened = KeyRing::open(dir.path(), &algs, 1200).unwrap();
        assert_eq!(states(&reopened), before);
        // Due while the issuer was down: the first activation pass switches.
        let reopened = KeyRing::open(dir.path(), &algs, 5000).unwrap();
        assert_eq!(states(&reopened), before);
        assert_eq!(reopened.activate_due(5000).unwrap().len(), 1);
        let after = KeyRing::open(dir.path(), &algs, 5001).unwrap();
        assert_eq!(after.current().count(KeyState::Active), 1);
        assert_eq!(after.current().count(KeyState::Retired), 1);
        assert_eq!(after.current().count(KeyState::Next), 0);
    }

    #[test]
    fn an_immediate_rotation_withdraws_a_waiting_next_key() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), &[SigningAlg::ES256], 100).unwrap();
        let old = ring.current().kids()[0].clone();
        let next = ring.rotate(1000, STAGED).unwrap()[0].kid.clone();

        let change = ring
            .rotate(1010, RotationMode::Immediate)
            .unwrap()
            .remove(0);
        assert_eq!(change.withdrawn.as_deref(), Some(next.as_str()));
        assert_eq!(change.replaces.as_deref(), Some(old.as_str()));
        assert!(ring.current().find(&next).is_none());
        assert!(!dir.path().join(format!("{next}.pem")).exists());
        assert_eq!(state_of(&ring, &old), KeyState::Retired);
        assert_eq!(state_of(&ring, &change.kid), KeyState::Active);
        assert!(ring.activate_due(5000).unwrap().is_empty());
    }

    #[test]
    fn the_schedule_counts_from_the_last_published_key_and_waits_for_a_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), &[SigningAlg::ES256], 100).unwrap();
        let every = Duration::from_secs(1000);
        assert!(!ring.rotation_due(1099, every));
        assert!(ring.rotation_due(1100, every));
        ring.rotate(1100, STAGED).unwrap();
        // Waiting for the next key to sign: never due meanwhile, however late.
        assert!(!ring.rotation_due(9999, every));
        ring.activate_due(1401).unwrap();
        assert!(!ring.rotation_due(2099, every));
        assert!(ring.rotation_due(2100, every));
    }

    #[test]
    fn a_key_ring_written_before_next_keys_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), &[SigningAlg::ES256], 100).unwrap();
        ring.rotate(200, RotationMode::Immediate).unwrap();
        let before = states(&ring);
        // The old format: no `state`, no `signs_from`; `retired_at` marks retired keys.
        let path = dir.path().join(STATE_FILE);
        let mut records: Vec<serde_json::Value> =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for r in &mut records {
            let r = r.as_object_mut().unwrap();
            r.remove("state");
            r.remove("signs_from");
        }
        fs::write(&path, serde_json::to_vec(&records).unwrap()).unwrap();
        let reopened = KeyRing::open(dir.path(), &[SigningAlg::ES256], 300).unwrap();
        assert_eq!(states(&reopened), before);
    }

    #[test]
    fn a_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), &[SigningAlg::ES256], 1).unwrap();
        let kid = ring.current().kids()[0].clone();
        let path = dir.path().join(format!("{kid}.pem"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::open(dir.path(), &[SigningAlg::ES256], 2)
            .err()
            .unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
