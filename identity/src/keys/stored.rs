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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use base64::Engine;

    use super::*;
    use crate::keys::{KeyRing, RotationMode};
    use crate::state::StateUrl;

    const ALGS: [SigningAlg; 2] = [SigningAlg::RS256, SigningAlg::ES256];
    const STAGED: RotationMode = RotationMode::Staged {
        publish_for: Duration::from_secs(300),
    };

    /// A SQLite store in `dir` and a key-encryption key file holding `byte` × 32.
    struct Setup {
        dir: tempfile::TempDir,
        store: Arc<Store>,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let store = Self::open_store(dir.path());
            Setup { dir, store }
        }

        fn open_store(dir: &Path) -> Arc<Store> {
            Arc::new(Store::open(&StateUrl::Sqlite(dir.join("state.db"))).unwrap())
        }

        fn kek(&self, byte: u8) -> KekSource {
            use std::os::unix::fs::PermissionsExt;
            let path = self.dir.path().join(format!("kek-{byte}"));
            let text = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            KekSource::File(path)
        }

        fn ring(&self, store: &Arc<Store>, byte: u8, now: u64) -> Result<KeyRing, KeyError> {
            KeyRing::open_in_store(store.clone(), &self.kek(byte), None, &ALGS, now)
        }

        /// Every file SQLite keeps the database in (WAL mode: the newest pages are in `-wal`).
        fn database_bytes(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            for name in ["state.db", "state.db-wal", "state.db-shm"] {
                if let Ok(b) = std::fs::read(self.dir.path().join(name)) {
                    bytes.extend(b);
                }
            }
            bytes
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn states(ring: &KeyRing) -> Vec<(String, SigningAlg, KeyState)> {
        ring.current()
            .iter()
            .map(|k| (k.kid().to_string(), k.alg(), k.state()))
            .collect()
    }

    #[test]
    fn keys_sealed_in_the_store_open_again_and_sign_the_same() {
        let s = Setup::new();
        let ring = s.ring(&s.store, 7, 100).unwrap();
        assert_eq!(ring.current().count(KeyState::Active), 2);
        ring.rotate(200, STAGED).unwrap();
        let before = states(&ring);
        let jwks = ring.current().jwks.clone();
        drop(ring);

        // Another process (another pool) on the same database reads the same keys back.
        let again = s.ring(&Setup::open_store(s.dir.path()), 7, 300).unwrap();
        assert_eq!(states(&again), before);
        assert_eq!(again.current().jwks, jwks);
        let (token, kid) = again
            .sign(SigningAlg::ES256, "JWT", &serde_json::json!({"sub": "x"}))
            .unwrap();
        let key = again.current().find(&kid).unwrap().clone();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &key.decoding, &validation).unwrap();

        let rows = s.store.signing_keys().unwrap().rows;
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.sealed_key.starts_with("v1:")));
    }

    #[test]
    fn no_private_key_is_in_the_database_in_the_clear() {
        let s = Setup::new();
        let ring = s.ring(&s.store, 7, 100).unwrap();
        ring.rotate(200, RotationMode::Immediate).unwrap();
        let bytes = s.database_bytes();
        assert!(bytes.len() > 4096, "the database files were read");
        assert!(!contains(&bytes, b"PRIVATE KEY"));
        for key in ring.current().iter() {
            let der = key.pkcs8.as_slice();
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            assert!(!contains(&bytes, der), "raw DER of {}", key.kid());
            assert!(
                !contains(&bytes, b64.as_bytes()),
                "base64 DER of {}",
                key.kid()
            );
            // A PEM body line, in case it was stored wrapped.
            assert!(
                !contains(&bytes, &b64.as_bytes()[..64]),
                "PEM of {}",
                key.kid()
            );
        }
    }

    #[test]
    fn a_wrong_key_encryption_key_is_refused_clearly() {
        let s = Setup::new();
        let ring = s.ring(&s.store, 7, 100).unwrap();
        let kids = ring.current().kids();
        drop(ring);
        let err = s.ring(&s.store, 8, 200).err().expect("another KEK opens");
        assert!(matches!(err, KeyError::Kek(KekError::Mismatch)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("the key-encryption key does not open the signing keys in the store"),
            "{err}"
        );
        // Nothing was changed by the refused start.
        let again = s.ring(&s.store, 7, 300).unwrap();
        assert_eq!(again.current().kids(), kids);
    }

    #[test]
    fn a_sealed_key_moved_to_another_row_does_not_open() {
        let s = Setup::new();
        let ring = s.ring(&s.store, 7, 100).unwrap();
        drop(ring);
        // Swap the two rows' sealed keys, as someone with write access to the database could.
        s.store.execute_for_test(
            "UPDATE signing_keys SET sealed_key = (SELECT s.sealed_key FROM signing_keys s \
             WHERE s.kid <> signing_keys.kid)",
        );
        let err = s.ring(&s.store, 7, 200).err().expect("a swapped row opens");
        let text = err.to_string();
        assert!(matches!(err, KeyError::Stored { .. }), "{err:?}");
        assert!(
            text.contains("does not open") && text.contains("for another row"),
            "{text}"
        );
    }

    #[test]
    fn two_rings_on_one_store_publish_one_next_key_and_both_see_it() {
        let s = Setup::new();
        let a = s.ring(&s.store, 7, 100).unwrap();
        // A second instance: its own pool on the same database.
        let b = s.ring(&Setup::open_store(s.dir.path()), 7, 100).unwrap();
        assert_eq!(a.current().jwks, b.current().jwks);

        // Both decide to rotate on what they hold; A writes first.
        let from_a = a.rotate(1000, STAGED).unwrap();
        assert!(from_a.iter().all(|c| c.created));
        // B's write finds the version moved: it reloads, finds A's next keys waiting and
        // publishes none of its own.
        let from_b = b.rotate(1000, STAGED).unwrap();
        for (ca, cb) in from_a.iter().zip(&from_b) {
            assert_eq!(
                (cb.alg, cb.kid.as_str(), cb.created),
                (ca.alg, ca.kid.as_str(), false)
            );
        }
        let rows = s.store.signing_keys().unwrap().rows;
        for alg in ALGS {
            let next = rows
                .iter()
                .filter(|r| r.alg == alg.as_str() && r.state == "next")
                .count();
            assert_eq!(next, 1, "{alg:?}: {rows:?}");
        }
        assert_eq!(a.current().jwks, b.current().jwks);

        // A third ring that only refreshes sees the change at its next tick.
        let c = s.ring(&Setup::open_store(s.dir.path()), 7, 100).unwrap();
        let d = s.ring(&Setup::open_store(s.dir.path()), 7, 100).unwrap();
        assert!(!c.refresh(1001).unwrap(), "nothing moved");
        // The next keys fall due; only one instance switches them.
        let switched = a.activate_due(1301).unwrap();
        assert_eq!(switched.len(), 2);
        assert!(b.activate_due(1301).unwrap().is_empty());
        assert!(c.refresh(1302).unwrap());
        assert!(!c.refresh(1303).unwrap());
        assert_eq!(c.current().jwks, a.current().jwks);
        assert_eq!(states(&c), states(&a));
        // Pruning is decided once as well. D has not refreshed since it opened: its immediate
        // rotation, decided on its old copy, finds A's writes, so it reloads and rotates what A
        // left instead.
        assert_eq!(a.prune(5000, Duration::from_secs(60)).unwrap().len(), 2);
        d.rotate(5000, RotationMode::Immediate).unwrap();
        assert!(d.prune(5000, Duration::from_secs(60)).unwrap().is_empty());
        assert!(a.refresh(5001).unwrap());
        assert_eq!(states(&d), states(&a));
        assert_eq!(d.current().count(KeyState::Active), 2);
        assert_eq!(d.current().count(KeyState::Retired), 2);
        assert_eq!(s.store.signing_keys().unwrap().rows.len(), 4);
    }

    #[test]
    fn keys_kept_as_files_are_imported_once_with_their_kids() {
        let s = Setup::new();
        let dir: PathBuf = s.dir.path().join("keys");
        let files = KeyRing::open(&dir, &ALGS, 100).unwrap();
        files.rotate(200, STAGED).unwrap();
        let before = states(&files);
        drop(files);

        let ring =
            KeyRing::open_in_store(s.store.clone(), &s.kek(7), Some(&dir), &ALGS, 300).unwrap();
        assert_eq!(states(&ring), before);
        // The files stay where they were.
        assert!(dir.join("keyring.json").exists());
        assert_eq!(
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".pem"))
                .count(),
            4
        );
        // Once the store holds keys, the files are not read again: a key changed in the store
        // stays changed.
        ring.rotate(400, RotationMode::Immediate).unwrap();
        let after = states(&ring);
        drop(ring);
        let again =
            KeyRing::open_in_store(s.store.clone(), &s.kek(7), Some(&dir), &ALGS, 500).unwrap();
        assert_eq!(states(&again), after);
    }

    #[test]
    fn the_default_key_file_is_made_at_the_first_start_and_required_after() {
        let s = Setup::new();
        let path = s.dir.path().join(crate::keys::kek::DEFAULT_FILE);
        let source = KekSource::Default(path.clone());
        let ring = KeyRing::open_in_store(s.store.clone(), &source, None, &ALGS, 100).unwrap();
        let kids = ring.current().kids();
        drop(ring);
        assert!(path.exists());
        let again = KeyRing::open_in_store(s.store.clone(), &source, None, &ALGS, 200).unwrap();
        assert_eq!(again.current().kids(), kids);

        // Lost: a fresh key would not open the keys, so none is made.
        std::fs::remove_file(&path).unwrap();
        let err = KeyRing::open_in_store(s.store.clone(), &source, None, &ALGS, 300)
            .err()
            .expect("opens without its key file");
        assert!(
            matches!(err, KeyError::Kek(KekError::Missing { .. })),
            "{err:?}"
        );
        assert!(!path.exists());
    }
}
