//! Keys kept in the identity state store (`signing_keys`), every instance's copy of the same
//! keys. A row holds the public record in clear and the private half sealed with the
//! key-encryption key, bound to its kid and algorithm (`kek`). Writes are a compare-and-set on
//! the keys' version (`state::signing_keys`); the ring polls the version to see other
//! instances' changes.
//!
//! A known text sealed with the key-encryption key at the first start (`meta.kek_check`) tells
//! a wrong key from a damaged row: an instance given another key refuses to start with
//! [`KekError::Mismatch`] instead of failing on the first row it cannot open.

use std::path::Path;
use std::sync::Arc;

use super::files::FileKeys;
use super::kek::{Kek, KekError, KekSource};
use super::{restore, KeyError, KeyRecord, KeyState, KeyStorage, SigningAlg, SigningKey};
use crate::state::{KeyRow, KeysWritten, Store};

const CHECK_AAD: &[u8] = b"gatehouse-identity key-encryption key check v1";
const CHECK_TEXT: &[u8] = b"this key-encryption key seals the signing keys of this store";

/// What a sealed private half is bound to: its row's kid and algorithm. A sealed key copied
/// into another row does not open there.
fn row_aad(kid: &str, alg: SigningAlg) -> Vec<u8> {
    format!("gatehouse-identity signing key v1\0{kid}\0{}", alg.as_str()).into_bytes()
}

pub(super) struct StoredKeys {
    store: Arc<Store>,
    kek: Kek,
}

impl StoredKeys {
    /// Loads the key-encryption key from `source` and checks it is the store's; the first
    /// start records the check value (and may create the default key file).
    pub(super) fn unlock(store: Arc<Store>, source: &KekSource) -> Result<Self, KeyError> {
        let check = store.kek_check()?;
        let kek = Kek::load(source, check.is_none())?;
        let check = match check {
            Some(check) => check,
            // Two first starts may race: the check that stands is the one both compare with.
            None => store.put_kek_check(kek.seal(CHECK_AAD, CHECK_TEXT)?)?,
        };
        match kek.open(CHECK_AAD, &check) {
            Ok(text) if text.as_slice() == CHECK_TEXT => Ok(Self { store, kek }),
            _ => Err(KekError::Mismatch.into()),
        }
    }

    /// When the store holds no key yet and `dir` holds a key ring kept as files (an earlier
    /// version's), puts those keys into the store, sealed, with their kids and states: tokens
    /// they signed still verify. The files are left where they are.
    pub(super) fn import_files(&self, dir: &Path) -> Result<(), KeyError> {
        if !FileKeys::holds_keys(dir) {
            return Ok(());
        }
        let current = self.store.signing_keys()?;
        if !current.rows.is_empty() {
            tracing::debug!(dir = %dir.display(), "the state store holds signing keys; the key files there are not read");
            return Ok(());
        }
        let (_, keys) = FileKeys::existing(dir).load()?;
        let keys: Vec<Arc<SigningKey>> = keys.into_iter().map(Arc::new).collect();
        match self.write(current.version, &[], &keys)? {
            KeysWritten::At(_) => tracing::info!(
                keys = keys.len(),
                dir = %dir.display(),
                "imported the signing keys kept as files into the state store (sealed with the key-encryption key; same kids, so tokens they signed still verify); the files are left in place: delete them once no older version needs them"
            ),
            KeysWritten::Conflict => tracing::info!(
                dir = %dir.display(),
                "another instance put signing keys into the state store first; the key files were not imported"
            ),
        }
        Ok(())
    }

    fn row(&self, key: &SigningKey) -> Result<KeyRow, KeyError> {
        let r = &key.record;
        Ok(KeyRow {
            kid: r.kid.clone(),
            alg: r.alg.as_str().into(),
            state: r.state.as_str().into(),
            created_at: r.created_at,
            signs_from: r.signs_from,
            retired_at: r.retired_at,
            sealed_key: self.kek.seal(&row_aad(&r.kid, r.alg), &key.pkcs8)?,
        })
    }

    fn key(&self, row: KeyRow) -> Result<SigningKey, KeyError> {
        let stored = |message: String| KeyError::Stored {
            kid: row.kid.clone(),
            message,
        };
        let alg = SigningAlg::parse(&row.alg)
            .ok_or_else(|| stored(format!("unknown algorithm {:?}", row.alg)))?;
        let state = KeyState::parse(&row.state)
            .ok_or_else(|| stored(format!("unknown state {:?}", row.state)))?;
        let pkcs8 = self
            .kek
            .open(&row_aad(&row.kid, alg), &row.sealed_key)
            .map_err(|e| stored(e.to_string()))?;
        let record = KeyRecord {
            kid: row.kid.clone(),
            alg,
            created_at: row.created_at,
            state,
            signs_from: row.signs_from,
            retired_at: row.retired_at,
        };
        restore(record, pkcs8).map_err(stored)
    }
}

impl KeyStorage for StoredKeys {
    fn location(&self) -> String {
        "the state store".into()
    }

    fn load(&self) -> Result<(u64, Vec<SigningKey>), KeyError> {
        let read = self.store.signing_keys()?;
        let keys = read
            .rows
            .into_iter()
            .map(|row| self.key(row))
            .collect::<Result<_, _>>()?;
        Ok((read.version, keys))
    }

    fn version(&self) -> Result<u64, KeyError> {
        Ok(self.store.keys_version()?)
    }

    fn write(
        &self,
        version: u64,
        before: &[Arc<SigningKey>],
        after: &[Arc<SigningKey>],
    ) -> Result<KeysWritten, KeyError> {
        let find = |set: &[Arc<SigningKey>], kid: &str| -> Option<KeyRecord> {
            set.iter()
                .find(|k| k.kid() == kid)
                .map(|k| k.record.clone())
        };
        let mut insert = Vec::new();
        let mut update = Vec::new();
        for key in after {
            match find(before, key.kid()) {
                None => insert.push(self.row(key)?),
                Some(was) if was != key.record => update.push(KeyRow {
                    // Not written by an update: a key's private half never changes.
                    sealed_key: String::new(),
                    kid: key.record.kid.clone(),
                    alg: key.record.alg.as_str().into(),
                    state: key.record.state.as_str().into(),
                    created_at: key.record.created_at,
                    signs_from: key.record.signs_from,
                    retired_at: key.record.retired_at,
                }),
                Some(_) => {}
            }
        }
        let delete = before
            .iter()
            .filter(|k| find(after, k.kid()).is_none())
            .map(|k| k.kid().to_string())
            .collect();
        Ok(self
            .store
            .write_signing_keys(version, insert, update, delete)?)
    }
}
