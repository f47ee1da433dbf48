//! gatehouse-identity: the token issuer (OIDC-style IdP).
//!
//! Skeleton only: the issuer (keys, JWKS, token endpoint, SSO) is issue #3. The crate exists now so
//! the workspace layout, CI and the gateway's future in-process embedding are fixed from the start.

/// What this service is, for `--version` output and the gateway's `/config`.
pub const SERVICE: &str = "gatehouse-identity";
