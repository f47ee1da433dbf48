//! Keys kept as files: one PKCS#8 PEM per key (0600) and `keyring.json` (the records) in a 0700
//! directory. The gateway's assertion signer keeps its key this way; the issuer kept its keys
//! so before they moved into the state store, and imports them from here once (`stored`).
//!
//! A change writes the new keys' files first, then `keyring.json` (atomically), then deletes
//! the files of keys that left: a crash in between loses nothing that was published.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{restore, KeyError, KeyRecord, KeyState, KeyStorage, SigningKey};
use crate::state::KeysWritten;

/// The records' file in a key directory.
pub(super) const STATE_FILE: &str = "keyring.json";

pub(super) struct FileKeys {
    dir: PathBuf,
}

impl FileKeys {
    /// Keys in `dir`, which is created (0700) if missing.
    pub(super) fn create(dir: &Path) -> Result<Self, KeyError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| KeyError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        Ok(Self::existing(dir))
    }

    /// Keys in `dir` as it is; nothing is created.
    pub(super) fn existing(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Whether `dir` holds a key ring.
    pub(super) fn holds_keys(dir: &Path) -> bool {
        dir.join(STATE_FILE).exists()
    }

    fn pem_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.pem"))
    }
}

impl KeyStorage for FileKeys {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn load(&self) -> Result<(u64, Vec<SigningKey>), KeyError> {
        let path = self.dir.join(STATE_FILE);
        let records: Vec<KeyRecord> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let mut keys = Vec::with_capacity(records.len());
        for mut record in records {
            // Written before next keys existed: `retired_at` alone marked a retired key.
            if record.retired_at.is_some() {
                record.state = KeyState::Retired;
            }
            keys.push(load_key(&self.pem_path(&record.kid), record)?);
        }
        Ok((0, keys))
    }

    /// One writer (this process): the version never moves.
    fn version(&self) -> Result<u64, KeyError> {
        Ok(0)
    }

    fn write(
        &self,
        _version: u64,
        before: &[Arc<SigningKey>],
        after: &[Arc<SigningKey>],
    ) -> Result<KeysWritten, KeyError> {
        let known = |set: &[Arc<SigningKey>], kid: &str| set.iter().any(|k| k.kid() == kid);
        for key in after.iter().filter(|k| !known(before, k.kid())) {
            let pem = Zeroizing::new(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                key.pkcs8.as_slice().to_vec(),
            )));
            write_private(&self.pem_path(key.kid()), pem.as_bytes())?;
        }
        let records: Vec<&KeyRecord> = after.iter().map(|k| &k.record).collect();
        let state = serde_json::to_vec_pretty(&records).map_err(|e| KeyError::Invalid {
            path: self.dir.join(STATE_FILE),
            message: e.to_string(),
        })?;
        write_private(&self.dir.join(STATE_FILE), &state)?;
        for key in before.iter().filter(|k| !known(after, k.kid())) {
            let _ = fs::remove_file(self.pem_path(key.kid()));
        }
        Ok(KeysWritten::At(0))
    }
}

fn load_key(path: &Path, record: KeyRecord) -> Result<SigningKey, KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: "private key is readable by group or others; run `chmod 600` on it".into(),
        });
    }
    let text = Zeroizing::new(fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    let invalid = |message| KeyError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let pem = pem::parse(text.as_slice()).map_err(|e| invalid(format!("not PEM: {e}")))?;
    if pem.tag() != "PRIVATE KEY" {
        return Err(invalid(format!(
            "a {} PEM, not a PKCS#8 PRIVATE KEY",
            pem.tag()
        )));
    }
    restore(record, Zeroizing::new(pem.into_contents())).map_err(invalid)
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
