//! Password logins (the login form and the password grant) under the lockout rules.

use std::sync::Arc;

use crate::audit::{AuditLog, Event};
use crate::config::{Settings, User};
use crate::lockout::{FailureOutcome, Lockout};
use crate::metrics;
use crate::password;
use crate::request::Request;

/// Why a password login failed.
pub enum LoginFailure {
    Invalid,
    Locked(std::time::Duration),
}

/// Checks a user's password under the lockout rules, and audits the attempt either way.
pub async fn check_password(
    lockout: &Lockout,
    audit_log: &AuditLog,
    settings: &Settings,
    req: &Request,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Arc<User>, LoginFailure> {
    let audit = |outcome: &str, reason: Option<&str>| {
        audit_log.record(Event {
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
    let attempt = match lockout.begin(username, req.peer_ip, (&settings.lockout).into()) {
        Ok(a) => a,
        Err(wait) => {
            metrics::LOGIN_FAILURES
                .with_label_values(&["locked_out"])
                .inc();
            audit("failure", Some("locked_out"));
            return Err(LoginFailure::Locked(wait));
        }
    };
    let user = settings.users.get(username).cloned();
    let secret = password.to_string();
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify(&secret, &phc),
        None => {
            password::verify_dummy(&secret);
            false
        }
    })
    .await
    .unwrap_or(false);
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
                audit_log.record(Event {
                    user: Some(username),
                    reason: Some("too many failed logins"),
                    ..Event::of(req, "lockout", "locked")
                });
            }
            Err(LoginFailure::Invalid)
        }
    }
}
