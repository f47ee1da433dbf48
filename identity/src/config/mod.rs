//! `conf/identity.yaml`: what the operator writes (`file.rs`: serde structs, unknown keys
//! rejected) and what the issuer reads (`settings.rs`: the compiled [`Settings`]). [`compile`]
//! is the only bridge from one to the other and, with [`load`], the only place configuration
//! errors arise (`error.rs`).

mod compile;
mod error;
mod file;
mod settings;

use std::path::Path;

pub use compile::compile;
pub use file::{
    AuditRotationFile, ClientFile, EncryptionKeyFile, File, GrantType, KeysFile, LimitsFile,
    LockoutFile, SessionFile, TlsFile, TokensFile, UserFile,
};
pub use gatehouse_service::{LocatedError, LocatedErrors};
pub use settings::{Client, ProcessSettings, Settings, User};

/// Reads, parses and compiles `path`. Relative paths inside are relative to the file's directory.
pub fn load(path: &Path) -> Result<Settings, LocatedErrors> {
    let bytes = std::fs::read(path).map_err(|e| error::unreadable(path, &e))?;
    let file: File = serde_yaml::from_slice(&bytes).map_err(|e| error::unparseable(path, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    compile(file, path, base, hex_sha256(&bytes))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
