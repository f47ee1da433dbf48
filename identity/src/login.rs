//! Password logins (the login form and the password grant) under the lockout rules and the
//! bound on concurrent argon2 checks.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Event;
use crate::config::{Settings, User};
use crate::hash_gate::Busy;
use crate::issuer::Issuer;
use crate::lockout::{Account, FailureOutcome};
use crate::metrics;
use crate::request::Request;

/// Why a password login failed.
pub enum LoginFailure {
    Invalid,
    Locked(Duration),
    /// Every argon2 check is taken and the queue is full: nothing was checked, nothing counted;
    /// try again after the duration.
    Busy(Duration),
    /// The state store could not be asked or told: nothing is granted without it.
    Unavailable,
}

/// Checks a user's password under the lockout rules, and audits the attempt either way.
pub async fn check_password(
    issuer: &Issuer,
    settings: &Settings,
    req: &Request,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Arc<User>, LoginFailure> {
    let audit = |outcome: &str, reason: Option<&str>| {
        issuer.audit.record(Event {
            event: "login",
            outcome,
            user: Some(username),
            client: Some(client_id),
            ip: req.peer_ip.map(|ip| ip.to_string()),
            user_agent: req.user_agent(),
            reason,
            ..Event::default()
        })
    };
    let lockout = (&settings.lockout).into();
    let account = Account::User(username);
    let locked_out = |wait| {
        metrics::LOGIN_FAILURES
            .with_label_values(&["locked_out"])
            .inc();
        audit("failure", Some("locked_out"));
        LoginFailure::Locked(wait)
    };
    let shared = match issuer.shared_lock(account).await {
        Ok(Ok(shared)) => shared,
        Ok(Err(wait)) => return Err(locked_out(wait)),
        Err(_) => return Err(LoginFailure::Unavailable),
    };
    let mut attempt = issuer
        .lockout
        .begin(account, req.peer_ip, lockout)
        .map_err(locked_out)?;
    // Refused for load, the attempt is dropped before its check: it counts for nothing.
    let permit = issuer
        .hashing
        .admit()
        .await
        .map_err(|Busy| LoginFailure::Busy(Busy::RETRY_AFTER))?;
    attempt.checking();
    let user = settings.users.get(username).cloned();
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = permit.verify(password.to_string(), phc).await;
    let succeeded = user.is_some() && ok;
    let shared_locked = issuer
        .record_shared(account, shared, succeeded, lockout)
        .await;
    match (user, ok) {
        (Some(user), true) => {
            attempt.succeeded();
            if shared_locked.is_err() {
                return Err(LoginFailure::Unavailable);
            }
            // Disabled by an operator: the right password, and still no session or token.
            match issuer.state.is_disabled(&user.username).await {
                Ok(false) => {}
                Ok(true) => {
                    metrics::LOGIN_FAILURES
                        .with_label_values(&["disabled"])
                        .inc();
                    audit("failure", Some("disabled"));
                    return Err(LoginFailure::Invalid);
                }
                Err(_) => return Err(LoginFailure::Unavailable),
            }
            audit("success", None);
            Ok(user)
        }
        (user, _) => {
            let reason = if user.is_some() {
                "bad_password"
            } else {
                "unknown_user"
            };
            metrics::LOGIN_FAILURES.with_label_values(&[reason]).inc();
            audit("failure", Some(reason));
            let locally_locked = attempt.failed() == FailureOutcome::Locked;
            if locally_locked || matches!(shared_locked, Ok(true)) {
                metrics::LOCKOUTS.inc();
                issuer.audit.record(Event {
                    user: Some(username),
                    reason: Some("too many failed logins"),
                    ..Event::of(req, "lockout", "locked")
                });
            }
            Err(LoginFailure::Invalid)
        }
    }
}
