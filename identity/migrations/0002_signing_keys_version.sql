-- The signing keys' version (see state/signing_keys.rs): every change to `signing_keys` moves it
-- by one in the same transaction, with a compare-and-set on the value the writer read, so two
-- instances cannot both rotate; every instance polls it to pick up the others' changes.
-- `meta` also receives `kek_check` (a known text sealed with the key-encryption key) at the
-- first start, so a wrong key is refused clearly. Keys are never stored unsealed.
INSERT INTO meta (name, value) VALUES ('keys_version', '0');
