//! `embedded`: the identity and authz services served from this process. Their files belong to
//! those services, but `validate` and reload check them too, so a broken one is reported here.

use std::path::{Path, PathBuf};

use super::Compiler;
use crate::config::file::EmbeddedSpec;

impl Compiler {
    /// Checks the embedded identity service's own file. It is not hashed or watched here: the
    /// identity service reloads it itself.
    pub(super) fn embedded_identity(
        &mut self,
        main_path: &Path,
        spec: &EmbeddedSpec,
    ) -> Option<PathBuf> {
        let path = self.resolve(spec.identity.as_deref()?);
        if let Err(errors) = gatehouse_identity::config::load(&path) {
            // Identity reports in the same located form: its problems pass through as they are,
            // except an unreadable file, which is a problem of the key naming it.
            for e in errors.0 {
                if gatehouse_identity::config::is_unreadable(&e) {
                    self.error(main_path, "embedded.identity", e.message, e.hint);
                } else {
                    self.errors.push(e);
                }
            }
        }
        Some(path)
    }

    /// Checks the embedded authz service's file and its policy directory, for the same reason.
    /// Their problems come located in the authz files themselves (file, line, key path), so they
    /// are reported as they are; an unreadable `authz.yaml` is named by its own path.
    pub(super) fn embedded_authz(&mut self, spec: &EmbeddedSpec) -> Option<PathBuf> {
        let path = self.resolve(spec.authz.as_deref()?);
        let checked = gatehouse_authz::config::load(&path)
            .and_then(|settings| gatehouse_authz::policy::load(&settings.policies).map(drop));
        if let Err(errors) = checked {
            self.errors.extend(errors.0);
        }
        Some(path)
    }
}
