//! What the upstream is told about the client's identity: only what the gateway verified.
//!
//! First every client-sent header in the identity namespace (`X-User-*`, `X-Jwt-*`, … by
//! default; any case, every copy) is removed, on every route, so a client can never write its
//! own identity. Then, on a verified request, the claims are injected: `X-User-ID` ← `sub`,
//! `X-User-Roles` ← roles, `X-Jwt-Email` ← `email`, plus the route's own mappings.
//!
//! Encoding of a claim value: a string as it is; a number or boolean as JSON text; an array as
//! its elements (each encoded so) joined by `,`; an object as compact JSON. Then every byte that
//! is not visible ASCII or space, and `%` itself, is percent-encoded (UTF-8), so no claim can
//! smuggle a control character into a header and a backend decodes every value the same way. A
//! plain value passes unchanged; a missing claim sends no header.

use std::borrow::Cow;
use std::fmt::Write;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::VerifiedIdentity;

/// Where a header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    Subject,
    /// The issuer's roles claim.
    Roles,
    Named(String),
}

/// `auth.identity_namespace`: header-name prefixes only the gateway may send upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityNamespace(Vec<String>);

impl IdentityNamespace {
    pub fn new(prefixes: &[String]) -> IdentityNamespace {
        IdentityNamespace(prefixes.iter().map(|p| p.to_ascii_lowercase()).collect())
    }

    /// Whether a header name (any case; any text, as written in a config) lies in it.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|p| {
            name.as_bytes()
                .get(..p.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(p.as_bytes()))
        })
    }
}

/// A route's identity headers, compiled.
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub namespace: IdentityNamespace,
    pub mappings: Vec<(HeaderName, ClaimSource)>,
}

impl IdentityHeaders {
    /// The default mappings followed by the route's own (`header → claim`).
    pub fn new(namespace: &IdentityNamespace, extra: Vec<(HeaderName, String)>) -> IdentityHeaders {
        let mut mappings = vec![
            (HeaderName::from_static("x-user-id"), ClaimSource::Subject),
            (HeaderName::from_static("x-user-roles"), ClaimSource::Roles),
            (
                HeaderName::from_static("x-jwt-email"),
                ClaimSource::Named("email".into()),
            ),
        ];
        for (header, claim) in extra {
            mappings.retain(|(h, _)| *h != header);
            mappings.push((header, ClaimSource::Named(claim)));
        }
        IdentityHeaders {
            namespace: namespace.clone(),
            mappings,
        }
    }

    /// Removes every header in the namespace, all copies (names are stored lower case).
    pub fn strip(&self, upstream: &mut HeaderMap) {
        let forged: Vec<HeaderName> = upstream
            .keys()
            .filter(|name| self.namespace.contains(name.as_str()))
            .cloned()
            .collect();
        for name in &forged {
            upstream.remove(name);
        }
    }

    /// Injects the verified claims.
    pub fn inject(&self, upstream: &mut HeaderMap, identity: &VerifiedIdentity) {
        for (header, source) in &self.mappings {
            let value: Option<Cow<'_, str>> = match source {
                ClaimSource::Subject => Some(Cow::Borrowed(&identity.subject)),
                ClaimSource::Roles => {
                    (!identity.roles.is_empty()).then(|| Cow::Owned(identity.roles.join(",")))
                }
                ClaimSource::Named(claim) => identity.claims.get(claim).map(encode),
            };
            if let Some(value) = value {
                let value = percent_encoded(&value);
                // Always valid: only visible ASCII and space remain.
                if let Ok(value) = HeaderValue::from_str(&value) {
                    upstream.insert(header.clone(), value);
                }
            }
        }
    }
}

/// A claim value as header text, before percent-encoding.
fn encode(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) => Cow::Owned(
            items
                .iter()
                .map(|v| match v {
                    Value::Array(_) => Cow::Owned(v.to_string()),
                    other => encode(other),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Cow::Owned(other.to_string()),
    }
}

fn percent_encoded(text: &str) -> Cow<'_, str> {
    let plain = |b: u8| b != b'%' && (0x20..=0x7e).contains(&b);
    if text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn namespace() -> IdentityNamespace {
        IdentityNamespace::new(&["X-User-", "X-Jwt-", "X-Auth-", "X-Gatehouse-"].map(String::from))
    }

    #[test]
    fn the_namespace_matches_prefixes_in_any_case_and_any_text() {
        let ns = namespace();
        assert!(ns.contains("x-user-id") && ns.contains("X-USER-ROLES"));
        assert!(!ns.contains("x-username") && !ns.contains("x-use"));
        assert!(
            !ns.contains("é-user-id-with-non-ascii"),
            "no panic on a char boundary"
        );
    }

    fn identity(claims: Value) -> VerifiedIdentity {
        VerifiedIdentity {
            token: Arc::from("t"),
            issuer: Arc::from("demo"),
            subject: "alice".into(),
            scopes: vec![],
            roles: vec!["admin".into(), "editor".into()],
            expires_at: 0,
            claims: claims.as_object().cloned().unwrap(),
        }
    }

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut r = HeaderMap::new();
        for (n, v) in headers {
            r.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn values(r: &HeaderMap, name: &str) -> Vec<String> {
        r.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_copy_of_every_namespaced_header_is_removed() {
        let headers = IdentityHeaders::new(&namespace(), vec![]);
        let mut r = request(&[
            ("X-User-ID", "admin"),
            ("x-user-id", "root"),
            ("X-USER-ROLES", "admin"),
            ("x-jwt-email", "a@b"),
            ("X-Auth-Anything", "1"),
            ("X-Gatehouse-Assertion", "forged"),
            ("X-Request-Color", "blue"),
        ]);
        headers.strip(&mut r);
        let left: Vec<&str> = r.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-request-color"]);
    }

    #[test]
    fn verified_claims_are_injected_once() {
        let headers = IdentityHeaders::new(
            &namespace(),
            vec![(
                HeaderName::from_static("x-user-department"),
                "department".into(),
            )],
        );
        let mut r = request(&[("x-user-id", "forged")]);
        headers.strip(&mut r);
        let id = identity(json!({"email": "alice@example.com", "department": "eng"}));
        headers.inject(&mut r, &id);
        assert_eq!(values(&r, "x-user-id"), ["alice"]);
        assert_eq!(values(&r, "x-user-roles"), ["admin,editor"]);
        assert_eq!(values(&r, "x-jwt-email"), ["alice@example.com"]);
        assert_eq!(values(&r, "x-user-department"), ["eng"]);
    }

    #[test]
    fn values_are_encoded_by_the_documented_rule() {
        assert_eq!(encode(&json!(42)), "42");
        assert_eq!(encode(&json!(true)), "true");
        assert_eq!(encode(&json!(["a", 1, ["x"]])), r#"a,1,["x"]"#);
        assert_eq!(encode(&json!({"k": "v"})), r#"{"k":"v"}"#);
        assert_eq!(percent_encoded("plain value"), "plain value");
        assert_eq!(percent_encoded("José"), "Jos%C3%A9");
        assert_eq!(percent_encoded("a\r\nX-Evil: 1"), "a%0D%0AX-Evil: 1");
        assert_eq!(percent_encoded("50%"), "50%25");
    }

    #[test]
    fn a_missing_claim_sends_no_header() {
        let headers = IdentityHeaders::new(&namespace(), vec![]);
        let mut r = request(&[]);
        headers.inject(&mut r, &identity(json!({})));
        assert!(r.get("x-jwt-email").is_none());
        assert_eq!(values(&r, "x-user-id"), ["alice"]);
    }
}
