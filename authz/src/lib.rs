//! gatehouse-authz: the policy decision service.
//!
//! Skeleton only: policies, CEL conditions and `/authz/v1/authorize` are issue #4. The crate exists
//! now so the workspace layout, CI and the gateway's future in-process embedding are fixed.

/// What this service is, for `--version` output and the gateway's `/config`.
pub const SERVICE: &str = "gatehouse-authz";
