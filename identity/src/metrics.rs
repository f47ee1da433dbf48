//! Prometheus metrics, registered in the default registry that `/metrics` on the admin listener
//! serves.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

pub static TOKENS_ISSUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_identity_tokens_issued_total",
        "Access tokens issued, by grant type and client.",
        &["grant", "client"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static TOKEN_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_identity_token_errors_total",
        "Token requests refused, by RFC 6749 error code.",
        &["error"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static LOGIN_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_identity_login_failures_total",
        "Failed logins, by reason.",
        &["reason"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static LOCKOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_identity_lockouts_total",
        "Times a user or an IP address was locked out after repeated failed logins."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static HASH_QUEUE_FULL: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_identity_hash_queue_full_total",
        "Password and client-secret checks refused with 503 because every argon2 check was running and the queue was full (limits.hash_concurrency, limits.hash_queue)."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static HASH_CHECKS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_identity_hash_checks_total",
        "argon2 checks run (passwords and client secrets not already verified, dummy checks for unknown accounts included)."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static ACTIVE_KEYS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_identity_keys",
        "Signing keys published in the JWKS, by state (next signs once JWKS caches have expired; active signs new tokens; retired only verifies).",
        &["state"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static KEY_ROTATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_identity_key_rotations_total",
        "Signing-key rotations (scheduled or on command)."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_identity_config_reloads_total",
        "Reloads of identity.yaml, by result.",
        &["result"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static AUDIT_LOG_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_identity_audit_log_dropped_total",
        "Audit events dropped because the audit-log writer fell behind (its queue was full). Any increase is a hole in the audit trail: alert on it."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_identity_store_errors_total",
        "State-store operations that failed (database unreachable, timed out or refusing), by operation. The request that needed it was answered 503; key upkeep (keys_version, signing_keys, write_signing_keys) retries at the next tick.",
        &["operation"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static STORE_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gatehouse_identity_store_up",
        "1 while the last state-store operation succeeded, 0 after one failed (then /readyz answers 503)."
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub static REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "gatehouse_identity_request_duration_seconds",
        "Request handling time, by endpoint and status code.",
        &["endpoint", "status"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

/// Registers every metric so `/metrics` lists them before the first event.
pub fn init() {
    LazyLock::force(&TOKENS_ISSUED);
    LazyLock::force(&TOKEN_ERRORS);
    LazyLock::force(&LOGIN_FAILURES);
    LazyLock::force(&LOCKOUTS);
    LazyLock::force(&HASH_QUEUE_FULL);
    LazyLock::force(&HASH_CHECKS);
    LazyLock::force(&ACTIVE_KEYS);
    LazyLock::force(&KEY_ROTATIONS);
    LazyLock::force(&CONFIG_RELOADS);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&AUDIT_LOG_DROPPED);
    LazyLock::force(&STORE_ERRORS);
    LazyLock::force(&STORE_UP);
}
