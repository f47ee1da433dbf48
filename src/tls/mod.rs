//! Downstream certificates: loading and checking PEM files, choosing one by SNI, and generating a
//! self-signed pair for the shipped development config.
//!
//! Certificates live in the config snapshot, so a reload that changes a file also changes what
//! new handshakes get; the listener's resolver looks up the current snapshot's certificates on
//! every handshake, through a lookup its builder hands in (this module sits below the config and
//! the store that owns it, so it never names them).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureAlgorithm;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use accept::TlsAccept;
use rsa_key::RsaSigningKey;

mod accept;
mod rsa_key;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot write a development certificate to {path}: {reason}")]
    Generate { path: String, reason: String },
}

/// A certificate ready for handshakes, and the names it answers for.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
}

/// Parses a PEM certificate bundle read from `path` (named in errors only: the caller reads the
/// file once, for both the snapshot hash and this).
pub fn parse_pem_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let display = path.display().to_string();
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Invalid {
            path: display.clone(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { path: display });
    }
    for cert in &certs {
        X509Certificate::from_der(cert).map_err(|e| CertError::Invalid {
            path: display.clone(),
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    }
    Ok(certs)
}

/// Loads a certificate chain and its key, checks that they belong together, and finds its names.
/// The paths name the files in errors; the caller has read them.
pub fn load_cert(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    names: &[String],
) -> Result<LoadedCert, CertError> {
    let chain = parse_pem_certs(cert_path, cert_pem)?;
    let key_display = key_path.display().to_string();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| CertError::Invalid {
            path: key_display.clone(),
            reason: format!("bad PEM: {e}"),
        })?
        .ok_or(CertError::NoKey {
            path: key_display.clone(),
        })?;
    let signing_key = signing_key(&key).map_err(|reason| CertError::Invalid {
        path: key_display.clone(),
        reason,
    })?;
    let names = if names.is_empty() {
        san_dns_names(&chain[0]).map_err(|reason| CertError::Invalid {
            path: cert_path.display().to_string(),
            reason,
        })?
    } else {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| CertError::Invalid {
        path: key_display,
        reason: format!(
            "does not match the certificate in {}: {e}",
            cert_path.display()
        ),
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
    })
}

/// ring reads and checks every kind of key; an RSA key then signs through aws-lc-rs (see
/// `rsa_key` for why).
fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, String> {
    let checked = any_supported_type(key).map_err(|e| format!("unsupported private key: {e}"))?;
    if checked.algorithm() == SignatureAlgorithm::RSA {
        return Ok(Arc::new(RsaSigningKey::new(key)?));
    }
    Ok(checked)
}

fn san_dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err("the certificate has no DNS subject alternative names; list `names:`".into());
    }
    Ok(names)
}

/// Writes a self-signed certificate and key for `names` (development configs only).
pub fn generate_self_signed(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> Result<(), CertError> {
    let fail = |reason: String| CertError::Generate {
        path: cert_path.display().to_string(),
        reason,
    };
    let names = if names.is_empty() {
        vec!["localhost".to_string()]
    } else {
        names.to_vec()
    };
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
    }
    std::fs::write(cert_path, generated.cert.pem()).map_err(|e| fail(e.to_string()))?;
    write_private(key_path, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Every loaded certificate, indexed by the names it answers for.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    /// Answers clients that send no SNI or an unknown name: the first certificate configured.
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        let mut store = CertStore::default();
        for cert in certs {
            store.default.get_or_insert_with(|| cert.key.clone());
            for name in cert.names {
                match name.strip_prefix('*') {
                    Some(suffix) => store.wildcard.push((suffix.to_string(), cert.key.clone())),
                    None => {
                        store.exact.entry(name).or_insert_with(|| cert.key.clone());
                    }
                }
            }
        }
        store
            .wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        store
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    pub fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(key) = self.exact.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, key)) = self
                .wildcard
                .iter()
                .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// Finds the certificate for a client's SNI name (`None`: no SNI) among the certificates in force
/// at the time of the call.
pub type CertLookup = dyn Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync;

/// The TLS listeners' certificate resolver: asks `lookup` on every handshake, so certificates
/// replaced by a reload apply to the next handshake.
pub struct SniResolver {
    lookup: Box<CertLookup>,
}

impl SniResolver {
    /// `lookup` is typically `move |name| store.current().certs.find(name)`.
    pub fn new(
        lookup: impl Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }
}

// rustls requires `Debug` of a resolver; a closure has nothing to show.
impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (self.lookup)(hello.server_name())
    }
}
