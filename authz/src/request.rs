//! What a caller asks: who (principal), what (resource), which action, and in which context.
//!
//! Parsing goes through `serde_path_to_error`, so a malformed request is answered with the exact
//! field at fault (`principal.roles[1]: invalid type: integer, expected a string`), never with a
//! silent deny.

use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};

/// One authorization question.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub principal: Principal,
    pub resource: Resource,
    pub action: String,
    #[serde(default)]
    pub context: RequestContext,
}

/// Many resource/action pairs for one principal in one context (`/authorize/batch`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub principal: Principal,
    #[serde(default)]
    pub context: RequestContext,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub resource: Resource,
    pub action: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub attributes: Map<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub attributes: Map<String, Json>,
}

/// The circumstances of the request. `ip` and `time` are typed (policies compare them with
/// helpers); any other key is passed to conditions as it is, as `context.<key>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RequestContext {
    /// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, how a dual-stack socket reports an IPv4
    /// client) are read as the IPv4 address they carry, so that IPv4 ranges in policies see them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "canonical_ip"
    )]
    pub ip: Option<IpAddr>,
    /// RFC 3339. Absent: the time of the decision. Policy tests freeze it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_option"
    )]
    pub time: Option<DateTime<FixedOffset>>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// `DateTime<FixedOffset>`'s `Serialize`, written as one string. chrono's own `Serialize` hands
/// its formatter to `collect_str`, which serde_json escapes one character at a time (7.5 % of a
/// logged decision); `to_rfc3339_opts` with these options is the same text (chrono's
/// `write_rfc3339` behind both), formatted first and escaped once.
pub(crate) fn rfc3339<S: Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn rfc3339_option<S: Serializer>(
    t: &Option<DateTime<FixedOffset>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

fn canonical_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    Ok(Option::<IpAddr>::deserialize(d)?.map(|ip| ip.to_canonical()))
}

/// A request that cannot be evaluated, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    /// Dotted path such as `principal.roles[1]`; `body` when the JSON itself is broken.
    pub field: String,
    pub message: String,
}

impl InvalidRequest {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a JSON body into `T`, naming the field at fault when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, InvalidRequest> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let top = field == "." || field == "?";
        let field = if inner.is_syntax() || inner.is_eof() {
            // Broken JSON is the body's fault, wherever the parser stopped.
            "body".to_string()
        } else if let Some(missing) = missing_field(&inner.to_string()) {
            // serde names a missing field in the message; the path stops at its parent.
            if top {
                missing
            } else {
                format!("{field}.{missing}")
            }
        } else if top {
            "body".to_string()
        } else {
            field
        };
        InvalidRequest::new(field, strip_position(&inner.to_string()))
    })?;
    de.end()
        .map_err(|e| InvalidRequest::new("body", strip_position(&e.to_string())))?;
    Ok(value)
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// serde_json ends messages with "at line 1 column 57": noise for a one-line JSON body.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

impl Principal {
    /// Fields serde cannot check: required strings must not be empty.
    pub fn validate(&self, at: &str) -> Result<(), InvalidRequest> {
        if self.sub.trim().is_empty() {
            return Err(InvalidRequest::new(
                format!("{at}.sub"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

impl Resource {
    pub fn validate(&self, at: &str) -> Result<(), InvalidRequest> {
        if self.kind.trim().is_empty() {
            return Err(InvalidRequest::new(
                format!("{at}.type"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn validate_action(action: &str, at: &str) -> Result<(), InvalidRequest> {
    if action.trim().is_empty() {
        return Err(InvalidRequest::new(at, "must not be empty"));
    }
    Ok(())
}

impl Request {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        self.principal.validate("principal")?;
        self.resource.validate("resource")?;
        validate_action(&self.action, "action")
    }
}

impl BatchRequest {
    pub fn validate(&self, max_checks: usize) -> Result<(), InvalidRequest> {
        self.principal.validate("principal")?;
        if self.checks.is_empty() {
            return Err(InvalidRequest::new(
                "checks",
                "must list at least one check",
            ));
        }
        if self.checks.len() > max_checks {
            return Err(InvalidRequest::new(
                "checks",
                format!(
                    "{} checks, at most {max_checks} per batch",
                    self.checks.len()
                ),
            ));
        }
        for (i, check) in self.checks.iter().enumerate() {
            check.resource.validate(&format!("checks[{i}].resource"))?;
            validate_action(&check.action, &format!("checks[{i}].action"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn error(body: &str) -> InvalidRequest {
        match parse_json::<Request>(body.as_bytes()).and_then(|r| r.validate().map(|()| r)) {
            Ok(r) => panic!("accepted {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_field() {
        let ok = r#"{"principal":{"sub":"a"},"resource":{"type":"document"},"action":"view"}"#;
        assert!(parse_json::<Request>(ok.as_bytes()).is_ok());
        let cases = [
            (
                r#"{"principal":{"sub":"a","roles":["x",1]},"resource":{"type":"d"},"action":"v"}"#,
                "principal.roles[1]",
            ),
            (r#"{"resource":{"type":"d"},"action":"v"}"#, "principal"),
            (
                r#"{"principal":{"sub":"a"},"resource":{"type":"d"}}"#,
                "action",
            ),
            (
                r#"{"principal":{},"resource":{"type":"d"},"action":"v"}"#,
                "principal.sub",
            ),
            (
                r#"{"principal":{"sub":""},"resource":{"type":"d"},"action":"v"}"#,
                "principal.sub",
            ),
            (
                r#"{"principal":{"sub":"a"},"resource":{"type":"d"},"action":"v","context":{"ip":"nope"}}"#,
                "context.ip",
            ),
            (
                r#"{"principal":{"sub":"a"},"resource":{"type":"d"},"action":"v","context":{"time":"yesterday"}}"#,
                "context.time",
            ),
            (
                r#"{"principal":{"sub":"a","role":["x"]},"resource":{"type":"d"},"action":"v"}"#,
                "principal.role",
            ),
            (
                r#"{"principal":{"sub":"a"},"resource":{"type":"d"},"action":"v""#,
                "body",
            ),
            (
                r#"{"principal":{"sub":"a"},"resource":{"type":"d"},"action":"v"} trailing"#,
                "body",
            ),
        ];
        for (body, field) in cases {
            let e = error(body);
            assert_eq!(e.field, field, "{body}: {e}");
            assert!(!e.message.contains("line 1"), "{e}");
        }
        assert!(error(
            r#"{"principal":{"sub":"a","role":["x"]},"resource":{"type":"d"},"action":"v"}"#
        )
        .message
        .contains("role"));
    }

    #[test]
    fn rfc3339_text_is_what_chrono_serialises() {
        let mut times: Vec<DateTime<FixedOffset>> = [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00+00:00",
            "2026-11-23T10:00:00-00:00",
            "2026-11-23T10:00:00.123+14:00",
            "2026-11-23T10:00:00.120-23:59",
            "2026-11-23T10:00:00.123456-00:30",
            "2026-11-23T10:00:00.000001+01:00",
            "2026-11-23T10:00:00.123456789+05:45",
            "2026-11-23T10:00:00.100000001Z",
            "2026-11-23T10:00:00.999999999+09:30",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "0999-02-28T01:02:03+01:00",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5+01:00",
        ]
        .iter()
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect();
        // Offsets with seconds (not from RFC 3339 text, but a `FixedOffset` can hold them),
        // and years chrono writes with a sign.
        let base = times[3];
        for secs in [
            1, 29, 30, 31, 59, -1, -29, -30, -31, 86_399, -86_399, 3_599, -3_630,
        ] {
            if let Some(offset) = FixedOffset::east_opt(secs) {
                times.push(base.with_timezone(&offset));
            }
        }
        for year in [-1, -10_000, 10_000, 12_345] {
            if let Some(t) = base.with_year(year) {
                times.push(t);
            }
        }
        // Many instants and offsets, with every kind of fraction.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 253_402_300_800) as i64 - 62_135_596_800 / 2;
            let nanos = match x >> 60 {
                0..=3 => 0,
                4..=7 => (x >> 20) as u32 % 1000 * 1_000_000,
                8..=11 => (x >> 20) as u32 % 1_000_000 * 1000,
                _ => (x >> 20) as u32 % 1_000_000_000,
            };
            let offset = ((x >> 40) % (2 * 86_399)) as i32 - 86_399;
            let offset = if x & 1 == 0 { offset / 60 * 60 } else { offset };
            if let (Some(utc), Some(offset)) = (
                DateTime::from_timestamp(secs, nanos),
                FixedOffset::east_opt(offset),
            ) {
                times.push(utc.with_timezone(&offset));
            }
        }
        for t in &times {
            let mut ours = Vec::new();
            rfc3339(t, &mut serde_json::Serializer::new(&mut ours))
                .unwrap_or_else(|e| panic!("{e}"));
            let chrono = serde_json::to_string(t).unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&ours), chrono, "{t:?}");
        }
    }

    #[test]
    fn an_ipv4_mapped_context_ip_is_read_as_the_ipv4_address() {
        let ip_of = |ip: &str| {
            let body = serde_json::json!({
                "principal": {"sub": "a"}, "resource": {"type": "d"}, "action": "v",
                "context": {"ip": ip},
            });
            parse_json::<Request>(body.to_string().as_bytes())
                .map(|r| r.context.ip.map(|ip| ip.to_string()))
        };
        assert_eq!(ip_of("::ffff:10.1.2.3"), Ok(Some("10.1.2.3".into())));
        assert_eq!(ip_of("::FFFF:a01:203"), Ok(Some("10.1.2.3".into())));
        // Other IPv6 addresses are kept as they are.
        assert_eq!(
            ip_of("2001:db8::a01:203"),
            Ok(Some("2001:db8::a01:203".into()))
        );
        assert_eq!(ip_of("::a01:203"), Ok(Some("::a01:203".into())));
        let no_ip = br#"{"principal":{"sub":"a"},"resource":{"type":"d"},"action":"v","context":{"ip":null}}"#;
        assert_eq!(parse_json::<Request>(no_ip).map(|r| r.context.ip), Ok(None));
    }
}
