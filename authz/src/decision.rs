//! Evaluation: deny overrides allow, nothing matched is a deny, and every answer names the policy,
//! version and rule that decided it.
//!
//! A condition that fails to evaluate (a missing attribute, a bad IP) is neither true nor false.
//! An allow rule needs a true condition, so it does not apply; a deny rule applies unless its
//! condition is false. Errors therefore always fail closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::condition::{Input, Scope, SharedInput};
use crate::policy::{Condition, Effect, PolicySet, Rule};
use crate::request::{BatchRequest, Principal, Request, RequestContext, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub decision_id: String,
    pub allow: bool,
    pub reason: String,
    pub policy_id: Option<Arc<str>>,
    pub policy_version: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// Some condition could not be evaluated while deciding (counted in metrics).
    #[serde(skip)]
    pub condition_error: bool,
}

/// How a decision was reached, for `?explain=true` and failing policy tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Explanation {
    pub policy_set: String,
    pub rules: Vec<RuleTrace>,
    pub derived_roles: Vec<DerivedRoleTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    pub policy_id: Arc<str>,
    pub policy_version: Arc<str>,
    pub rule: Arc<str>,
    pub effect: Effect,
    /// Whether the rule applied, and decided the answer if it is the first of its effect.
    pub matched: bool,
    /// Why it applied or not: `applies`, `action not listed`, `no matching role`,
    /// `condition false`, `condition error`.
    pub outcome: &'static str,
    /// The principal's role (or `derived:<name>`) that made the rule relevant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DerivedRoleTrace {
    pub name: String,
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionTrace {
    /// The CEL source, or `all`/`any`/`none`.
    pub expression: String,
    /// `null` when it could not be evaluated.
    pub result: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub of: Vec<ConditionTrace>,
}

/// Three-valued: a condition can also fail to evaluate.
#[derive(Debug, Clone, PartialEq)]
enum Truth {
    True,
    False,
    Error(String),
}

impl Truth {
    fn known(&self) -> Option<bool> {
        match self {
            Truth::True => Some(true),
            Truth::False => Some(false),
            Truth::Error(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub explain: bool,
    /// The time conditions see when the request names none: a frozen clock in policy tests.
    pub now: Option<DateTime<FixedOffset>>,
}

/// Decision ids: a random per-process prefix and a counter, unique without a random draw per
/// decision. 32 lowercase hex digits.
pub fn next_decision_id() -> String {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `format!("{:016x}{:016x}")`, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for word in [*PREFIX, n] {
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((word >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}

/// The parts of a request shared by every check of a batch: the principal and the context,
/// converted for CEL at most once, when a first condition names them.
struct Shared<'a> {
    set: &'a PolicySet,
    principal: &'a Principal,
    input: SharedInput<'a>,
}

impl PolicySet {
    pub fn evaluate(&self, request: &Request, options: Options) -> Decision {
        let shared = Shared::new(self, &request.principal, &request.context, options);
        shared.decide(&request.resource, &request.action, options.explain)
    }

    pub fn evaluate_batch(&self, batch: &BatchRequest, options: Options) -> Vec<Decision> {
        let shared = Shared::new(self, &batch.principal, &batch.context, options);
        batch
            .checks
            .iter()
            .map(|c| shared.decide(&c.resource, &c.action, options.explain))
            .collect()
    }
}

impl<'a> Shared<'a> {
    fn new(
        set: &'a PolicySet,
        principal: &'a Principal,
        context: &'a RequestContext,
        options: Options,
    ) -> Self {
        Self {
            set,
            principal,
            input: SharedInput::new(principal, context, options.now),
        }
    }

    /// Deny rules first, then allow rules, each list in [`KindRules`](crate::policy::KindRules)
    /// order (the type's own policies, then `"*"` policies): the first rule that applies decides
    /// and is named (a deny rule also applies when its condition could not be evaluated).
    fn decide(&self, resource: &Resource, action: &str, explain: bool) -> Decision {
        let set = self.set;
        let rules = set.rules_for(&resource.kind);
        let input = Input::new(&self.input, resource, action);
        let scope = input.scope(&set.root);
        let mut check = Check {
            shared: self,
            action,
            scope: &scope,
            derived: vec![None; set.derived.len()],
            explain,
            first_error: None,
        };
        let mut traces = Vec::new();
        let mut denied: Option<(&Rule, Option<String>)> = None;
        for rule in &rules.deny {
            let (truth, trace) = check.applies(rule);
            traces.extend(trace);
            if denied.is_none() && truth != Truth::False {
                denied = Some((
                    rule,
                    match truth {
                        Truth::Error(e) => Some(e),
                        _ => None,
                    },
                ));
                if !explain {
                    break;
                }
            }
        }
        let mut allowed: Option<&Rule> = None;
        if denied.is_none() || explain {
            for rule in &rules.allow {
                let (truth, trace) = check.applies(rule);
                traces.extend(trace);
                if allowed.is_none() && truth == Truth::True {
                    allowed = Some(rule);
                    if !explain {
                        break;
                    }
                }
            }
        }
        let explanation = explain.then(|| Explanation {
            policy_set: set.version().to_string(),
            rules: traces,
            derived_roles: check.derived_traces(),
        });
        let first_error = check.first_error.take();
        let (allow, reason, rule) = match (denied, allowed) {
            (Some((rule, None)), _) => (false, rule.reason.to_string(), Some(rule)),
            (Some((rule, Some(error))), _) => (
                false,
                format!(
                    "{}: its condition could not be evaluated ({error})",
                    rule.reason
                ),
                Some(rule),
            ),
            (None, Some(rule)) => (true, rule.reason.to_string(), Some(rule)),
            (None, None) if rules.is_empty() => (
                false,
                format!("no policy covers resource type {:?}", resource.kind),
                None,
            ),
            (None, None) => {
                let mut reason = String::with_capacity(64);
                reason.push_str("no rule allows ");
                push_quoted(&mut reason, action);
                reason.push_str(" on ");
                push_quoted(&mut reason, &resource.kind);
                reason.push_str(" for this principal");
                // An allow rule that might have applied but could not be evaluated is worth
                // saying: it is the usual cause of a surprising deny.
                if let Some(e) = &first_error {
                    reason.push_str(&format!("; a condition could not be evaluated ({e})"));
                }
                (false, reason, None)
            }
        };
        Decision {
            decision_id: next_decision_id(),
            allow,
            reason,
            policy_id: rule.map(|r| r.policy.clone()),
            policy_version: rule.map(|r| r.policy_version.clone()),
            rule: rule.map(|r| r.name.clone()),
            explanation,
            condition_error: first_error.is_some(),
        }
    }
}

/// What a rule's decision says: `allowed by rule "r" of policy "p"` (`denied` for a deny
/// rule). Written once, when the policies load.
pub(crate) fn rule_reason(effect: Effect, rule: &str, policy: &str) -> String {
    let what = match effect {
        Effect::Allow => "allowed",
        Effect::Deny => "denied",
    };
    format!("{what} by rule {rule:?} of policy {policy:?}")
}

/// `s` as `{:?}` writes it; printable ASCII without quotes or backslashes (names, actions) is
/// copied as it is instead of going through the formatter character by character.
fn push_quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

/// Why a rule was relevant to the principal: one of its roles, or a derived role (by index).
/// Spelled out as a string for explanations only.
#[derive(Clone, Copy)]
enum Via<'r> {
    Role(&'r str),
    Derived(usize),
}

/// One resource/action check: its CEL scope and derived roles are computed on first need.
struct Check<'s, 'i, 'a> {
    shared: &'s Shared<'a>,
    action: &'s str,
    /// Conditions' variables: converted when a condition first names them.
    scope: &'s Scope<'s, 'i, 'a>,
    derived: Vec<Option<(Truth, Option<ConditionTrace>)>>,
    explain: bool,
    /// The first condition that could not be evaluated, for the reason and the metrics.
    first_error: Option<String>,
}

impl Check<'_, '_, '_> {
    /// Whether `rule` applies: `False` settles it; `Error` counts as applying for deny rules only.
    fn applies(&mut self, rule: &Rule) -> (Truth, Option<RuleTrace>) {
        let action = self.action;
        let trace = |outcome: &'static str, truth: &Truth, role: Option<String>, condition| {
            let matched = match truth {
                Truth::True => true,
                Truth::False => false,
                Truth::Error(_) => rule.effect == Effect::Deny,
            };
            RuleTrace {
                policy_id: rule.policy.clone(),
                policy_version: rule.policy_version.clone(),
                rule: rule.name.clone(),
                effect: rule.effect,
                matched,
                outcome,
                role,
                condition,
            }
        };
        if !rule.covers(action) {
            let t = Truth::False;
            let tr = self
                .explain
                .then(|| trace("action not listed", &t, None, None));
            return (t, tr);
        }
        let principal = self.shared.principal;
        let set = self.shared.set;
        let mut via = rule.role_of(&principal.roles).map(Via::Role);
        let mut role_error = None;
        if via.is_none() {
            for &d in &rule.derived {
                match self.derived_role(d) {
                    Truth::True => {
                        via = Some(Via::Derived(d));
                        break;
                    }
                    Truth::Error(e) => role_error = Some(e),
                    Truth::False => {}
                }
            }
        }
        // The role as explanations name it (`editor`, `*`, `derived:owner`): built for them only.
        let role = || {
            via.map(|v| match v {
                Via::Role(r) => r.to_string(),
                Via::Derived(d) => format!("derived:{}", set.derived[d].name),
            })
        };
        if via.is_none() {
            let t = match role_error {
                Some(e) => Truth::Error(format!("derived role: {e}")),
                None => Truth::False,
            };
            let outcome = if matches!(t, Truth::Error(_)) {
                "condition error"
            } else {
                "no matching role"
            };
            let tr = self.explain.then(|| trace(outcome, &t, None, None));
            return (t, tr);
        }
        let Some(condition) = &rule.condition else {
            let t = Truth::True;
            let tr = self.explain.then(|| trace("applies", &t, role(), None));
            return (t, tr);
        };
        let explain = self.explain;
        let (t, condition_trace) = evaluate(condition, self.scope, explain);
        self.note_error(&t);
        let outcome = match t {
            Truth::True => "applies",
            Truth::False => "condition false",
            Truth::Error(_) => "condition error",
        };
        let tr = explain.then(|| trace(outcome, &t, role(), condition_trace));
        (t, tr)
    }

    fn derived_role(&mut self, index: usize) -> Truth {
        if let Some((truth, _)) = &self.derived[index] {
            return truth.clone();
        }
        let set = self.shared.set;
        let role = &set.derived[index];
        let (truth, trace) = if !role.has_parent(&self.shared.principal.roles) {
            (Truth::False, None)
        } else {
            match &role.condition {
                None => (Truth::True, None),
                Some(c) => {
                    let explain = self.explain;
                    evaluate(c, self.scope, explain)
                }
            }
        };
        self.note_error(&truth);
        self.derived[index] = Some((truth.clone(), trace));
        truth
    }

    fn note_error(&mut self, truth: &Truth) {
        if let (Truth::Error(e), None) = (truth, &self.first_error) {
            self.first_error = Some(e.clone());
        }
    }

    fn derived_traces(&self) -> Vec<DerivedRoleTrace> {
        self.derived
            .iter()
            .enumerate()
            .filter_map(|(i, state)| {
                let (truth, condition) = state.as_ref()?;
                Some(DerivedRoleTrace {
                    name: self.shared.set.derived[i].name.clone(),
                    active: truth.known(),
                    condition: condition.clone(),
                })
            })
            .collect()
    }
}

/// Evaluates a condition; with `explain`, also how each part evaluated. Without it, `all`/`any`/
/// `none` stop at the first part that settles the answer.
fn evaluate(
    c: &Condition,
    scope: &Scope<'_, '_, '_>,
    explain: bool,
) -> (Truth, Option<ConditionTrace>) {
    let (op, parts) = match c {
        Condition::Expr(e) => {
            let truth = match e.evaluate(scope) {
                Ok(true) => Truth::True,
                Ok(false) => Truth::False,
                Err(message) => Truth::Error(message),
            };
            let trace = explain.then(|| ConditionTrace {
                expression: e.source.to_string(),
                result: truth.known(),
                error: match &truth {
                    Truth::Error(m) => Some(m.clone()),
                    _ => None,
                },
                of: Vec::new(),
            });
            return (truth, trace);
        }
        Condition::All(p) => ("all", p),
        Condition::Any(p) => ("any", p),
        Condition::None(p) => ("none", p),
    };
    // `all` is settled by a false part, `any` and `none` by a true one.
    let settles = if op == "all" {
        Truth::False
    } else {
        Truth::True
    };
    let mut error = None;
    let mut settled = false;
    let mut traces = Vec::new();
    for part in parts {
        let (t, trace) = evaluate(part, scope, explain);
        traces.extend(trace);
        if t == settles {
            settled = true;
            if !explain {
                break;
            }
        } else if let Truth::Error(e) = t {
            error.get_or_insert(e);
        }
    }
    let truth = match (op, settled, error) {
        ("all", true, _) => Truth::False,
        ("any", true, _) => Truth::True,
        ("none", true, _) => Truth::False,
        (_, false, Some(e)) => Truth::Error(e),
        ("all", false, None) | ("none", false, None) => Truth::True,
        _ => Truth::False,
    };
    let trace = explain.then(|| ConditionTrace {
        expression: op.to_string(),
        result: truth.known(),
        error: match &truth {
            Truth::Error(m) => Some(m.clone()),
            _ => None,
        },
        of: traces,
    });
    (truth, trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PolicySet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
        crate::policy::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ask(set: &PolicySet, body: serde_json::Value) -> Decision {
        let request: Request = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        set.evaluate(
            &request,
            Options {
                explain: true,
                now: None,
            },
        )
    }

    #[test]
    fn decision_ids_are_32_hex_digits_and_unique() {
        let (a, b) = (next_decision_id(), next_decision_id());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, b);
        // Same process prefix, a later counter value (tests running beside this one draw too).
        assert_eq!(a[..16], b[..16]);
        let n = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap_or_default();
        assert!(n(&b) > n(&a), "{a} {b}");
    }

    #[test]
    fn quoted_names_read_as_debug_formatting_writes_them() {
        for s in [
            "view",
            "document",
            "a b",
            "it's",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "é",
            "",
        ] {
            let mut out = String::new();
            push_quoted(&mut out, s);
            assert_eq!(out, format!("{s:?}"));
        }
        assert_eq!(
            rule_reason(Effect::Deny, "r \"1\"", "p"),
            format!("denied by rule {:?} of policy {:?}", "r \"1\"", "p")
        );
    }

    #[test]
    fn shipped_policies_decide_the_seed_scenario() {
        let set = shipped();
        let office_hours =
            serde_json::json!({"ip": "203.0.113.9", "time": "2026-11-23T10:00:00+01:00"});
        let night = serde_json::json!({"ip": "203.0.113.9", "time": "2026-11-23T23:00:00+01:00"});
        let night_office =
            serde_json::json!({"ip": "10.2.3.4", "time": "2026-11-23T23:00:00+01:00"});
        let req = |sub: &str, roles: &[&str], action: &str, ctx: &serde_json::Value| {
            serde_json::json!({
                "principal": {"sub": sub, "roles": roles},
                "resource": {"type": "document", "id": "d1", "owner": "alice"},
                "action": action, "context": ctx,
            })
        };
        let d = ask(&set, req("alice", &[], "edit", &office_hours));
        assert!(d.allow, "{d:#?}");
        assert_eq!(d.rule.as_deref(), Some("owner-or-admin-edits"));
        let d = ask(&set, req("bob", &["editor"], "edit", &office_hours));
        assert!(!d.allow, "{d:#?}");
        assert!(d.reason.contains("no rule allows"), "{}", d.reason);
        let d = ask(&set, req("bob", &["editor"], "view", &office_hours));
        assert!(d.allow, "{d:#?}");
        let d = ask(&set, req("alice", &[], "view", &night));
        assert!(!d.allow);
        assert_eq!(d.policy_id.as_deref(), Some("working-hours"));
        let d = ask(&set, req("alice", &[], "view", &night_office));
        assert!(d.allow, "{d:#?}");
        let d = ask(
            &set,
            req(
                "alice",
                &[],
                "view",
                &serde_json::json!({"time": "2026-11-23T23:00:00+01:00"}),
            ),
        );
        assert!(!d.allow);
        assert!(d.reason.contains("could not be evaluated"), "{}", d.reason);
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    }
}
