//! `embedded`: the identity and authz services served from this process. Their files belong to
//! those services, but `validate` and reload check them too, so a broken one is reported here.

use std::path::PathBuf;

use super::Compiler;
use crate::config::file::EmbeddedSpec;

impl Compiler {
    /// Checks the embedded identity service's own file. It is not hashed or watched here: the
    /// identity service reloads it itself. Its problems come located in its own file (an
    /// unreadable file too), so they are reported as they are.
    pub(super) fn embedded_identity(&mut self, spec: &EmbeddedSpec) -> Option<PathBuf> {
        let path = self.resolve(spec.identity.as_deref()?);
        if let Err(errors) = gatehouse_identity::config::load(&path) {
            self.errors.extend(errors.0);
        }
        Some(path)
    }

    /// Checks the embedded authz service's file and its policy directory, for the same reason,
    /// and reports their problems the same way.
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
