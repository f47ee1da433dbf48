//! RSA certificate keys sign with aws-lc-rs rather than ring.
//!
//! An RSA-2048 signature is most of a full handshake's CPU. On x86-64 with AVX-512 IFMA, aws-lc-rs
//! signs in about 0.55× ring's time (350–400 µs against 630–660 µs per RSA-PSS signature on the
//! bench machine), which is what OpenSSL-based proxies pay. Only the certificate key's signature
//! moves: rustls keeps ring as its one crypto provider for key exchange, ciphers and hashes, and
//! ECDSA keys stay on ring, which already signs them faster than HAProxy's OpenSSL handshakes.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, KeyPair, RsaEncoding, RsaKeyPair};
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// The schemes this key signs with, in the order it prefers them (rustls's own order for RSA).
/// TLS 1.3 handshakes are only offered the PSS ones.
const SCHEMES: [(SignatureScheme, &dyn RsaEncoding); 6] = [
    (SignatureScheme::RSA_PSS_SHA512, &lc::RSA_PSS_SHA512),
    (SignatureScheme::RSA_PSS_SHA384, &lc::RSA_PSS_SHA384),
    (SignatureScheme::RSA_PSS_SHA256, &lc::RSA_PSS_SHA256),
    (SignatureScheme::RSA_PKCS1_SHA512, &lc::RSA_PKCS1_SHA512),
    (SignatureScheme::RSA_PKCS1_SHA384, &lc::RSA_PKCS1_SHA384),
    (SignatureScheme::RSA_PKCS1_SHA256, &lc::RSA_PKCS1_SHA256),
];

pub struct RsaSigningKey {
    key: Arc<RsaKeyPair>,
    public_key: SubjectPublicKeyInfoDer<'static>,
}

impl RsaSigningKey {
    /// Reads an RSA private key (PKCS#8 or PKCS#1). Any other kind of key is an error.
    pub fn new(der: &PrivateKeyDer<'_>) -> Result<Self, String> {
        let key = match der {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => return Err("not an RSA key".into()),
        }
        .map_err(|e| format!("not a usable RSA key: {e}"))?;
        let public_key = key
            .public_key()
            .as_der()
            .map_err(|e| format!("cannot encode the RSA public key: {e}"))
            .map(|der: PublicKeyX509Der<'static>| {
                SubjectPublicKeyInfoDer::from(der.as_ref().to_vec())
            })?;
        Ok(Self {
            key: Arc::new(key),
            public_key,
        })
    }
}

impl SigningKey for RsaSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let (scheme, encoding) = SCHEMES
            .iter()
            .find(|(scheme, _)| offered.contains(scheme))?;
        Some(Box::new(RsaSigner {
            key: self.key.clone(),
            scheme: *scheme,
            encoding: *encoding,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(self.public_key.clone())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

// Never prints key material.
impl fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("bits", &(self.key.public_modulus_len() * 8))
            .finish()
    }
}

struct RsaSigner {
    key: Arc<RsaKeyPair>,
    scheme: SignatureScheme,
    encoding: &'static dyn RsaEncoding,
}

impl Signer for RsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(self.encoding, &SystemRandom::new(), message, &mut signature)
            .map_err(|_| rustls::Error::General("RSA signing failed".into()))?;
        Ok(signature)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::sign::any_supported_type;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    fn rsa_2048() -> PrivateKeyDer<'static> {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = key.as_der().unwrap();
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.as_ref().to_vec()))
    }

    // Checked with ring, not with the library that signed.
    fn verifies(
        key: &RsaSigningKey,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match scheme {
            SignatureScheme::RSA_PSS_SHA512 => &ring::signature::RSA_PSS_2048_8192_SHA512,
            SignatureScheme::RSA_PSS_SHA384 => &ring::signature::RSA_PSS_2048_8192_SHA384,
            SignatureScheme::RSA_PSS_SHA256 => &ring::signature::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            other => panic!("not an RSA scheme: {other:?}"),
        };
        let public = key.key.public_key().as_ref();
        ring::signature::UnparsedPublicKey::new(algorithm, public)
            .verify(message, signature)
            .is_ok()
    }

    #[test]
    fn each_offered_scheme_gets_a_signature_that_verifies_only_for_its_message() {
        let key = RsaSigningKey::new(&rsa_2048()).unwrap();
        for (scheme, _) in SCHEMES {
            let signer = key.choose_scheme(&[scheme]).unwrap();
            assert_eq!(signer.scheme(), scheme);
            let signature = signer.sign(b"handshake transcript").unwrap();
            assert_eq!(signature.len(), 256);
            assert!(
                verifies(&key, scheme, b"handshake transcript", &signature),
                "{scheme:?}"
            );
            assert!(
                !verifies(&key, scheme, b"another transcript", &signature),
                "{scheme:?}"
            );
        }
    }

    #[test]
    fn pss_is_preferred_and_non_rsa_offers_get_nothing() {
        let key = RsaSigningKey::new(&rsa_2048()).unwrap();
        let offered = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        assert_eq!(
            key.choose_scheme(&offered).unwrap().scheme(),
            SignatureScheme::RSA_PSS_SHA256
        );
        assert!(key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ED25519
            ])
            .is_none());
    }

    #[test]
    fn the_public_key_is_the_one_ring_derives_and_debug_shows_no_key_material() {
        let der = rsa_2048();
        let key = RsaSigningKey::new(&der).unwrap();
        let ring_key = any_supported_type(&der).unwrap();
        assert_eq!(key.public_key(), ring_key.public_key());
        assert_eq!(key.algorithm(), SignatureAlgorithm::RSA);
        assert_eq!(format!("{key:?}"), "RsaSigningKey { bits: 2048 }");
    }

    #[test]
    fn a_key_that_is_not_rsa_is_refused() {
        let ec = rcgen::KeyPair::generate().unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ec.serialize_der()));
        assert_eq!(
            RsaSigningKey::new(&der).unwrap_err().split(':').next(),
            Some("not a usable RSA key")
        );
    }
}
