//! The key-encryption key (KEK): 32 random bytes that seal the signing keys' private halves in
//! the state store with AES-256-GCM, so a copy of the database (a backup, a replica, a stolen
//! dump) holds no usable private key. The KEK itself never goes into the database: it comes from
//! a file or an environment variable (`keys.encryption_key`), or, for a single SQLite instance,
//! from a `kek` file the issuer makes beside the database at first start.
//!
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag): a random 96-bit nonce per seal
//! (aws-lc's randomized-nonce key; far below the 2^32 seals a random GCM nonce allows per key),
//! and the row it belongs to as associated data, so a sealed key moved to another row (another
//! kid or algorithm) does not open. The version prefix leaves room for another scheme later.
//!
//! The KEK's value never appears in logs, `Debug` output or error messages, not even in part:
//! a malformed value is reported by its length, never its bytes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use zeroize::Zeroizing;

/// Bytes in a KEK (AES-256).
pub const KEK_LEN: usize = 32;
/// How an operator makes one; every message about a bad key repeats it.
pub const MAKE_ONE: &str = "make one with `head -c 32 /dev/urandom | base64`";
/// The default KEK's file name, beside the SQLite database.
pub const DEFAULT_FILE: &str = "kek";

const FORMAT: &str = "v1:";
const TAG_LEN: usize = 16;

/// Where the KEK comes from (`keys.encryption_key`, or its default). Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `{file: PATH}`, resolved against the config directory: must exist, 0600 or stricter.
    File(PathBuf),
    /// `{env: NAME}`: the variable must be set in the issuer's environment.
    Env(String),
    /// No `encryption_key` with a SQLite store: this file, created at first start.
    Default(PathBuf),
}

impl KekSource {
    /// The configuration key an error about this source names.
    pub fn key_path(&self) -> &'static str {
        match self {
            KekSource::File(_) => "keys.encryption_key.file",
            KekSource::Env(_) => "keys.encryption_key.env",
            KekSource::Default(_) => "keys.encryption_key",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("{path}: cannot read the key-encryption key: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: the key-encryption key is readable by group or others; run `chmod 600` on it"
    )]
    Exposed { path: PathBuf },
    #[error("the environment variable {name} (the key-encryption key) is not set")]
    Unset { name: String },
    /// `origin` names the file or variable; the value itself is never shown.
    #[error("{origin} is not a key-encryption key: {problem}; {MAKE_ONE}")]
    Malformed { origin: String, problem: String },
    #[error("{path}: creating the key-encryption key: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is missing, but the state store holds signing keys sealed with a key-encryption key: restore that file, or name the key in keys.encryption_key")]
    Missing { path: PathBuf },
    #[error("the key-encryption key does not open the signing keys in the store; every instance must use the key the store was first opened with (restore it, or point keys.encryption_key at it)")]
    Mismatch,
    #[error("sealing with the key-encryption key failed")]
    Seal,
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("not a sealed value of a known format (expected `{FORMAT}…`)")]
    Format,
    /// A wrong KEK, a value sealed for another row, or altered bytes: GCM cannot tell which.
    #[error("does not open: sealed with another key-encryption key, for another row, or altered")]
    Authentication,
}

/// The KEK, ready to seal and open. Its `Debug` shows nothing of the key.
pub struct Kek {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

/// Standard or URL-safe alphabet, padded or not: what `base64` and most tools print.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

impl Kek {
    /// The key from `source`. `may_create`: the default file may be made now (the store holds no
    /// sealed key yet); otherwise a missing default file is an error, not a fresh key that would
    /// not open what is there.
    pub fn load(source: &KekSource, may_create: bool) -> Result<Kek, KekError> {
        match source {
            KekSource::File(path) => Self::from_file(path),
            KekSource::Env(name) => {
                let value =
                    std::env::var_os(name).ok_or_else(|| KekError::Unset { name: name.clone() })?;
                let value = Zeroizing::new(value.into_encoded_bytes());
                Self::from_text(&value, || format!("the environment variable {name}"))
            }
            KekSource::Default(path) => match Self::from_file(path) {
                Err(KekError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    if !may_create {
                        return Err(KekError::Missing { path: path.clone() });
                    }
                    create_default(path)?;
                    Self::from_file(path)
                }
                other => other,
            },
        }
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEK_LEN]) -> Result<Kek, KekError> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| KekError::Seal)?;
        Ok(Kek { key })
    }

    fn from_file(path: &Path) -> Result<Kek, KekError> {
        let read = |source| KekError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KekError::Exposed {
                path: path.to_path_buf(),
            });
        }
        let text = Zeroizing::new(fs::read(path).map_err(read)?);
        Self::from_text(&text, || path.display().to_string())
    }

    /// base64 of 32 bytes, surrounding whitespace ignored (a file ends with a newline).
    fn from_text(text: &[u8], origin: impl Fn() -> String) -> Result<Kek, KekError> {
        let malformed = |problem: String| KekError::Malformed {
            origin: origin(),
            problem,
        };
        let text = text.trim_ascii();
        if text.is_empty() {
            return Err(malformed("it is empty".into()));
        }
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .map(Zeroizing::new)
            // The decoder's message quotes the offending byte: a piece of the key. Not shown.
            .map_err(|_| malformed("it is not base64".into()))?;
        let bytes: Zeroizing<[u8; KEK_LEN]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                malformed(format!(
                    "it decodes to {} bytes, not {KEK_LEN}",
                    bytes.len()
                ))
            })?);
        Self::from_bytes(&bytes)
    }

    /// Seals `plaintext` for the row that `aad` names.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, KekError> {
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut *buf)
            .map_err(|_| KekError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(format!(
            "{FORMAT}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens what [`Kek::seal`] made for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        let body = sealed.strip_prefix(FORMAT).ok_or(UnsealError::Format)?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| UnsealError::Format)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(UnsealError::Format);
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN])
            .map_err(|_| UnsealError::Format)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut bytes[NONCE_LEN..])
            .map_err(|_| UnsealError::Authentication)?;
        let plain = Zeroizing::new(plain.to_vec());
        bytes.iter_mut().for_each(|b| *b = 0);
        Ok(plain)
    }
}

/// Writes fresh random bytes, base64, to `path` (0600, its directory 0700), unless a concurrent
/// start made it first: the file appears whole (temp file, then a hard link that fails if the
/// name exists) so a second process never reads half a key.
fn create_default(path: &Path) -> Result<(), KekError> {
    let create = |source| KekError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
    aws_lc_rs::rand::fill(&mut *bytes).map_err(|_| {
        create(std::io::Error::other(
            "the system random number generator failed",
        ))
    })?;
    let text = Zeroizing::new(format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(*bytes)
    ));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the key-encryption key that seals the signing keys in the state store; back it up with the database (not in the same place)");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; KEK_LEN]).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_row_only() {
        let key = kek(1);
        let sealed = key.seal(b"row a", b"private").unwrap();
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(!sealed.contains("private"));
        assert_eq!(key.open(b"row a", &sealed).unwrap().as_slice(), b"private");
        // A fresh nonce per seal: the same plaintext never seals the same way twice.
        assert_ne!(key.seal(b"row a", b"private").unwrap(), sealed);
        assert_eq!(
            key.open(b"row b", &sealed).unwrap_err(),
            UnsealError::Authentication
        );
        assert_eq!(
            kek(2).open(b"row a", &sealed).unwrap_err(),
            UnsealError::Authentication
        );
        assert_eq!(
            key.open(b"row a", "v2:abcd").unwrap_err(),
            UnsealError::Format
        );
        assert_eq!(
            key.open(b"row a", "v1:AAAA").unwrap_err(),
            UnsealError::Format
        );
    }

    #[test]
    fn the_value_is_base64_of_32_bytes_in_either_alphabet_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        // 0xfb… encodes with '+' and '/' in the standard alphabet, '-' and '_' in the URL-safe one.
        let bytes = [0xfb_u8; KEK_LEN];
        for text in [
            base64::engine::general_purpose::STANDARD.encode(bytes),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ] {
            fs::write(&path, format!("  {text}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let loaded = Kek::load(&KekSource::File(path.clone()), false).unwrap();
            let sealed = kek(0xfb).seal(b"r", b"x").unwrap();
            assert_eq!(loaded.open(b"r", &sealed).unwrap().as_slice(), b"x");
            assert_eq!(format!("{loaded:?}"), "Kek(..)");
        }

        let secret = "c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0";
        fs::write(&path, secret).unwrap();
        let err = Kek::load(&KekSource::File(path.clone()), false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("decodes to 24 bytes, not 32"), "{text}");
        assert!(text.contains("head -c 32 /dev/urandom | base64"), "{text}");
        assert!(!text.contains(secret), "{text}");
        fs::write(&path, "not base64 at all!").unwrap();
        let text = Kek::load(&KekSource::File(path.clone()), false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("is not base64"), "{text}");
        assert!(!text.contains("at all"), "{text}");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let text = Kek::load(&KekSource::File(path.clone()), false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("chmod 600"), "{text}");

        let name = "GATEHOUSE_TEST_KEK_THAT_IS_NEVER_SET";
        let text = Kek::load(&KekSource::Env(name.into()), false)
            .unwrap_err()
            .to_string();
        assert!(text.contains(name) && text.contains("not set"), "{text}");
    }

    #[test]
    fn the_default_file_is_made_once_0600_and_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let source = KekSource::Default(path.clone());
        assert!(matches!(
            Kek::load(&source, false),
            Err(KekError::Missing { .. })
        ));
        assert!(!path.exists());

        let first = Kek::load(&source, true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .unwrap()
                .len(),
            KEK_LEN
        );
        // Later starts read the same key back.
        let sealed = first.seal(b"r", b"x").unwrap();
        let again = Kek::load(&source, true).unwrap();
        assert_eq!(again.open(b"r", &sealed).unwrap().as_slice(), b"x");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
