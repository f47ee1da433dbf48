//! How an auth refusal is answered (RFC 6750 §3): the status, the gateway's error code and the
//! `WWW-Authenticate` challenge. Never echoes the token.

use crate::route_policy::AuthOutcome;

use super::respond::Rejection;

const REALM: &str = "gatehouse";

/// The answer for a refused token; `scopes` are the route's required scopes (named in a 403).
pub fn answer(outcome: AuthOutcome, scopes: &[String]) -> (Rejection, Vec<(&'static str, String)>) {
    match outcome {
        // No credentials: no error code (RFC 6750 §3.1).
        AuthOutcome::Missing => (
            Rejection::MissingToken,
            vec![("www-authenticate", format!("Bearer realm=\"{REALM}\""))],
        ),
        AuthOutcome::InsufficientScope => {
            let mut challenge = format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\"",
                outcome.description()
            );
            if !scopes.is_empty() {
                challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
            }
            (
                Rejection::InsufficientScope,
                vec![("www-authenticate", challenge)],
            )
        }
        // Our problem, not the client's: its token may be fine.
        AuthOutcome::NoKeySet | AuthOutcome::RevocationsUnknown => (
            Rejection::AuthUnavailable,
            vec![("retry-after", "1".to_string())],
        ),
        _ => (
            Rejection::InvalidToken,
            vec![(
                "www-authenticate",
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                    outcome.description()
                ),
            )],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        let (r, h) = answer(AuthOutcome::Missing, &[]);
        assert_eq!(
            (r.status(), h[0].1.as_str()),
            (401, "Bearer realm=\"gatehouse\"")
        );
        let (r, h) = answer(AuthOutcome::Expired, &[]);
        assert_eq!(r.status(), 401);
        assert_eq!(
            h[0].1,
            "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"token expired\""
        );
        let (r, h) = answer(AuthOutcome::InsufficientScope, &["a:b".into(), "c".into()]);
        assert_eq!(r.status(), 403);
        assert!(h[0].1.ends_with(", scope=\"a:b c\""));
        assert_eq!(answer(AuthOutcome::NoKeySet, &[]).0.status(), 503);
        let (r, h) = answer(AuthOutcome::Revoked, &[]);
        assert_eq!(r.status(), 401);
        assert_eq!(
            h[0].1,
            "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"the token has been revoked\""
        );
    }
}
