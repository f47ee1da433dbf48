//! `auth.issuers.<name>.revocations`: the issuer's revocation feed, its client secret (from a
//! file or an environment variable, never from the YAML itself) and how it is polled. The feed
//! is carried across reloads, set and position included, while its URL, client id, secret and CA
//! stay the same; poll interval and timeout are retuned in place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::key_path::KeyPath;
use super::Compiler;
use crate::config::file::RevocationFeedSpec;
use crate::revocations::{ClientSecret, FeedSettings, FeedTuning, RevocationFeed};
use crate::route_policy::IssuerRevocations;

const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `revocations:` checked, before its feed is built or taken over from the previous snapshot.
pub(super) struct FeedPlan {
    settings: FeedSettings,
    tuning: FeedTuning,
    fingerprint: String,
}

impl Compiler {
    /// Checks `spec` (at `at`, the `revocations` key) and reads the secret. `ca_pem` is the
    /// issuer's `ca_file`, which the feed trusts too (the issuer serves it).
    pub(super) fn revocation_feed_plan(
        &mut self,
        file: &Path,
        at: &KeyPath,
        name: &str,
        spec: &RevocationFeedSpec,
        leeway: u64,
        ca_pem: Option<&[u8]>,
    ) -> Option<FeedPlan> {
        let before = self.errors.len();
        self.check_url(file, &at.field("url"), &spec.url);
        let id = &spec.client_id;
        if id.is_empty() || id.contains(':') || id.chars().any(char::is_control) {
            // RFC 7617 §2: the user-id of Basic authentication cannot hold a colon.
            let msg =
                format!("{id:?} is not a client id (non-empty, no ':' or control characters)");
            self.error(file, at.field("client_id"), msg, None);
        }
        let secret = self.client_secret(file, at, spec);
        let poll = spec.poll_interval;
        if !(MIN_POLL_INTERVAL..=MAX_POLL_INTERVAL).contains(&poll) {
            let msg = format!("{} is outside 100ms..60s", humantime::format_duration(poll));
            self.error(file, at.field("poll_interval"), msg, None);
        }
        if spec.timeout.is_zero() || spec.timeout > MAX_TIMEOUT {
            let msg = "must be longer than 0s and at most 60s";
            self.error(file, at.field("timeout"), msg, None);
        }
        let secret = secret?;
        if self.errors.len() > before {
            return None;
        }
        let mut fingerprint = Sha256::new();
        for part in [
            spec.url.as_bytes(),
            id.as_bytes(),
            secret.expose().as_bytes(),
        ] {
            fingerprint.update((part.len() as u64).to_le_bytes());
            fingerprint.update(part);
        }
        if let Some(pem) = ca_pem {
            fingerprint.update(pem);
        }
        Some(FeedPlan {
            settings: FeedSettings {
                name: name.into(),
                url: spec.url.clone(),
                client_id: id.clone(),
                client_secret: secret,
            },
            tuning: FeedTuning {
                poll_interval: poll,
                timeout: spec.timeout,
                leeway,
            },
            fingerprint: hex::encode(fingerprint.finalize()),
        })
    }

    /// Exactly one of `client_secret_file` and `client_secret_env`, non-empty once trimmed.
    fn client_secret(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RevocationFeedSpec,
    ) -> Option<ClientSecret> {
        let (text, key) = match (&spec.client_secret_file, &spec.client_secret_env) {
            (Some(_), Some(_)) => {
                let msg = "give client_secret_file or client_secret_env, not both";
                self.error(file, at, msg, None);
                return None;
            }
            (None, None) => {
                let msg = "the client secret is missing";
                let hint =
                    Some("client_secret_file: <path> or client_secret_env: <variable>".into());
                self.error(file, at, msg, hint);
                return None;
            }
            (Some(path), None) => {
                let at = at.field("client_secret_file");
                let path = self.resolve(path);
                // Read like every config file: watched, and part of the snapshot hash, so a
                // rotated secret reloads (and restarts the feed) by itself.
                match self.read(&path) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => (text, at),
                        Err(_) => {
                            let msg = format!("{}: not UTF-8 text", path.display());
                            self.error(file, at, msg, None);
                            return None;
                        }
                    },
                    Err(e) => {
                        let msg = format!("cannot read {}: {e}", path.display());
                        self.error(file, at, msg, None);
                        return None;
                    }
                }
            }
            (None, Some(variable)) => {
                let at = at.field("client_secret_env");
                match std::env::var(variable) {
                    Ok(text) => (text, at),
                    Err(e) => {
                        let msg = format!("environment variable {variable:?}: {e}");
                        self.error(file, at, msg, None);
                        return None;
                    }
                }
            }
        };
        let secret = text.trim();
        if secret.is_empty() {
            self.error(file, key, "the client secret is empty", None);
            return None;
        }
        Some(ClientSecret::new(secret.to_string()))
    }

    /// The feed `plan` describes: the previous snapshot's when it is the same feed, else a new one
    /// (its follower starts when the snapshot is swapped in).
    pub(super) fn revocation_feed(
        &mut self,
        file: &Path,
        at: &KeyPath,
        plan: FeedPlan,
        ca: Option<Vec<reqwest::Certificate>>,
        previous: Option<&IssuerRevocations>,
    ) -> Option<IssuerRevocations> {
        let FeedPlan {
            settings,
            tuning,
            fingerprint,
        } = plan;
        if let Some(previous) = previous.filter(|p| p.feed.fingerprint == fingerprint) {
            return Some(IssuerRevocations {
                feed: previous.feed.clone(),
                tuning,
            });
        }
        let client = match feed_client(ca) {
            Ok(client) => client,
            Err(e) => {
                self.error(file, at, format!("cannot build the HTTP client: {e}"), None);
                return None;
            }
        };
        let feed = RevocationFeed::new(settings, tuning, client, fingerprint);
        Some(IssuerRevocations {
            feed: Arc::new(feed),
            tuning,
        })
    }
}

/// The poll timeout is set per request (it can change without a new client). No redirects: the
/// credentials go to the configured URL only.
fn feed_client(ca: Option<Vec<reqwest::Certificate>>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    if let Some(certs) = ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}
