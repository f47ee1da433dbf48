//! What a policy author writes: the YAML shapes of `conf/policies/*.yaml`.
//!
//! Unknown keys are errors. CEL is compiled while the file is read, so a condition that does not
//! compile is reported by serde_yaml with its key path, line and column.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::condition::Expression;

/// One policy file holds either a resource policy or a set of derived roles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub resource_policy: Option<ResourcePolicySpec>,
    #[serde(default)]
    pub derived_roles: Option<DerivedRolesSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcePolicySpec {
    /// The policy's name in answers, logs and metrics.
    pub id: String,
    /// The policy's revision, reported with every decision it makes. Quote it: `"2026-11-01"`.
    pub version: String,
    /// The resource type (`resource.type` in requests) it governs; `"*"` for every type.
    pub resource: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Names of `derived_roles` sets whose roles the rules may use.
    #[serde(default)]
    pub import_derived_roles: Vec<String>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the policy; answers name the deciding rule by it.
    pub name: String,
    /// Action names; `"*"` is every action.
    pub actions: Vec<String>,
    pub effect: Effect,
    /// The rule applies to a principal holding one of these roles; `"*"` is everyone.
    #[serde(default)]
    pub roles: Vec<String>,
    /// ... or one of these derived roles (from an imported set).
    #[serde(default)]
    pub derived_roles: Vec<String>,
    #[serde(default)]
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedRolesSpec {
    /// Policies import the set by this name.
    pub name: String,
    pub definitions: Vec<DerivedRoleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedRoleSpec {
    pub name: String,
    /// The principal must hold one of these roles (`"*"`: any principal) ...
    pub parent_roles: Vec<String>,
    /// ... and, if given, the condition must hold.
    #[serde(default)]
    pub when: Option<Condition>,
}

/// A condition: one CEL expression, or `all:` / `any:` / `none:` of conditions.
#[derive(Debug, Clone)]
pub enum Condition {
    Expr(Expression),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    None(Vec<Condition>),
}

// Written by hand rather than `#[serde(untagged)]`: untagged enums swallow the inner error,
// which here is the CEL compiler's message the author needs.
impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ConditionVisitor;
        impl<'de> Visitor<'de> for ConditionVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CEL expression, or a map with one key: all, any or none")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Condition, E> {
                Expression::compile(s)
                    .map(Condition::Expr)
                    .map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Condition, E> {
                self.visit_str(if b { "true" } else { "false" })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("empty condition: use all, any or none"));
                };
                let parts: Vec<Condition> = map.next_value()?;
                if parts.is_empty() {
                    return Err(de::Error::custom(format!("`{key}` lists no conditions")));
                }
                let condition = match key.as_str() {
                    "all" => Condition::All(parts),
                    "any" => Condition::Any(parts),
                    "none" => Condition::None(parts),
                    other => return Err(de::Error::unknown_field(other, &["all", "any", "none"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a condition has one key (all, any or none), found `{key}` and `{extra}`"
                    )));
                }
                Ok(condition)
            }
        }
        d.deserialize_any(ConditionVisitor)
    }
}
