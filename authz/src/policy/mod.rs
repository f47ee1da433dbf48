//! A policy set: every policy file of a directory, checked and compiled into the shape the
//! evaluator reads (rules indexed by resource type, deny rules apart from allow rules, derived
//! roles numbered, CEL compiled, one root CEL context).

mod context_reads;
mod file;
mod load;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

pub use context_reads::ContextReads;
pub use file::{Condition, Effect};
pub use load::{is_test_file, load, yaml_files};

/// Compiled policies. Immutable; a reload builds a new one.
pub struct PolicySet {
    pub policies: Vec<PolicyInfo>,
    /// Rules for each resource type a policy names: its own policies' rules first, then the
    /// `"*"` policies' rules (see [`KindRules`]).
    by_kind: HashMap<String, KindRules>,
    /// Rules for types no policy names: the `"*"` policies alone.
    any_kind: KindRules,
    pub(crate) derived: Vec<DerivedRole>,
    pub(crate) root: cel::Context<'static, 'static>,
    /// The `context` fields the conditions can read: what a decision cache must key on.
    pub context_reads: ContextReads,
    /// SHA-256 over the policy files' paths and contents: the set's version.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub directory: PathBuf,
}

/// What `GET /authz/v1/policies` lists.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub version: String,
    pub resource: String,
    pub file: String,
    pub rules: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The rules that may decide for one resource type, deny apart from allow. In each list the
/// type's own policies' rules come first, then the `"*"` policies' rules; within each group,
/// policies in load order (files sorted by path) and rules as written. The evaluator takes the
/// first deny rule that applies, else the first allow rule that applies: that order is which
/// rule an answer names.
#[derive(Default)]
pub(crate) struct KindRules {
    pub deny: Vec<Arc<Rule>>,
    pub allow: Vec<Arc<Rule>>,
}

impl KindRules {
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }
}

pub(crate) struct Rule {
    pub policy: Arc<str>,
    pub policy_version: Arc<str>,
    pub name: Arc<str>,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub any_action: bool,
    pub roles: Vec<String>,
    pub any_role: bool,
    /// Indexes into `PolicySet::derived`.
    pub derived: Vec<usize>,
    pub condition: Option<Condition>,
    /// What a decision by this rule says (`allowed by rule "r" of policy "p"`).
    pub reason: Box<str>,
}

impl Rule {
    pub fn covers(&self, action: &str) -> bool {
        self.any_action || self.actions.iter().any(|a| a == action)
    }

    /// The first of the principal's roles this rule names.
    pub fn role_of<'r>(&self, roles: &'r [String]) -> Option<&'r str> {
        if self.any_role {
            return Some("*");
        }
        roles
            .iter()
            .find(|r| self.roles.contains(r))
            .map(String::as_str)
    }
}

pub(crate) struct DerivedRole {
    pub name: String,
    pub parent_roles: Vec<String>,
    pub any_parent: bool,
    pub condition: Option<Condition>,
}

impl DerivedRole {
    pub fn has_parent(&self, roles: &[String]) -> bool {
        self.any_parent || roles.iter().any(|r| self.parent_roles.contains(r))
    }
}

impl PolicySet {
    pub(crate) fn rules_for(&self, kind: &str) -> &KindRules {
        self.by_kind.get(kind).unwrap_or(&self.any_kind)
    }

    /// The set's short version: the first 12 hex digits of its hash.
    pub fn version(&self) -> &str {
        &self.hash[..12]
    }
}
