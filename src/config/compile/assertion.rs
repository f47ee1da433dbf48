//! `auth.assertion`: the gateway's own signing key for `X-Gatehouse-Assertion` (which routes send
//! one, and to which audience, is compiled into their policy in [`super::auth`]).
//!
//! The signer is process state: the first `Run` load that has a route asking for an assertion
//! opens it (generating the key on first use) and every later snapshot carries it over, like a
//! pool. A gateway without such routes never touches `key_dir`, so a read-only configuration
//! directory costs nothing until the feature is used; a reload that adds the first such route
//! opens the key then, and is rejected if it cannot.

use std::sync::Arc;
use std::time::Duration;

use super::key_path::KeyPath;
use super::Compiler;
use crate::assertion::AssertionSigner;
use crate::config::file::MainFile;
use crate::config::{AssertionSettings, LoadMode, Snapshot};

/// Assertions are proof of a recent pass through the gateway, not sessions.
const MAX_TTL: Duration = Duration::from_secs(3600);

impl Compiler {
    /// `auth.assertion`, checked, with `key_dir` resolved against the main file's directory.
    pub(super) fn assertion_settings(&mut self, main: &MainFile) -> AssertionSettings {
        let file = self.main_path.clone();
        let at = KeyPath::root("auth").field("assertion");
        let spec = &main.auth.assertion;
        if spec.key_dir.is_empty() {
            self.error(&file, at.field("key_dir"), "must not be empty", None);
        }
        if spec.issuer.is_empty() {
            self.error(&file, at.field("issuer"), "must not be empty", None);
        }
        if spec.ttl < Duration::from_secs(1) {
            let hint = Some("JWT times are whole seconds".to_string());
            self.error(&file, at.field("ttl"), "must be at least 1s", hint);
        } else if spec.ttl > MAX_TTL {
            let hint = Some("an assertion proves a recent pass through the gateway".to_string());
            self.error(&file, at.field("ttl"), "must be at most 1h", hint);
        }
        AssertionSettings {
            key_dir: self.resolve(&spec.key_dir),
            issuer: spec.issuer.clone(),
            ttl: spec.ttl,
        }
    }

    /// The previous snapshot's signer, or a new one when a route needs it and none is open yet.
    /// Call only once the configuration is known to be valid: opening may write the key.
    pub(super) fn assertion_signer(
        &mut self,
        settings: &AssertionSettings,
        needed: bool,
        previous: Option<&Snapshot>,
    ) -> Option<Arc<AssertionSigner>> {
        if let Some(signer) = previous.and_then(|p| p.assertion_signer.clone()) {
            return Some(signer);
        }
        if !needed || self.mode == LoadMode::CheckOnly {
            return None;
        }
        match AssertionSigner::open(&settings.key_dir, &settings.issuer, settings.ttl) {
            Ok(signer) => Some(Arc::new(signer)),
            Err(e) => {
                let file = self.main_path.clone();
                let at = KeyPath::root("auth").field("assertion").field("key_dir");
                let message = format!("cannot open the gateway's assertion key: {e}");
                self.error(&file, at, message, None);
                None
            }
        }
    }
}
