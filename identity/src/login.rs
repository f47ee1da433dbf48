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
    let mut attempt = match issuer
        .lockout
        .begin(Account::User(username), req.peer_ip, lockout)
    {
        Ok(a) => a,
        Err(wait) => {
            metrics::LOGIN_FAILURES
                .with_label_values(&["locked_out"])
                .inc();
            audit("failure", Some("locked_out"));
            return Err(LoginFailure::Locked(wait));
        }
    };
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
    match (user, ok) {
        (Some(user), true) => {
            attempt.succeeded();
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
            if attempt.failed() == FailureOutcome::Locked {
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
