//! Signing keys: generated on first start, persisted as PKCS#8 PEM (0600) in a 0700 directory,
//! rotated on a schedule or on command, published as a JWKS (RFC 7517).
//!
//! A rotation makes a fresh key active for each algorithm and retires the old one. A retired key
//! stays in the JWKS for `retention` (the longest token lifetime plus the JWKS cache max-age), so
//! every token it signed verifies until it expires and every cache has seen the new key; then it
//! leaves the JWKS and its file is deleted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlg {
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlg {
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
}

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
}

/// One key as recorded in `keyring.json`; the private half lives in `<kid>.pem`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    kid: String,
    alg: SigningAlg,
    created_at: u64,
    #[serde(default)]
    retired_at: Option<u64>,
}

pub struct SigningKey {
    record: KeyRecord,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: Jwk,
}

impl SigningKey {
    pub fn kid(&self) -> &str {
        &self.record.kid
    }
    pub fn alg(&self) -> SigningAlg {
        self.record.alg
    }
    pub fn is_active(&self) -> bool {
        self.record.retired_at.is_none()
    }
}

/// What is published at one moment: every key still in the JWKS, and the JWKS body.
pub struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    pub jwks: Vec<u8>,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.kid() == kid)
    }
    pub fn active(&self, alg: SigningAlg) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.alg() == alg && k.is_active())
    }
    pub fn active_count(&self) -> usize {
        self.keys.iter().filter(|k| k.is_active()).count()
    }
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid().to_string()).collect()
    }
}

/// Outcome of a rotation: `(alg, retired kid, new kid)` per algorithm.
pub type Rotation = Vec<(SigningAlg, Option<String>, String)>;

pub struct KeyRing {
    dir: PathBuf,
    algorithms: Vec<SigningAlg>,
    current: ArcSwap<KeySet>,
    /// Serialises rotations and pruning: the scheduler and the admin command may race.
    changing: Mutex<()>,
}

const STATE_FILE: &str = "keyring.json";

impl KeyRing {
    /// Loads the keys in `dir`, creating the directory and any missing active key.
    pub fn open(dir: &Path, algorithms: &[SigningAlg], now: u64) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut records: Vec<KeyRecord> = match fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid {
                path: dir.join(STATE_FILE),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        // An algorithm dropped from the config stops signing but stays published for a while.
        for r in &mut records {
            if r.retired_at.is_none() && !algorithms.contains(&r.alg) {
                r.retired_at = Some(now);
            }
        }
        let mut keys = Vec::new();
        for r in records {
            keys.push(Arc::new(load_key(dir, r)?));
        }
        let ring = Self {
            dir: dir.to_path_buf(),
            algorithms: algorithms.to_vec(),
            current: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                jwks: Vec::new(),
            }),
            changing: Mutex::new(()),
        };
        for &alg in algorithms {
            if !keys.iter().any(|k| k.alg() == alg && k.is_active()) {
                keys.push(Arc::new(ring.generate(alg, now)?));
                tracing::info!(alg = alg.as_str(), dir = %dir.display(), "generated a signing key");
            }
        }
        ring.publish(keys)?;
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

    /// Retires every active key and makes a fresh one active per algorithm.
    pub fn rotate(&self, now: u64) -> Result<Rotation, KeyError> {
        let _guard = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current();
        let mut keys = Vec::new();
        let mut rotation = Vec::new();
        for k in &old.keys {
            if k.is_active() {
                keys.push(Arc::new(k.retired(now)));
            } else {
                keys.push(k.clone());
            }
        }
        for &alg in &self.algorithms {
            let fresh = self.generate(alg, now)?;
            let retired = old.active(alg).map(|k| k.kid().to_string());
            rotation.push((alg, retired, fresh.kid().to_string()));
            keys.push(Arc::new(fresh));
        }
        self.publish(keys)?;
        Ok(rotation)
    }

    /// Age of the newest active key, for the rotation schedule.
    pub fn active_since(&self) -> Option<u64> {
        self.current()
            .keys
            .iter()
            .filter(|k| k.is_active())
            .map(|k| k.record.created_at)
            .min()
    }

    /// Drops retired keys older than `retention` from the JWKS and deletes their files.
    pub fn prune(&self, now: u64, retention: Duration) -> Result<Vec<String>, KeyError> {
        let _guard = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current();
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
            return Ok(dropped);
        }
        let keys = old.keys.iter().filter(|k| !expired(k)).cloned().collect();
        self.publish(keys)?;
        for kid in &dropped {
            let _ = fs::remove_file(self.dir.join(format!("{kid}.pem")));
        }
        Ok(dropped)
    }

    fn generate(&self, alg: SigningAlg, now: u64) -> Result<SigningKey, KeyError> {
        let pkcs8 = match alg {
            SigningAlg::RS256 => {
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .and_then(|k| k.as_der())
                    .map(|d| d.as_ref().to_vec())
            }
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
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8));
        let (encoding, jwk) =
            parse_private_key(alg, pem.as_bytes()).map_err(|message| KeyError::Invalid {
                path: self.dir.clone(),
                message,
            })?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        write_private(&self.dir.join(format!("{kid}.pem")), pem.as_bytes())?;
        finish_key(
            KeyRecord {
                kid,
                alg,
                created_at: now,
                retired_at: None,
            },
            encoding,
            jwk,
        )
        .map_err(|message| KeyError::Invalid {
            path: self.dir.clone(),
            message,
        })
    }

    /// Persists the key list, then makes it the published set (file first: a crash in between
    /// loses nothing that was published).
    fn publish(&self, keys: Vec<Arc<SigningKey>>) -> Result<(), KeyError> {
        let records: Vec<&KeyRecord> = keys.iter().map(|k| &k.record).collect();
        let state = serde_json::to_vec_pretty(&records).map_err(|e| KeyError::Invalid {
            path: self.dir.join(STATE_FILE),
            message: e.to_string(),
        })?;
        write_private(&self.dir.join(STATE_FILE), &state)?;
        let jwks = serde_json::to_vec(&JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        })
        .map_err(|e| KeyError::Invalid {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        self.current.store(Arc::new(KeySet { keys, jwks }));
        Ok(())
    }
}

impl SigningKey {
    fn retired(&self, now: u64) -> SigningKey {
        SigningKey {
            record: KeyRecord {
                retired_at: Some(now),
                ..self.record.clone()
            },
            encoding: self.encoding.clone(),
            decoding: self.decoding.clone(),
            jwk: self.jwk.clone(),
        }
    }
}

fn load_key(dir: &Path, record: KeyRecord) -> Result<SigningKey, KeyError> {
    let path = dir.join(format!("{}.pem", record.kid));
    let meta = fs::metadata(&path).map_err(|source| KeyError::Io {
        path: path.clone(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Invalid {
            path,
            message: "private key is readable by group or others; run `chmod 600` on it".into(),
        });
    }
    let pem = fs::read(&path).map_err(|source| KeyError::Io {
        path: path.clone(),
        source,
    })?;
    let invalid = |message| KeyError::Invalid {
        path: path.clone(),
        message,
    };
    let (encoding, jwk) = parse_private_key(record.alg, &pem).map_err(invalid)?;
    if jwk.thumbprint(ThumbprintHash::SHA256) != record.kid {
        return Err(invalid(
            "key does not match its kid (RFC 7638 thumbprint)".into(),
        ));
    }
    finish_key(record, encoding, jwk).map_err(invalid)
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
) -> Result<SigningKey, String> {
    jwk.common.key_id = Some(record.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(SigningKey {
        record,
        encoding,
        decoding,
        jwk,
    })
}

/// Writes `bytes` readable by the owner only, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let rotation = again.rotate(300).unwrap();
        assert_eq!(rotation.len(), 3);
        assert_eq!(again.current().kids().len(), 6);
        assert_eq!(again.current().active_count(), 3);
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
