//! `tls.certificates`: downstream certificates, loaded (or generated for development) and indexed
//! by name for the listeners' SNI resolver.

use super::key_path::KeyPath;
use super::Compiler;
use crate::config::file::{CertificateSpec, ListenerSpec};
use crate::config::LoadMode;
use crate::tls::{self, CertError, CertStore, LoadedCert};

/// What became of one `tls.certificates` entry.
enum Certificate {
    Loaded(LoadedCert),
    /// Missing development pair that a `CheckOnly` load leaves for start-up to generate.
    ToGenerate,
    /// Unusable; the problem is recorded.
    Broken,
}

impl Compiler {
    /// The loaded certificates; also checks that every TLS listener has one to offer.
    pub(super) fn certificates(
        &mut self,
        specs: &[CertificateSpec],
        listeners: &[ListenerSpec],
    ) -> CertStore {
        let mut loaded = Vec::new();
        // Development certificates a `CheckOnly` load would have generated: they count as
        // present for the listener check, or `validate` would reject the shipped config.
        let mut to_generate = 0;
        for (i, spec) in specs.iter().enumerate() {
            let at = KeyPath::root("tls.certificates").index(i);
            match self.certificate(&at, spec) {
                Certificate::Loaded(cert) => loaded.push(cert),
                Certificate::ToGenerate => to_generate += 1,
                Certificate::Broken => {}
            }
        }
        let certs = CertStore::new(loaded);
        if certs.is_empty() && to_generate == 0 {
            let file = self.main_path.clone();
            for (i, l) in listeners.iter().enumerate() {
                if l.tls {
                    self.error(
                        &file,
                        KeyPath::root("listeners").index(i).field("tls"),
                        "a TLS listener needs at least one certificate",
                        Some("add one under tls.certificates".into()),
                    );
                }
            }
        }
        certs
    }

    fn certificate(&mut self, at: &KeyPath, spec: &CertificateSpec) -> Certificate {
        let file = self.main_path.clone();
        let cert_path = self.resolve(&spec.cert);
        let key_path = self.resolve(&spec.key);
        if spec.generate_if_missing && !cert_path.exists() && !key_path.exists() {
            if self.mode == LoadMode::CheckOnly {
                return Certificate::ToGenerate;
            }
            match tls::generate_self_signed(&cert_path, &key_path, &spec.names) {
                Ok(()) => tracing::warn!(
                    cert = %cert_path.display(),
                    names = ?spec.names,
                    "generated a self-signed development certificate; do not use it in production"
                ),
                Err(e) => {
                    self.error(&file, at, e.to_string(), None);
                    return Certificate::Broken;
                }
            }
        }
        // Read both before judging either, so both are hashed and watched.
        let (cert_pem, key_pem) = (self.read(&cert_path), self.read(&key_path));
        let loaded = match (cert_pem, key_pem) {
            (Ok(cert), Ok(key)) => tls::load_cert(&cert_path, &cert, &key_path, &key, &spec.names),
            (Err(source), _) => Err(CertError::Read {
                path: cert_path.display().to_string(),
                source,
            }),
            (_, Err(source)) => Err(CertError::Read {
                path: key_path.display().to_string(),
                source,
            }),
        };
        match loaded {
            Ok(cert) => Certificate::Loaded(cert),
            Err(e) => {
                let hint = (!spec.generate_if_missing && !cert_path.exists()).then(|| {
                    "for development, `generate_if_missing: true` writes a self-signed pair".into()
                });
                self.error(&file, at, e.to_string(), hint);
                Certificate::Broken
            }
        }
    }
}
