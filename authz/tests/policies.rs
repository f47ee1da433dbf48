//! The policy library end to end: each test writes a small policy directory, loads it with
//! `policy::load` and asks `PolicySet::evaluate` (or `evaluate_batch`) questions, checking the
//! answer (allow, reason, policy, version, rule) and, where it tells how the answer was reached,
//! the explanation. Load failures are checked for their file, line, key path and message.
//!
//! Policies are written indented in the tests; `PolicyDir::write` strips the indentation and the
//! leading newline, so line 1 of a file is the line after `r#"`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use gatehouse_authz::decision::{ConditionTrace, DerivedRoleTrace, RuleTrace};
use gatehouse_authz::policy::{self, Effect};
use gatehouse_authz::{BatchRequest, Decision, LocatedError, Options, PolicySet, Request};
use serde_json::{json, Value};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A policy directory the test writes into.
struct PolicyDir(TempDir);

impl PolicyDir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    /// A directory holding `files` (name, YAML).
    fn with(files: &[(&str, &str)]) -> Self {
        let dir = Self::new();
        for (name, yaml) in files {
            dir.write(name, yaml);
        }
        dir
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Writes `name` (creating its directories), dedented.
    fn write(&self, name: &str, yaml: &str) {
        let path = self.file(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(path, dedent(yaml)).expect("write policy");
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.file(name)).expect("remove policy");
    }

    #[track_caller]
    fn load(&self) -> PolicySet {
        policy::load(self.path()).unwrap_or_else(|e| panic!("policies do not load:\n{e}"))
    }

    /// The errors of a load expected to fail.
    #[track_caller]
    fn errors(&self) -> Vec<LocatedError> {
        match policy::load(self.path()) {
            Ok(set) => panic!("loaded {} policies, expected errors", set.policies.len()),
            Err(e) => e.0,
        }
    }

    /// The one error of a load expected to fail with exactly one.
    #[track_caller]
    fn error(&self) -> LocatedError {
        let mut errors = self.errors();
        assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
        errors.remove(0)
    }
}

/// Strips the leading newline, the indentation common to every line and trailing blank lines.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string();
    out.push('\n');
    out
}

/// A request being built: `ask("bob", &["editor"]).to("edit", "document")`.
#[derive(Clone)]
struct Ask(Value);

fn ask(sub: &str, roles: &[&str]) -> Ask {
    Ask(json!({
        "principal": {"sub": sub, "roles": roles},
        "resource": {"type": "document", "id": "r1"},
        "action": "view",
    }))
}

impl Ask {
    fn to(mut self, action: &str, kind: &str) -> Self {
        self.0["action"] = json!(action);
        self.0["resource"]["type"] = json!(kind);
        self
    }

    fn owned_by(mut self, owner: &str) -> Self {
        self.0["resource"]["owner"] = json!(owner);
        self
    }

    fn resource_attributes(mut self, attributes: Value) -> Self {
        self.0["resource"]["attributes"] = attributes;
        self
    }

    fn principal_attributes(mut self, attributes: Value) -> Self {
        self.0["principal"]["attributes"] = attributes;
        self
    }

    fn context(mut self, context: Value) -> Self {
        self.0["context"] = context;
        self
    }

    fn request(&self) -> Request {
        serde_json::from_value(self.0.clone()).unwrap_or_else(|e| panic!("bad request: {e}"))
    }
}

/// Monday 23 November 2026, noon UTC: the frozen clock unless a test sets another.
const MONDAY_NOON: &str = "2026-11-23T12:00:00Z";

fn time(rfc3339: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
}

fn explained_at(now: &str) -> Options {
    Options {
        explain: true,
        now: Some(time(now)),
    }
}

/// Evaluates with an explanation and the clock frozen at `MONDAY_NOON`.
fn decide(set: &PolicySet, ask: &Ask) -> Decision {
    set.evaluate(&ask.request(), explained_at(MONDAY_NOON))
}

#[track_caller]
fn assert_allowed(d: &Decision, policy: &str, version: &str, rule: &str) {
    assert!(d.allow, "expected an allow, got {d:#?}");
    assert_eq!(
        d.reason,
        format!("allowed by rule {rule:?} of policy {policy:?}")
    );
    assert_decided_by(d, policy, version, rule);
}

#[track_caller]
fn assert_denied(d: &Decision, policy: &str, version: &str, rule: &str) {
    assert!(!d.allow, "expected a deny, got {d:#?}");
    assert_eq!(
        d.reason,
        format!("denied by rule {rule:?} of policy {policy:?}")
    );
    assert_decided_by(d, policy, version, rule);
}

/// Denied by a deny rule whose condition could not be evaluated, failing with `error`.
#[track_caller]
fn assert_denied_on_error(d: &Decision, policy: &str, version: &str, rule: &str, error: &str) {
    assert!(!d.allow, "expected a deny, got {d:#?}");
    assert_eq!(
        d.reason,
        format!(
            "denied by rule {rule:?} of policy {policy:?}: its condition could not be evaluated \
             ({error})"
        )
    );
    assert_decided_by(d, policy, version, rule);
    assert!(d.condition_error, "condition_error not set: {d:#?}");
}

#[track_caller]
fn assert_decided_by(d: &Decision, policy: &str, version: &str, rule: &str) {
    assert_eq!(d.policy_id.as_deref(), Some(policy), "{d:#?}");
    assert_eq!(d.policy_version.as_deref(), Some(version), "{d:#?}");
    assert_eq!(d.rule.as_deref(), Some(rule), "{d:#?}");
}

/// Denied because no allow rule applied (and no deny rule did).
#[track_caller]
fn assert_no_rule_allows(d: &Decision, action: &str, kind: &str) {
    assert!(!d.allow, "expected a deny, got {d:#?}");
    let base = format!("no rule allows {action:?} on {kind:?} for this principal");
    if d.condition_error {
        // The first condition that could not be evaluated is named after the base reason.
        assert!(
            d.reason
                .starts_with(&format!("{base}; a condition could not be evaluated (")),
            "{}",
            d.reason
        );
    } else {
        assert_eq!(d.reason, base);
    }
    assert_eq!(
        (&d.policy_id, &d.policy_version, &d.rule),
        (&None, &None, &None),
        "{d:#?}"
    );
}

fn rule_traces(d: &Decision) -> &[RuleTrace] {
    &d.explanation.as_ref().expect("explain was asked").rules
}

/// Every rule considered, in evaluation order: (rule, outcome, matched).
fn outcomes(d: &Decision) -> Vec<(&str, &str, bool)> {
    rule_traces(d)
        .iter()
        .map(|t| (&*t.rule, t.outcome, t.matched))
        .collect()
}

#[track_caller]
fn trace<'d>(d: &'d Decision, rule: &str) -> &'d RuleTrace {
    rule_traces(d)
        .iter()
        .find(|t| &*t.rule == rule)
        .unwrap_or_else(|| panic!("rule {rule} not in {:#?}", d.explanation))
}

#[track_caller]
fn condition<'d>(d: &'d Decision, rule: &str) -> &'d ConditionTrace {
    trace(d, rule)
        .condition
        .as_ref()
        .unwrap_or_else(|| panic!("rule {rule} has no condition trace: {d:#?}"))
}

fn derived_traces(d: &Decision) -> &[DerivedRoleTrace] {
    &d.explanation
        .as_ref()
        .expect("explain was asked")
        .derived_roles
}

/// A condition trace as indented lines: `expression => true|false|error: message`.
fn render(trace: &ConditionTrace) -> Vec<String> {
    fn walk(t: &ConditionTrace, depth: usize, out: &mut Vec<String>) {
        let result = match (t.result, &t.error) {
            (Some(b), _) => b.to_string(),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "null".into(),
        };
        out.push(format!(
            "{}{} => {result}",
            "  ".repeat(depth),
            t.expression
        ));
        for part in &t.of {
            walk(part, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(trace, 0, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------

/// Which rules are relevant: exact and wildcard actions, exact and wildcard roles.
mod matching {
    use super::*;

    fn documents() -> PolicySet {
        PolicyDir::with(&[(
            "documents.yaml",
            r#"
            resource_policy:
              id: documents
              version: "2026-11-01"
              resource: document
              rules:
                - name: editors-edit-and-publish
                  actions: [edit, publish]
                  effect: allow
                  roles: [editor, admin]
                - name: admins-do-anything
                  actions: ["*"]
                  effect: allow
                  roles: [admin]
                - name: everyone-views
                  actions: [view]
                  effect: allow
                  roles: ["*"]
            "#,
        )])
        .load()
    }

    #[test]
    fn an_exact_action_and_role_allow_only_what_they_name() {
        let set = documents();
        for action in ["edit", "publish"] {
            let d = decide(&set, &ask("bob", &["editor"]).to(action, "document"));
            assert_allowed(&d, "documents", "2026-11-01", "editors-edit-and-publish");
            let t = trace(&d, "editors-edit-and-publish");
            assert_eq!((t.outcome, t.matched), ("applies", true));
            assert_eq!(t.role.as_deref(), Some("editor"));
            assert_eq!(t.effect, Effect::Allow);
            assert!(t.condition.is_none());
        }

        // Actions are matched exactly: neither another action nor another case.
        for action in ["delete", "Edit"] {
            let d = decide(&set, &ask("bob", &["editor"]).to(action, "document"));
            assert_no_rule_allows(&d, action, "document");
            assert_eq!(
                outcomes(&d),
                [
                    ("editors-edit-and-publish", "action not listed", false),
                    ("admins-do-anything", "no matching role", false),
                    ("everyone-views", "action not listed", false),
                ]
            );
        }

        // A principal without a listed role.
        let d = decide(&set, &ask("carol", &["viewer"]).to("edit", "document"));
        assert_no_rule_allows(&d, "edit", "document");
        let t = trace(&d, "editors-edit-and-publish");
        assert_eq!(
            (t.outcome, t.matched, t.role.as_deref()),
            ("no matching role", false, None)
        );

        // The trace names the first of the principal's roles that the rule lists.
        let d = decide(
            &set,
            &ask("dan", &["guest", "admin", "editor"]).to("edit", "document"),
        );
        assert_allowed(&d, "documents", "2026-11-01", "editors-edit-and-publish");
        assert_eq!(
            trace(&d, "editors-edit-and-publish").role.as_deref(),
            Some("admin")
        );
    }

    #[test]
    fn the_action_wildcard_covers_every_action() {
        let set = documents();
        for action in ["purge", "archive", "view"] {
            let d = decide(&set, &ask("root", &["admin"]).to(action, "document"));
            assert!(d.allow, "{action}: {d:#?}");
            let t = trace(&d, "admins-do-anything");
            assert_eq!((t.outcome, t.matched), ("applies", true), "{action}");
            assert_eq!(t.role.as_deref(), Some("admin"));
        }
        // The first allow rule that applies decides: for "view" that is the wildcard rule,
        // listed before "everyone-views".
        let d = decide(&set, &ask("root", &["admin"]).to("purge", "document"));
        assert_allowed(&d, "documents", "2026-11-01", "admins-do-anything");
        let d = decide(&set, &ask("root", &["admin"]).to("view", "document"));
        assert_allowed(&d, "documents", "2026-11-01", "admins-do-anything");

        // The wildcard is for admins only.
        let d = decide(&set, &ask("bob", &["editor"]).to("purge", "document"));
        assert_no_rule_allows(&d, "purge", "document");
    }

    #[test]
    fn the_role_wildcard_covers_every_principal_even_without_roles() {
        let set = documents();
        let d = decide(&set, &ask("anonymous", &[]).to("view", "document"));
        assert_allowed(&d, "documents", "2026-11-01", "everyone-views");
        let t = trace(&d, "everyone-views");
        assert_eq!(
            (t.outcome, t.matched, t.role.as_deref()),
            ("applies", true, Some("*"))
        );

        // ... for the actions it lists only.
        let d = decide(&set, &ask("anonymous", &[]).to("edit", "document"));
        assert_no_rule_allows(&d, "edit", "document");
    }
}

/// How rules of one or several policies combine into one answer.
mod combining {
    use super::*;

    #[test]
    fn a_deny_overrides_an_allow_of_the_same_policy() {
        let set = PolicyDir::with(&[(
            "documents.yaml",
            r#"
            resource_policy:
              id: documents
              version: "3"
              resource: document
              rules:
                - name: staff-do-anything
                  actions: ["*"]
                  effect: allow
                  roles: [staff]
                - name: interns-never-delete
                  actions: [delete]
                  effect: deny
                  roles: [intern]
            "#,
        )])
        .load();

        let d = decide(
            &set,
            &ask("ivy", &["staff", "intern"]).to("delete", "document"),
        );
        assert_denied(&d, "documents", "3", "interns-never-delete");
        // Deny rules are considered first, whatever their place in the file; with an
        // explanation, the allow rule that lost is shown too.
        assert_eq!(
            outcomes(&d),
            [
                ("interns-never-delete", "applies", true),
                ("staff-do-anything", "applies", true),
            ]
        );
        assert_eq!(trace(&d, "interns-never-delete").effect, Effect::Deny);
        assert_eq!(
            trace(&d, "interns-never-delete").role.as_deref(),
            Some("intern")
        );

        let d = decide(
            &set,
            &ask("ivy", &["staff", "intern"]).to("edit", "document"),
        );
        assert_allowed(&d, "documents", "3", "staff-do-anything");
        let d = decide(&set, &ask("sam", &["staff"]).to("delete", "document"));
        assert_allowed(&d, "documents", "3", "staff-do-anything");
        assert_eq!(
            trace(&d, "interns-never-delete").outcome,
            "no matching role"
        );

        // Without an explanation the answer is the same.
        let d = set.evaluate(
            &ask("ivy", &["staff", "intern"])
                .to("delete", "document")
                .request(),
            Options::default(),
        );
        assert_denied(&d, "documents", "3", "interns-never-delete");
        assert!(d.explanation.is_none());
    }

    const DOCUMENTS: &str = r#"
        resource_policy:
          id: documents
          version: "1"
          resource: document
          rules:
            - name: editors-work
              actions: [view, edit]
              effect: allow
              roles: [editor]
        "#;

    const FREEZE: &str = r#"
        resource_policy:
          id: change-freeze
          version: "2026-12"
          resource: document
          rules:
            - name: freeze-edits
              actions: [edit]
              effect: deny
              roles: ["*"]
        "#;

    #[test]
    fn a_deny_in_another_file_overrides_an_allow_for_the_same_type_in_either_order() {
        for (documents, freeze) in [
            ("1-documents.yaml", "2-freeze.yaml"),
            ("2-documents.yaml", "1-freeze.yaml"),
        ] {
            let set = PolicyDir::with(&[(documents, DOCUMENTS), (freeze, FREEZE)]).load();
            let d = decide(&set, &ask("bob", &["editor"]).to("edit", "document"));
            assert_denied(&d, "change-freeze", "2026-12", "freeze-edits");
            let t = trace(&d, "editors-work");
            assert_eq!((&*t.policy_id, &*t.policy_version), ("documents", "1"));
            assert_eq!((t.outcome, t.matched), ("applies", true));

            let d = decide(&set, &ask("bob", &["editor"]).to("view", "document"));
            assert_allowed(&d, "documents", "1", "editors-work");
        }
    }

    #[test]
    fn the_first_deny_in_load_order_decides() {
        // Files load in path order; rules in the order they are written. Policy ids play no
        // part: "zz-retention" in a-*.yaml comes before "aa-legal-hold" in b-*.yaml.
        let retention = r#"
            resource_policy:
              id: zz-retention
              version: "5"
              resource: document
              rules:
                - name: retention-period
                  actions: [delete]
                  effect: deny
                  roles: ["*"]
                - name: retention-backup
                  actions: [delete]
                  effect: deny
                  roles: ["*"]
                - name: owners-delete
                  actions: [delete]
                  effect: allow
                  roles: ["*"]
            "#;
        let legal_hold = r#"
            resource_policy:
              id: aa-legal-hold
              version: "9"
              resource: document
              rules:
                - name: legal-hold
                  actions: [delete]
                  effect: deny
                  roles: ["*"]
            "#;
        let dir = PolicyDir::with(&[
            ("a-retention.yaml", retention),
            ("b-legal-hold.yaml", legal_hold),
        ]);
        let d = decide(&dir.load(), &ask("bob", &[]).to("delete", "document"));
        assert_denied(&d, "zz-retention", "5", "retention-period");
        assert_eq!(
            outcomes(&d),
            [
                ("retention-period", "applies", true),
                ("retention-backup", "applies", true),
                ("legal-hold", "applies", true),
                ("owners-delete", "applies", true),
            ]
        );

        // Renamed so that it loads last, the retention policy no longer decides.
        dir.remove("a-retention.yaml");
        dir.write("c-retention.yaml", retention);
        let d = decide(&dir.load(), &ask("bob", &[]).to("delete", "document"));
        assert_denied(&d, "aa-legal-hold", "9", "legal-hold");
    }

    #[test]
    fn a_types_own_rules_are_named_before_wildcard_rules_even_from_a_later_file() {
        // a-global.yaml loads before b-documents.yaml, yet for a document the rules of the
        // document policies come first, then those of the "*" policies: of two deny rules (or two
        // allow rules) that apply, the document policy's is named.
        let dir = PolicyDir::with(&[
            (
                "a-global.yaml",
                r#"
                resource_policy:
                  id: global
                  version: "2"
                  resource: "*"
                  rules:
                    - name: global-freeze
                      actions: [delete]
                      effect: deny
                      roles: ["*"]
                    - name: everyone-views-anything
                      actions: [view]
                      effect: allow
                      roles: ["*"]
                "#,
            ),
            (
                "b-documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "1"
                  resource: document
                  rules:
                    - name: legal-hold
                      actions: [delete]
                      effect: deny
                      roles: ["*"]
                    - name: everyone-views-documents
                      actions: [view]
                      effect: allow
                      roles: ["*"]
                "#,
            ),
        ]);
        let set = dir.load();
        let d = decide(&set, &ask("bob", &[]).to("delete", "document"));
        assert_denied(&d, "documents", "1", "legal-hold");
        assert_eq!(
            outcomes(&d),
            [
                ("legal-hold", "applies", true),
                ("global-freeze", "applies", true),
                ("everyone-views-documents", "action not listed", false),
                ("everyone-views-anything", "action not listed", false),
            ]
        );
        let d = set.evaluate(
            &ask("bob", &[]).to("delete", "document").request(),
            Options::default(),
        );
        assert_denied(&d, "documents", "1", "legal-hold");
        let d = decide(&set, &ask("bob", &[]).to("view", "document"));
        assert_allowed(&d, "documents", "1", "everyone-views-documents");

        // A type with no policy of its own: the "*" rules alone.
        let d = decide(&set, &ask("bob", &[]).to("delete", "invoice"));
        assert_denied(&d, "global", "2", "global-freeze");
        let d = decide(&set, &ask("bob", &[]).to("view", "invoice"));
        assert_allowed(&d, "global", "2", "everyone-views-anything");
    }

    #[test]
    fn nothing_matched_is_a_deny() {
        let set = PolicyDir::with(&[(
            "documents.yaml",
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-view
                  actions: [view]
                  effect: allow
                  roles: [editor]
                - name: frozen-documents
                  actions: [delete]
                  effect: deny
                  roles: ["*"]
                  when: resource.id == "frozen"
            "#,
        )])
        .load();
        // A deny rule whose condition is false does not decide either.
        let d = decide(&set, &ask("bob", &["viewer"]).to("delete", "document"));
        assert_no_rule_allows(&d, "delete", "document");
        assert!(!d.condition_error);
        assert_eq!(
            outcomes(&d),
            [
                ("frozen-documents", "condition false", false),
                ("editors-view", "action not listed", false),
            ]
        );
        // `role` is the role that made the rule relevant, even when its condition was false.
        assert_eq!(trace(&d, "frozen-documents").role.as_deref(), Some("*"));
        assert_eq!(
            render(condition(&d, "frozen-documents")),
            [r#"resource.id == "frozen" => false"#]
        );
    }

    #[test]
    fn a_resource_type_no_policy_names_is_not_covered() {
        let set = PolicyDir::with(&[("documents.yaml", DOCUMENTS)]).load();
        let d = decide(&set, &ask("bob", &["editor"]).to("view", "invoice"));
        assert!(!d.allow);
        assert_eq!(d.reason, r#"no policy covers resource type "invoice""#);
        assert_eq!((&d.policy_id, &d.rule), (&None, &None));
        assert!(rule_traces(&d).is_empty());
    }

    #[test]
    fn a_wildcard_resource_policy_applies_to_every_type_and_composes_with_a_types_own() {
        let dir = PolicyDir::with(&[
            ("documents.yaml", DOCUMENTS),
            (
                "global.yaml",
                r#"
                resource_policy:
                  id: global
                  version: "2"
                  resource: "*"
                  rules:
                    - name: suspended-principals
                      actions: ["*"]
                      effect: deny
                      roles: [suspended]
                    - name: auditors-view-everything
                      actions: [view]
                      effect: allow
                      roles: [auditor]
                "#,
            ),
        ]);
        let set = dir.load();

        // A type with no policy of its own is governed by the wildcard policy alone ...
        let d = decide(&set, &ask("aud", &["auditor"]).to("view", "invoice"));
        assert_allowed(&d, "global", "2", "auditors-view-everything");
        let d = decide(&set, &ask("zed", &["suspended"]).to("view", "invoice"));
        assert_denied(&d, "global", "2", "suspended-principals");
        // ... and is covered: what it does not allow gets "no rule allows".
        let d = decide(&set, &ask("bob", &["editor"]).to("view", "invoice"));
        assert_no_rule_allows(&d, "view", "invoice");

        // A type with its own policy gets both: its own rules, then the wildcard's.
        let d = decide(&set, &ask("bob", &["editor"]).to("view", "document"));
        assert_allowed(&d, "documents", "1", "editors-work");
        assert_eq!(
            outcomes(&d),
            [
                ("suspended-principals", "no matching role", false),
                ("editors-work", "applies", true),
                ("auditors-view-everything", "no matching role", false),
            ]
        );
        let d = decide(&set, &ask("aud", &["auditor"]).to("view", "document"));
        assert_allowed(&d, "global", "2", "auditors-view-everything");
        let d = decide(
            &set,
            &ask("bob", &["editor", "suspended"]).to("view", "document"),
        );
        assert_denied(&d, "global", "2", "suspended-principals");

        let listed: Vec<_> = set
            .policies
            .iter()
            .map(|p| (p.id.as_str(), p.resource.as_str()))
            .collect();
        assert_eq!(listed, [("documents", "document"), ("global", "*")]);
    }
}

/// Roles a principal holds because of the request.
mod derived_roles {
    use super::*;

    const ROLES: &str = r#"
        derived_roles:
          name: document_roles
          definitions:
            - name: owner
              parent_roles: ["*"]
              when: resource.owner == principal.sub
            - name: team_member
              parent_roles: [employee]
              when: principal.attributes.team == resource.attributes.team
        "#;

    const DOCUMENTS: &str = r#"
        resource_policy:
          id: documents
          version: "4"
          resource: document
          import_derived_roles: [document_roles]
          rules:
            - name: owners-edit
              actions: [edit]
              effect: allow
              derived_roles: [owner]
            - name: team-reads
              actions: [view]
              effect: allow
              roles: [auditor]
              derived_roles: [team_member]
        "#;

    fn documents() -> PolicySet {
        PolicyDir::with(&[("roles.yaml", ROLES), ("documents.yaml", DOCUMENTS)]).load()
    }

    #[test]
    fn the_owner_is_the_principal_whose_sub_is_the_resource_owner() {
        let set = documents();
        let d = decide(
            &set,
            &ask("alice", &[]).to("edit", "document").owned_by("alice"),
        );
        assert_allowed(&d, "documents", "4", "owners-edit");
        assert_eq!(
            trace(&d, "owners-edit").role.as_deref(),
            Some("derived:owner")
        );
        let derived = derived_traces(&d);
        assert_eq!(
            derived.len(),
            1,
            "only the roles a rule needed are evaluated"
        );
        assert_eq!(
            (derived[0].name.as_str(), derived[0].active),
            ("owner", Some(true))
        );
        let c = derived[0]
            .condition
            .as_ref()
            .expect("owner has a condition");
        assert_eq!(render(c), ["resource.owner == principal.sub => true"]);

        let d = decide(
            &set,
            &ask("bob", &[]).to("edit", "document").owned_by("alice"),
        );
        assert_no_rule_allows(&d, "edit", "document");
        assert_eq!(
            outcomes(&d),
            [
                ("owners-edit", "no matching role", false),
                ("team-reads", "action not listed", false),
            ]
        );
        let derived = derived_traces(&d);
        assert_eq!(
            (derived[0].name.as_str(), derived[0].active),
            ("owner", Some(false))
        );

        // A resource without an owner has no owner: not an error.
        let d = decide(&set, &ask("bob", &[]).to("edit", "document"));
        assert_no_rule_allows(&d, "edit", "document");
        assert!(!d.condition_error, "{d:#?}");
        assert_eq!(derived_traces(&d)[0].active, Some(false));
    }

    #[test]
    fn a_derived_role_needs_one_of_its_parent_roles() {
        let set = documents();
        let team = |who: &str, roles: &[&str], team: &str| {
            ask(who, roles)
                .to("view", "document")
                .principal_attributes(json!({"team": team}))
                .resource_attributes(json!({"team": "payments"}))
        };

        let d = decide(&set, &team("erin", &["employee"], "payments"));
        assert_allowed(&d, "documents", "4", "team-reads");
        assert_eq!(
            trace(&d, "team-reads").role.as_deref(),
            Some("derived:team_member")
        );

        let d = decide(&set, &team("erin", &["employee"], "search"));
        assert_no_rule_allows(&d, "view", "document");
        let derived = &derived_traces(&d)[0];
        assert_eq!(
            (derived.name.as_str(), derived.active),
            ("team_member", Some(false))
        );
        assert_eq!(
            render(derived.condition.as_ref().expect("evaluated")),
            ["principal.attributes.team == resource.attributes.team => false"]
        );

        // Same team, but a contractor is no employee: the condition is not even evaluated.
        let d = decide(&set, &team("carl", &["contractor"], "payments"));
        assert_no_rule_allows(&d, "view", "document");
        let derived = &derived_traces(&d)[0];
        assert_eq!(
            (derived.name.as_str(), derived.active),
            ("team_member", Some(false))
        );
        assert!(derived.condition.is_none());

        // A listed role is enough on its own; derived roles are not looked at then.
        let d = decide(&set, &team("aud", &["auditor"], "search"));
        assert_allowed(&d, "documents", "4", "team-reads");
        assert_eq!(trace(&d, "team-reads").role.as_deref(), Some("auditor"));
        assert!(derived_traces(&d).is_empty());
    }

    #[test]
    fn a_derived_role_in_a_deny_rule() {
        let set = PolicyDir::with(&[
            (
                "expense_roles.yaml",
                r#"
                derived_roles:
                  name: expense_roles
                  definitions:
                    - name: submitter
                      parent_roles: ["*"]
                      when: resource.attributes.submitted_by == principal.sub
                "#,
            ),
            (
                "expenses.yaml",
                r#"
                resource_policy:
                  id: expenses
                  version: "7"
                  resource: expense
                  import_derived_roles: [expense_roles]
                  rules:
                    - name: managers-approve
                      actions: [approve]
                      effect: allow
                      roles: [manager]
                    - name: nobody-approves-their-own
                      actions: [approve]
                      effect: deny
                      derived_roles: [submitter]
                "#,
            ),
        ])
        .load();
        let approve = |by: &str, submitted_by: &str| {
            ask(by, &["manager"])
                .to("approve", "expense")
                .resource_attributes(json!({"submitted_by": submitted_by}))
        };

        let d = decide(&set, &approve("carol", "dave"));
        assert_allowed(&d, "expenses", "7", "managers-approve");
        assert_eq!(
            outcomes(&d),
            [
                ("nobody-approves-their-own", "no matching role", false),
                ("managers-approve", "applies", true),
            ]
        );

        let d = decide(&set, &approve("carol", "carol"));
        assert_denied(&d, "expenses", "7", "nobody-approves-their-own");
        let t = trace(&d, "nobody-approves-their-own");
        assert_eq!((t.outcome, t.matched), ("applies", true));
        assert_eq!(t.role.as_deref(), Some("derived:submitter"));

        // Who submitted it is unknown: the derived role cannot be decided, so the deny rule
        // applies (fail closed).
        let d = decide(&set, &ask("carol", &["manager"]).to("approve", "expense"));
        assert_denied_on_error(
            &d,
            "expenses",
            "7",
            "nobody-approves-their-own",
            "derived role: No such key: submitted_by",
        );
        let t = trace(&d, "nobody-approves-their-own");
        assert_eq!((t.outcome, t.matched), ("condition error", true));
        assert_eq!(derived_traces(&d)[0].active, None);
    }
}

/// The helpers and standard CEL, through policies.
mod conditions {
    use super::*;

    /// One policy for resource type `thing` with the given rules.
    fn things(rules: &str) -> PolicySet {
        let policy = format!(
            "resource_policy:\n  id: things\n  version: \"1\"\n  resource: thing\n  rules:\n{}",
            dedent(rules)
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        PolicyDir::with(&[("things.yaml", &policy)]).load()
    }

    #[test]
    fn ip_in_range_takes_one_range_or_a_list_of_ranges_and_addresses() {
        let set = things(
            r#"
            - name: office-network
              actions: [view]
              effect: allow
              roles: ["*"]
              when: ipInRange(context.ip, "10.0.0.0/8")
            - name: partner-networks
              actions: [view]
              effect: allow
              roles: ["*"]
              when: ipInRange(context.ip, ["192.168.10.0/24", "198.51.100.7"])
            "#,
        );
        let from = |ip: &str| {
            decide(
                &set,
                &ask("p", &[]).to("view", "thing").context(json!({"ip": ip})),
            )
        };

        assert_allowed(&from("10.20.30.40"), "things", "1", "office-network");
        assert_allowed(&from("192.168.10.99"), "things", "1", "partner-networks");
        assert_allowed(&from("198.51.100.7"), "things", "1", "partner-networks");
        for outside in ["198.51.100.8", "192.168.11.1", "11.0.0.1"] {
            let d = from(outside);
            assert_no_rule_allows(&d, "view", "thing");
            assert_eq!(
                outcomes(&d),
                [
                    ("office-network", "condition false", false),
                    ("partner-networks", "condition false", false),
                ],
                "{outside}"
            );
        }
    }

    #[test]
    fn ip_in_range_understands_ipv6() {
        let set = things(
            r#"
            - name: v6-networks
              actions: [view]
              effect: allow
              roles: ["*"]
              when: ipInRange(context.ip, ["2001:db8:1::/48", "fd00::/8"])
            "#,
        );
        let from = |ip: &str| {
            decide(
                &set,
                &ask("p", &[]).to("view", "thing").context(json!({"ip": ip})),
            )
        };
        assert_allowed(&from("2001:db8:1::5"), "things", "1", "v6-networks");
        assert_allowed(&from("fd12:3456::1"), "things", "1", "v6-networks");
        // Outside, and an IPv4 address against IPv6 ranges: false, not an error.
        for outside in ["2001:db8:2::5", "10.0.0.1"] {
            let d = from(outside);
            assert_no_rule_allows(&d, "view", "thing");
            assert_eq!(
                trace(&d, "v6-networks").outcome,
                "condition false",
                "{outside}"
            );
        }
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_checked_as_the_ipv4_address_it_carries() {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`: an IPv4 deny list must
        // still catch them.
        let set = things(
            r#"
            - name: blocked-networks
              actions: ["*"]
              effect: deny
              roles: ["*"]
              when: ipInRange(context.ip, ["10.0.0.0/8", "192.0.2.0/24"])
            - name: everyone-views
              actions: [view]
              effect: allow
              roles: ["*"]
            - name: seen-as-ipv4
              actions: [inspect]
              effect: allow
              roles: ["*"]
              when: context.ip == "10.1.2.3"
            "#,
        );
        let from = |action: &str, ip: &str| {
            decide(
                &set,
                &ask("p", &[]).to(action, "thing").context(json!({"ip": ip})),
            )
        };
        for blocked in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "::FFFF:a01:203",
            "::ffff:192.0.2.200",
        ] {
            let d = from("view", blocked);
            assert_denied(&d, "things", "1", "blocked-networks");
            assert_eq!(
                trace(&d, "blocked-networks").outcome,
                "applies",
                "{blocked}"
            );
        }
        // Conditions see the IPv4 form.
        let d = from("inspect", "::ffff:10.1.2.3");
        assert_denied(&d, "things", "1", "blocked-networks");
        assert_eq!(trace(&d, "seen-as-ipv4").outcome, "applies");
        // Only mapped addresses are IPv4 ones: other IPv6 addresses ending in the same 32 bits
        // are not.
        for outside in ["::ffff:11.1.2.3", "2001:db8::a01:203", "64:ff9b::a01:203"] {
            let d = from("view", outside);
            assert_allowed(&d, "things", "1", "everyone-views");
            assert_eq!(
                trace(&d, "blocked-networks").outcome,
                "condition false",
                "{outside}"
            );
        }
    }

    #[test]
    fn time_between_reads_the_clock_in_the_named_zone_and_excludes_the_end() {
        let set = things(
            r#"
            - name: paris-office-hours
              actions: [view]
              effect: allow
              roles: ["*"]
              when: timeBetween(context.time, "08:00", "18:00", "Europe/Paris")
            - name: utc-office-hours
              actions: [sync]
              effect: allow
              roles: ["*"]
              when: timeBetween(context.time, "08:00", "18:00")
            "#,
        );
        let at = |action: &str, t: &str| {
            decide(
                &set,
                &ask("p", &[])
                    .to(action, "thing")
                    .context(json!({"time": t})),
            )
            .allow
        };
        // (time, allowed in Paris hours, allowed in UTC hours)
        let cases = [
            // 08:30 in Paris (CET, +01:00), 07:30 UTC.
            ("2026-11-23T07:30:00Z", true, false),
            // The same instant written with its offset.
            ("2026-11-23T08:30:00+01:00", true, false),
            ("2026-11-23T16:59:59Z", true, true),
            // 18:00 in Paris: the end of the window is excluded.
            ("2026-11-23T17:00:00Z", false, true),
            // Summer time (CEST, +02:00): 06:30 UTC is 08:30 in Paris.
            ("2026-07-01T06:30:00Z", true, false),
            ("2026-07-01T16:30:00Z", false, true),
        ];
        for (t, paris, utc) in cases {
            assert_eq!((at("view", t), at("sync", t)), (paris, utc), "at {t}");
        }
        let d = decide(
            &set,
            &ask("p", &[])
                .to("view", "thing")
                .context(json!({"time": "2026-11-23T07:30:00Z"})),
        );
        assert_allowed(&d, "things", "1", "paris-office-hours");
    }

    #[test]
    fn time_between_with_an_end_before_its_start_spans_midnight() {
        let set = things(
            r#"
            - name: night-freeze
              actions: [deploy]
              effect: deny
              roles: ["*"]
              when: timeBetween(context.time, "22:00", "06:00")
            - name: deployers-deploy
              actions: [deploy]
              effect: allow
              roles: [deployer]
            "#,
        );
        let deploy_at = |t: &str| {
            decide(
                &set,
                &ask("dee", &["deployer"])
                    .to("deploy", "thing")
                    .context(json!({"time": t})),
            )
        };
        // (time of day, inside the freeze)
        let cases = [
            ("21:59:59", false),
            ("22:00:00", true),
            ("23:30:00", true),
            ("00:00:00", true),
            ("05:59:59", true),
            ("06:00:00", false),
            ("12:00:00", false),
        ];
        for (t, frozen) in cases {
            let d = deploy_at(&format!("2026-11-24T{t}Z"));
            if frozen {
                assert_denied(&d, "things", "1", "night-freeze");
            } else {
                assert_allowed(&d, "things", "1", "deployers-deploy");
                assert_eq!(trace(&d, "night-freeze").outcome, "condition false", "{t}");
            }
        }
    }

    #[test]
    fn is_weekday_reads_the_day_in_the_named_zone() {
        let set = things(
            r#"
            - name: paris-weekdays
              actions: [view]
              effect: allow
              roles: ["*"]
              when: isWeekday(context.time, "Europe/Paris")
            - name: utc-weekdays
              actions: [sync]
              effect: allow
              roles: ["*"]
              when: isWeekday(context.time)
            "#,
        );
        let at = |action: &str, t: &str| {
            decide(
                &set,
                &ask("p", &[])
                    .to(action, "thing")
                    .context(json!({"time": t})),
            )
            .allow
        };
        let cases = [
            // Friday 23:30 UTC is Saturday 00:30 in Paris.
            ("2026-11-27T23:30:00Z", false, true),
            // Sunday 23:30 UTC is Monday 00:30 in Paris.
            ("2026-11-29T23:30:00Z", true, false),
            ("2026-11-25T12:00:00Z", true, true),
            ("2026-11-28T12:00:00Z", false, false),
        ];
        for (t, paris, utc) in cases {
            assert_eq!((at("view", t), at("sync", t)), (paris, utc), "at {t}");
        }
    }

    #[test]
    fn standard_cel_sees_principal_resource_action_and_extra_context_keys() {
        // `!` starts a YAML tag and a leading `"` a YAML string: such conditions are quoted.
        let set = things(
            r#"
            - name: finance-exports
              actions: [export]
              effect: allow
              roles: ["*"]
              when: '"finance" in principal.attributes.groups'
            - name: public-things-are-viewable
              actions: [view]
              effect: allow
              roles: ["*"]
              when: resource.attributes.tags.exists(t, t == "public")
            - name: unlocked-things-are-editable
              actions: [edit]
              effect: allow
              roles: [analyst]
              when: "!has(resource.attributes.locked_by)"
            - name: same-tenant-seniors-share
              actions: [share]
              effect: allow
              roles: ["*"]
              when: >-
                context.tenant == resource.attributes.tenant
                && principal.attributes.level >= 3 && action == "share"
                && principal.sub.startsWith("u-") && size(principal.roles) == 0
            "#,
        );
        let export = |groups: Value| {
            decide(
                &set,
                &ask("u-1", &[])
                    .to("export", "thing")
                    .principal_attributes(json!({"groups": groups})),
            )
        };
        assert_allowed(
            &export(json!(["ops", "finance"])),
            "things",
            "1",
            "finance-exports",
        );
        assert_no_rule_allows(&export(json!(["ops"])), "export", "thing");

        let view = |tags: Value| {
            decide(
                &set,
                &ask("u-1", &[])
                    .to("view", "thing")
                    .resource_attributes(json!({"tags": tags})),
            )
        };
        assert_allowed(
            &view(json!(["internal", "public"])),
            "things",
            "1",
            "public-things-are-viewable",
        );
        assert_no_rule_allows(&view(json!(["internal"])), "view", "thing");
        assert_no_rule_allows(&view(json!([])), "view", "thing");

        let edit = |attributes: Value| {
            decide(
                &set,
                &ask("u-1", &["analyst"])
                    .to("edit", "thing")
                    .resource_attributes(attributes),
            )
        };
        assert_allowed(
            &edit(json!({})),
            "things",
            "1",
            "unlocked-things-are-editable",
        );
        let d = edit(json!({"locked_by": "zoe"}));
        assert_no_rule_allows(&d, "edit", "thing");
        assert_eq!(
            trace(&d, "unlocked-things-are-editable").outcome,
            "condition false"
        );

        let share = |sub: &str, tenant: &str, level: i64| {
            decide(
                &set,
                &ask(sub, &[])
                    .to("share", "thing")
                    .principal_attributes(json!({"level": level}))
                    .resource_attributes(json!({"tenant": "acme"}))
                    .context(json!({"tenant": tenant, "ip": "10.0.0.1"})),
            )
        };
        assert_allowed(
            &share("u-1", "acme", 3),
            "things",
            "1",
            "same-tenant-seniors-share",
        );
        assert_no_rule_allows(&share("u-1", "globex", 3), "share", "thing");
        assert_no_rule_allows(&share("u-1", "acme", 2), "share", "thing");
        assert_no_rule_allows(&share("svc-1", "acme", 5), "share", "thing");
    }
}

/// `all`, `any` and `none`, nested.
mod combinators {
    use super::*;

    fn releases() -> PolicySet {
        PolicyDir::with(&[(
            "releases.yaml",
            r#"
            resource_policy:
              id: releases
              version: "1"
              resource: release
              rules:
                - name: guarded-release
                  actions: [ship]
                  effect: allow
                  roles: [engineer]
                  when:
                    all:
                      - resource.attributes.tests_passed
                      - any:
                          - '"release-manager" in principal.attributes.titles'
                          - resource.attributes.size < 10
                      - none:
                          - resource.attributes.frozen
                          - context.incident
            "#,
        )])
        .load()
    }

    fn ship(set: &PolicySet, titles: Value, release: Value, incident: bool) -> Decision {
        decide(
            set,
            &ask("eng", &["engineer"])
                .to("ship", "release")
                .principal_attributes(json!({"titles": titles}))
                .resource_attributes(release)
                .context(json!({"incident": incident})),
        )
    }

    #[test]
    fn all_needs_every_part_any_one_part_and_none_no_part() {
        let set = releases();
        fn release(tests_passed: bool, size: i64, frozen: bool) -> Value {
            json!({"tests_passed": tests_passed, "size": size, "frozen": frozen})
        }
        let rm = json!(["release-manager"]);

        let d = ship(&set, rm.clone(), release(true, 50, false), false);
        assert_allowed(&d, "releases", "1", "guarded-release");
        // With an explanation every part is evaluated and shown.
        assert_eq!(
            render(condition(&d, "guarded-release")),
            [
                "all => true",
                "  resource.attributes.tests_passed => true",
                "  any => true",
                r#"    "release-manager" in principal.attributes.titles => true"#,
                "    resource.attributes.size < 10 => false",
                "  none => true",
                "    resource.attributes.frozen => false",
                "    context.incident => false",
            ]
        );

        // `any`: the second part is enough.
        let d = ship(&set, json!([]), release(true, 5, false), false);
        assert_allowed(&d, "releases", "1", "guarded-release");

        // `any`: neither part.
        let d = ship(&set, json!([]), release(true, 50, false), false);
        assert_no_rule_allows(&d, "ship", "release");
        let lines = render(condition(&d, "guarded-release"));
        assert_eq!(
            (lines[0].as_str(), lines[2].as_str()),
            ("all => false", "  any => false")
        );

        // `none`: one part holds.
        for (frozen, incident) in [(true, false), (false, true)] {
            let d = ship(&set, rm.clone(), release(true, 5, frozen), incident);
            assert_no_rule_allows(&d, "ship", "release");
            let lines = render(condition(&d, "guarded-release"));
            assert_eq!(lines[5], "  none => false", "{lines:#?}");
        }

        // `all`: one part fails.
        let d = ship(&set, rm, release(false, 5, false), false);
        assert_no_rule_allows(&d, "ship", "release");
        assert_eq!(trace(&d, "guarded-release").outcome, "condition false");
    }

    #[test]
    fn an_error_inside_a_combinator_counts_only_when_no_other_part_decides() {
        let set = PolicyDir::with(&[(
            "vault.yaml",
            r#"
            resource_policy:
              id: vault
              version: "1"
              resource: secret
              rules:
                - name: alice-or-cleared
                  actions: [read]
                  effect: allow
                  roles: ["*"]
                  when:
                    any:
                      - resource.attributes.clearance == "open"
                      - principal.sub == "alice"
                - name: bob-when-flagged
                  actions: [read]
                  effect: deny
                  roles: ["*"]
                  when:
                    all:
                      - resource.attributes.flagged
                      - principal.sub == "bob"
            "#,
        )])
        .load();
        // Neither attribute exists on this secret: both first parts fail to evaluate.
        let read = |who: &str| decide(&set, &ask(who, &[]).to("read", "secret"));

        // any(error, true) is true; all(error, false) is false.
        let d = read("alice");
        assert_allowed(&d, "vault", "1", "alice-or-cleared");
        assert_eq!(
            render(condition(&d, "alice-or-cleared")),
            [
                "any => true",
                r#"  resource.attributes.clearance == "open" => error: No such key: clearance"#,
                r#"  principal.sub == "alice" => true"#,
            ]
        );
        assert_eq!(trace(&d, "bob-when-flagged").outcome, "condition false");

        // any(error, false) and all(error, true) are errors: the allow does not apply, the deny
        // does.
        let d = read("bob");
        assert_denied_on_error(&d, "vault", "1", "bob-when-flagged", "No such key: flagged");
        assert_eq!(
            outcomes(&d),
            [
                ("bob-when-flagged", "condition error", true),
                ("alice-or-cleared", "condition error", false),
            ]
        );
        assert_eq!(
            render(condition(&d, "bob-when-flagged")),
            [
                "all => error: No such key: flagged",
                "  resource.attributes.flagged => error: No such key: flagged",
                r#"  principal.sub == "bob" => true"#,
            ]
        );
    }
}

/// A condition that cannot be evaluated never opens access.
mod fail_closed {
    use super::*;

    fn documents() -> PolicySet {
        PolicyDir::with(&[(
            "documents.yaml",
            r#"
            resource_policy:
              id: documents
              version: "8"
              resource: document
              rules:
                - name: public-documents
                  actions: [view]
                  effect: allow
                  roles: ["*"]
                  when: resource.attributes.classification == "public"
                - name: staff-do-anything
                  actions: ["*"]
                  effect: allow
                  roles: [staff]
                - name: secret-documents
                  actions: ["*"]
                  effect: deny
                  roles: ["*"]
                  when: resource.attributes.classification == "secret"
            "#,
        )])
        .load()
    }

    #[test]
    fn a_missing_attribute_keeps_an_allow_rule_from_applying() {
        let set = documents();
        let d = decide(&set, &ask("guest", &[]).to("view", "document"));
        // The deny rule fails on the same attribute and decides; the explanation shows that the
        // allow rule did not apply, for the same reason.
        assert_denied_on_error(
            &d,
            "documents",
            "8",
            "secret-documents",
            "No such key: classification",
        );
        let t = trace(&d, "public-documents");
        assert_eq!((t.outcome, t.matched), ("condition error", false));
        let c = condition(&d, "public-documents");
        assert_eq!(c.result, None);
        assert_eq!(c.error.as_deref(), Some("No such key: classification"));

        // With the attribute present, the same rule applies.
        let d = decide(
            &set,
            &ask("guest", &[])
                .to("view", "document")
                .resource_attributes(json!({"classification": "public"})),
        );
        assert_allowed(&d, "documents", "8", "public-documents");
    }

    #[test]
    fn a_missing_attribute_makes_a_deny_rule_apply() {
        let set = documents();
        let d = decide(&set, &ask("sam", &["staff"]).to("edit", "document"));
        assert_denied_on_error(
            &d,
            "documents",
            "8",
            "secret-documents",
            "No such key: classification",
        );
        let t = trace(&d, "secret-documents");
        assert_eq!((t.outcome, t.matched), ("condition error", true));
        assert_eq!(trace(&d, "staff-do-anything").outcome, "applies");

        let with = |classification: &str| {
            decide(
                &set,
                &ask("sam", &["staff"])
                    .to("edit", "document")
                    .resource_attributes(json!({"classification": classification})),
            )
        };
        let d = with("internal");
        assert_allowed(&d, "documents", "8", "staff-do-anything");
        assert!(!d.condition_error);
        assert_denied(&with("secret"), "documents", "8", "secret-documents");
    }

    const OFFICE_HOURS: &str = r#"
        resource_policy:
          id: office
          version: "1"
          resource: document
          rules:
            - name: outside-hours-outside-office
              actions: ["*"]
              effect: deny
              roles: ["*"]
              when:
                none:
                  - ipInRange(context.ip, "10.0.0.0/8")
                  - timeBetween(context.time, "08:00", "19:00")
            - name: office-network-only
              actions: [print]
              effect: allow
              roles: ["*"]
              when: ipInRange(context.ip, "10.0.0.0/8")
            - name: everyone-views
              actions: [view]
              effect: allow
              roles: ["*"]
        "#;

    #[test]
    fn a_missing_ip_fails_closed() {
        let set = PolicyDir::with(&[("office.yaml", OFFICE_HOURS)]).load();
        let at = |action: &str, context: Value| {
            decide(&set, &ask("p", &[]).to(action, "document").context(context))
        };
        let no_ip = "Error executing function 'ipInRange': no IP address in the request";

        // At night, the deny cannot tell whether the request is from the office: it applies.
        let d = at("view", json!({"time": "2026-11-23T23:00:00Z"}));
        assert_denied_on_error(&d, "office", "1", "outside-hours-outside-office", no_ip);
        assert_eq!(
            render(condition(&d, "outside-hours-outside-office")),
            [
                format!("none => error: {no_ip}"),
                format!("  ipInRange(context.ip, \"10.0.0.0/8\") => error: {no_ip}"),
                r#"  timeBetween(context.time, "08:00", "19:00") => false"#.to_string(),
            ]
        );
        // From the office it does not.
        let d = at(
            "view",
            json!({"time": "2026-11-23T23:00:00Z", "ip": "10.1.1.1"}),
        );
        assert_allowed(&d, "office", "1", "everyone-views");

        // In office hours the time alone settles `none`: the missing IP does not matter there ...
        let d = at("view", json!({"time": "2026-11-23T10:00:00Z"}));
        assert_allowed(&d, "office", "1", "everyone-views");
        // ... but an allow rule that needs the IP does not apply.
        let d = at("print", json!({"time": "2026-11-23T10:00:00Z"}));
        assert_no_rule_allows(&d, "print", "document");
        assert!(d.condition_error);
        assert!(d.reason.ends_with(&format!("({no_ip})")), "{}", d.reason);
        let t = trace(&d, "office-network-only");
        assert_eq!((t.outcome, t.matched), ("condition error", false));
        assert_eq!(
            condition(&d, "office-network-only").error.as_deref(),
            Some(no_ip)
        );
    }

    #[test]
    fn a_condition_that_is_not_a_bool_is_an_error_not_true() {
        let set = PolicyDir::with(&[(
            "odd.yaml",
            r#"
            resource_policy:
              id: odd
              version: "1"
              resource: document
              rules:
                - name: a-string-is-not-true
                  actions: [view]
                  effect: allow
                  roles: ["*"]
                  when: principal.sub
                - name: a-list-is-not-true
                  actions: [view]
                  effect: allow
                  roles: ["*"]
                  when: principal.roles
                - name: a-count-is-not-false
                  actions: [edit]
                  effect: deny
                  roles: ["*"]
                  when: resource.attributes.count
                - name: editors-edit
                  actions: [edit]
                  effect: allow
                  roles: [editor]
            "#,
        )])
        .load();

        let d = decide(&set, &ask("bob", &["editor"]).to("view", "document"));
        assert_no_rule_allows(&d, "view", "document");
        assert_eq!(
            outcomes(&d),
            [
                ("a-count-is-not-false", "action not listed", false),
                ("a-string-is-not-true", "condition error", false),
                ("a-list-is-not-true", "condition error", false),
                ("editors-edit", "action not listed", false),
            ]
        );
        assert_eq!(
            condition(&d, "a-string-is-not-true").error.as_deref(),
            Some("condition returned string, not a bool")
        );
        assert_eq!(
            condition(&d, "a-list-is-not-true").error.as_deref(),
            Some("condition returned list, not a bool")
        );

        // Zero is not "false" either: the deny rule applies.
        let d = decide(
            &set,
            &ask("bob", &["editor"])
                .to("edit", "document")
                .resource_attributes(json!({"count": 0})),
        );
        assert_denied_on_error(
            &d,
            "odd",
            "1",
            "a-count-is-not-false",
            "condition returned int, not a bool",
        );
    }
}

/// `evaluate_batch` answers each check as `evaluate` would.
mod batch {
    use super::*;

    #[test]
    fn a_batch_gives_the_same_answers_as_single_requests() {
        let set = PolicyDir::with(&[
            (
                "roles.yaml",
                r#"
                derived_roles:
                  name: document_roles
                  definitions:
                    - name: owner
                      parent_roles: ["*"]
                      when: resource.owner == principal.sub
                "#,
            ),
            (
                "documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "2"
                  import_derived_roles: [document_roles]
                  resource: document
                  rules:
                    - name: owners-edit
                      actions: [edit, delete]
                      effect: allow
                      derived_roles: [owner]
                    - name: editors-view
                      actions: [view]
                      effect: allow
                      roles: [editor]
                    - name: locked-documents
                      actions: [delete]
                      effect: deny
                      roles: ["*"]
                      when: resource.attributes.locked
                    - name: office-prints
                      actions: [print]
                      effect: allow
                      roles: ["*"]
                      when:
                        all:
                          - ipInRange(context.ip, "10.0.0.0/8")
                          - timeBetween(context.time, "08:00", "18:00")
                "#,
            ),
        ])
        .load();

        let principal = json!({"sub": "alice", "roles": ["editor"]});
        let context = json!({"ip": "10.9.9.9"});
        let checks = json!([
            {"resource": {"type": "document", "id": "mine", "owner": "alice"}, "action": "edit"},
            {"resource": {"type": "document", "id": "theirs", "owner": "bob"}, "action": "edit"},
            {"resource": {"type": "document", "id": "theirs", "owner": "bob"}, "action": "view"},
            {"resource": {"type": "document", "id": "mine", "owner": "alice",
                          "attributes": {"locked": true}}, "action": "delete"},
            {"resource": {"type": "document", "id": "mine", "owner": "alice"}, "action": "delete"},
            {"resource": {"type": "document", "id": "d"}, "action": "print"},
            {"resource": {"type": "invoice", "id": "i"}, "action": "view"},
        ]);
        let batch: BatchRequest = serde_json::from_value(
            json!({"principal": principal, "context": context, "checks": checks}),
        )
        .expect("batch");
        let quiet = Options {
            explain: false,
            now: Some(time(MONDAY_NOON)),
        };
        for options in [
            explained_at(MONDAY_NOON),
            explained_at("2026-11-23T20:00:00Z"),
            quiet,
        ] {
            let answers = set.evaluate_batch(&batch, options);
            assert_eq!(answers.len(), batch.checks.len());
            for (check, answer) in batch.checks.iter().zip(&answers) {
                let single: Request = serde_json::from_value(json!({
                    "principal": principal,
                    "context": context,
                    "resource": check.resource,
                    "action": check.action,
                }))
                .expect("request");
                let alone = set.evaluate(&single, options);
                assert_eq!(
                    comparable(answer),
                    comparable(&alone),
                    "{} on {}",
                    check.action,
                    check.resource.id
                );
            }
        }

        // And the answers are the expected ones, so the comparison above is not vacuous.
        let answers = set.evaluate_batch(&batch, explained_at(MONDAY_NOON));
        let summary: Vec<_> = answers
            .iter()
            .map(|d| (d.allow, d.rule.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (true, Some("owners-edit")),
                (false, None),
                (true, Some("editors-view")),
                (false, Some("locked-documents")),
                (false, Some("locked-documents")),
                (true, Some("office-prints")),
                (false, None),
            ]
        );
        assert!(answers[4]
            .reason
            .contains("could not be evaluated (No such key: locked)"));
        assert_eq!(
            answers[6].reason,
            r#"no policy covers resource type "invoice""#
        );
        let mut ids: Vec<_> = answers.iter().map(|d| d.decision_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), answers.len(), "decision ids are unique");
    }

    /// A decision without its id, which differs between any two decisions.
    fn comparable(d: &Decision) -> Value {
        let mut v = serde_json::to_value(d).expect("decision serializes");
        v.as_object_mut().expect("object").remove("decision_id");
        v["condition_error"] = json!(d.condition_error);
        v
    }
}

/// `Options.now` freezes the clock for requests that name no time.
mod clock {
    use super::*;

    fn day_shift() -> PolicySet {
        PolicyDir::with(&[(
            "shifts.yaml",
            r#"
            resource_policy:
              id: shifts
              version: "1"
              resource: ward
              rules:
                - name: day-shift
                  actions: [enter]
                  effect: allow
                  roles: [nurse]
                  when: timeBetween(context.time, "09:00", "17:00")
            "#,
        )])
        .load()
    }

    fn enter(context: Value) -> Request {
        ask("nina", &["nurse"])
            .to("enter", "ward")
            .context(context)
            .request()
    }

    #[test]
    fn the_frozen_clock_is_used_when_the_request_names_no_time() {
        let set = day_shift();
        let d = set.evaluate(&enter(json!({})), explained_at("2026-11-23T10:00:00Z"));
        assert_allowed(&d, "shifts", "1", "day-shift");
        let d = set.evaluate(&enter(json!({})), explained_at("2026-11-23T20:00:00Z"));
        assert_no_rule_allows(&d, "enter", "ward");

        let batch: BatchRequest = serde_json::from_value(json!({
            "principal": {"sub": "nina", "roles": ["nurse"]},
            "checks": [{"resource": {"type": "ward"}, "action": "enter"}],
        }))
        .expect("batch");
        assert!(set.evaluate_batch(&batch, explained_at("2026-11-23T10:00:00Z"))[0].allow);
        assert!(!set.evaluate_batch(&batch, explained_at("2026-11-23T20:00:00Z"))[0].allow);
    }

    #[test]
    fn the_requests_own_time_wins_over_the_frozen_clock() {
        let set = day_shift();
        let d = set.evaluate(
            &enter(json!({"time": "2026-11-23T20:00:00Z"})),
            explained_at("2026-11-23T10:00:00Z"),
        );
        assert_no_rule_allows(&d, "enter", "ward");
        let d = set.evaluate(
            &enter(json!({"time": "2026-11-23T10:00:00Z"})),
            explained_at("2026-11-23T20:00:00Z"),
        );
        assert_allowed(&d, "shifts", "1", "day-shift");
        // An offset is honoured: 11:00+02:00 is 09:00 UTC, inside the (UTC) window.
        let d = set.evaluate(
            &enter(json!({"time": "2026-11-23T11:00:00+02:00"})),
            explained_at("2026-11-23T20:00:00Z"),
        );
        assert_allowed(&d, "shifts", "1", "day-shift");
    }
}

/// Every way a policy directory can fail to load, each reported with file, line, key and
/// message.
mod load_errors {
    use super::*;

    /// Writes `yaml` as the only file and returns the one error of loading it.
    fn only_error(yaml: &str) -> (PolicyDir, LocatedError) {
        let dir = PolicyDir::with(&[("documents.yaml", yaml)]);
        let e = dir.error();
        assert_eq!(e.file, dir.file("documents.yaml"), "{e}");
        (dir, e)
    }

    #[track_caller]
    fn assert_error(e: &LocatedError, line: Option<usize>, key: &str, message: &str) {
        assert_eq!(
            (e.line, e.key_path.as_str()),
            (line, key),
            "line and key of {e}"
        );
        assert!(e.message.contains(message), "{message:?} not in {e}");
    }

    #[test]
    fn a_yaml_syntax_error() {
        let (dir, e) = only_error(
            r#"
            resource_policy:
              id: documents
               version: "1"
              resource: document
              rules: []
            "#,
        );
        assert_error(
            &e,
            Some(3),
            "",
            "mapping values are not allowed in this context",
        );
        // Display: `file:line: message`, no "at line L column C" repeated.
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: mapping values are not allowed in this context",
                dir.file("documents.yaml").display()
            )
        );
    }

    #[test]
    fn an_unknown_field() {
        let (dir, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: [edit]
                  effects: allow
                  roles: [editor]
            "#,
        );
        assert_error(
            &e,
            Some(8),
            "resource_policy.rules[0]",
            "unknown field `effects`",
        );
        assert!(
            e.message
                .contains("expected one of `name`, `actions`, `effect`"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}:8: resource_policy.rules[0]: {}",
                dir.file("documents.yaml").display(),
                e.message
            )
        );

        // A misspelt top-level key.
        let (_, e) = only_error("resource_polcy:\n  id: documents\n");
        assert_error(&e, Some(1), "", "unknown field `resource_polcy`");
    }

    #[test]
    fn a_value_of_the_wrong_type() {
        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: edit
                  effect: allow
                  roles: [editor]
            "#,
        );
        assert_error(
            &e,
            Some(7),
            "resource_policy.rules[0].actions",
            r#"invalid type: string "edit", expected a sequence"#,
        );

        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: [edit]
                  effect: permit
                  roles: [editor]
            "#,
        );
        assert_error(
            &e,
            Some(8),
            "resource_policy.rules[0].effect",
            "unknown variant `permit`, expected `allow` or `deny`",
        );

        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: [edit]
                  effect: allow
                  roles: [editor]
                  when: 1
            "#,
        );
        assert_error(
            &e,
            Some(10),
            "resource_policy.rules[0].when",
            "invalid type: integer `1`, expected a CEL expression, or a map with one key",
        );
    }

    /// A policy whose only rule has condition `when`.
    fn with_condition(when: &str) -> String {
        let policy = r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: [edit]
                  effect: allow
                  roles: [editor]
                  when: WHEN
            "#;
        dedent(policy).replace("WHEN", when)
    }

    #[test]
    fn cel_that_does_not_parse() {
        let (_, e) = only_error(&with_condition("principal.sub =="));
        assert_error(
            &e,
            Some(10),
            "resource_policy.rules[0].when",
            "CEL syntax error at 1:",
        );
        assert!(!e.message.contains("<input>"), "{e}");
        assert!(!e.message.contains('\n'), "one line: {e}");
    }

    #[test]
    fn an_unknown_cel_function() {
        let (_, e) = only_error(&with_condition(r#"ipInRanges(context.ip, "10.0.0.0/8")"#));
        assert_error(
            &e,
            Some(10),
            "resource_policy.rules[0].when",
            "unknown function `ipInRanges` (helpers: ipInRange, timeBetween, isWeekday)",
        );
    }

    #[test]
    fn an_unknown_cel_variable() {
        let (_, e) = only_error(&with_condition(r#"request.ip == "10.0.0.1""#));
        assert_error(
            &e,
            Some(10),
            "resource_policy.rules[0].when",
            "unknown variable `request` (conditions can use principal, resource, action, context)",
        );

        // Inside a combinator, the key path leads to the part at fault.
        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-edit
                  actions: [edit]
                  effect: allow
                  roles: [editor]
                  when:
                    all:
                      - principal.sub == "a"
                      - any:
                          - true
                          - user.name == "a"
            "#,
        );
        assert_error(
            &e,
            Some(15),
            "resource_policy.rules[0].when.all[1].any[1]",
            "unknown variable `user`",
        );

        // Comprehension variables are not unknown.
        let dir = PolicyDir::with(&[(
            "documents.yaml",
            &with_condition(r#"principal.roles.exists(r, r == "editor")"#),
        )]);
        dir.load();
    }

    /// A policy whose second rule has condition `when`, at line 14.
    fn second_rule_with_condition(when: &str) -> String {
        let policy = r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-view
                  actions: [view]
                  effect: allow
                  roles: [editor]
                - name: office-edits
                  actions: [edit]
                  effect: allow
                  roles: [editor]
                  when: WHEN
            "#;
        dedent(policy).replace("WHEN", when)
    }

    #[test]
    fn a_helper_argument_written_as_a_literal_that_the_helper_cannot_read() {
        // Were they checked only when evaluated, each of these would make the condition an error
        // on every request (and its rule never apply, or always deny).
        let cases = [
            (
                r#"ipInRange(context.ip, "10.0.0.0/99")"#,
                r#"`ipInRange` argument 2: "10.0.0.0/99" is not a CIDR range"#,
            ),
            (
                r#"ipInRange(context.ip, ["10.0.0.0/8", "bogus"])"#,
                r#"`ipInRange` argument 2, item 2: "bogus" is not a CIDR range"#,
            ),
            (
                r#"ipInRange("10.0.0.256", "10.0.0.0/8")"#,
                r#"`ipInRange` argument 1: "10.0.0.256" is not an IP address"#,
            ),
            (
                r#"timeBetween(context.time, "08:00", "25:00")"#,
                r#"`timeBetween` argument 3: "25:00" is not a time of day like "09:30""#,
            ),
            (
                r#"timeBetween(context.time, "8am", "19:00")"#,
                r#"`timeBetween` argument 2: "8am" is not a time of day like "09:30""#,
            ),
            (
                r#"timeBetween(context.time, "08:00", "19:00", "Mars/Olympus")"#,
                r#"`timeBetween` argument 4: unknown time zone "Mars/Olympus""#,
            ),
            (
                r#"isWeekday(context.time, "Mars/Olympus")"#,
                r#"`isWeekday` argument 2: unknown time zone "Mars/Olympus""#,
            ),
            // Wherever the call is in the expression.
            (
                r#"principal.sub == "a" || !isWeekday(context.time, "Mars/Olympus")"#,
                r#"`isWeekday` argument 2: unknown time zone "Mars/Olympus""#,
            ),
        ];
        for (when, message) in cases {
            let (dir, e) = only_error(&second_rule_with_condition(when));
            assert_error(&e, Some(14), "resource_policy.rules[1].when", message);
            assert_eq!(
                e.to_string(),
                format!(
                    "{}:14: resource_policy.rules[1].when: {message}",
                    dir.file("documents.yaml").display()
                ),
                "{when}"
            );
        }

        // Inside a combinator and in a derived role, the key path leads to the part at fault.
        let (_, e) = only_error(&second_rule_with_condition(
            "\n        any:\n          - principal.sub == \"a\"\n          - timeBetween(context.time, \"08:00\", \"24:00\")",
        ));
        assert_error(
            &e,
            Some(17),
            "resource_policy.rules[1].when.any[1]",
            r#"`timeBetween` argument 3: "24:00" is not a time of day"#,
        );
        let (_, e) = only_error(
            r#"
            derived_roles:
              name: office_roles
              definitions:
                - name: on_site
                  parent_roles: ["*"]
                  when: ipInRange(context.ip, ["10.0.0.0/8", "10.300.0.0/16"])
            "#,
        );
        assert_error(
            &e,
            Some(6),
            "derived_roles.definitions[0].when",
            r#"`ipInRange` argument 2, item 2: "10.300.0.0/16" is not a CIDR range"#,
        );

        // Literals the helpers read load; arguments computed from the request are checked when
        // evaluated.
        for when in [
            r#"ipInRange(context.ip, ["10.0.0.0/8", "::ffff:192.0.2.0/120", "2001:db8::1"])"#,
            r#"ipInRange("::ffff:10.1.2.3", context.ranges)"#,
            r#"timeBetween(context.time, "00:00", "23:59", "Europe/Paris")"#,
            r#"timeBetween(context.time, context.from, "19:00", context.zone)"#,
            r#"isWeekday(context.time, "UTC") && isWeekday(context.time, principal.attributes.zone)"#,
        ] {
            PolicyDir::with(&[("documents.yaml", &second_rule_with_condition(when))]).load();
        }
    }

    const ROLES: &str = r#"
        derived_roles:
          name: document_roles
          definitions:
            - name: author
              parent_roles: ["*"]
              when: resource.owner == principal.sub
        "#;

    #[test]
    fn an_unknown_derived_role_in_a_rule() {
        let dir = PolicyDir::with(&[
            ("roles.yaml", ROLES),
            (
                "documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "1"
                  resource: document
                  import_derived_roles: [document_roles]
                  rules:
                    - name: editors-view
                      actions: [view]
                      effect: allow
                      roles: [editor]
                    - name: owners-edit
                      actions: [edit]
                      effect: allow
                      derived_roles: [author, owner]
                "#,
            ),
        ]);
        let e = dir.error();
        assert_eq!(e.file, dir.file("documents.yaml"));
        assert_error(
            &e,
            Some(14),
            "resource_policy.rules[1].derived_roles[1]",
            r#"unknown derived role "owner" (imported: author)"#,
        );
    }

    #[test]
    fn an_import_of_an_unknown_derived_roles_set() {
        let dir = PolicyDir::with(&[
            ("roles.yaml", ROLES),
            (
                "documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "1"
                  resource: document
                  import_derived_roles: [document_role]
                  rules:
                    - name: owners-edit
                      actions: [edit]
                      effect: allow
                      derived_roles: [author]
                "#,
            ),
        ]);
        let errors = dir.errors();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(errors[0].file, dir.file("documents.yaml"));
        assert_error(
            &errors[0],
            Some(5),
            "resource_policy.import_derived_roles[0]",
            r#"no derived_roles set named "document_role" (known: document_roles)"#,
        );
        // Nothing was imported, so the rule's derived role is unknown too.
        assert_error(
            &errors[1],
            Some(10),
            "resource_policy.rules[0].derived_roles[0]",
            r#"unknown derived role "author" (imported: none)"#,
        );
    }

    #[test]
    fn a_derived_role_defined_twice() {
        let (_, e) = only_error(
            r#"
            derived_roles:
              name: document_roles
              definitions:
                - name: owner
                  parent_roles: ["*"]
                  when: resource.owner == principal.sub
                - name: owner
                  parent_roles: [editor]
            "#,
        );
        // The line is the second definition, not the first.
        assert_error(
            &e,
            Some(7),
            "derived_roles.definitions[1].name",
            r#"derived role "owner" is defined twice"#,
        );
    }

    #[test]
    fn a_derived_role_defined_by_two_imported_sets() {
        // Were the last import to win, `extra_roles`' unconditional `owner` would make every
        // principal the owner of every document.
        let dir = PolicyDir::with(&[
            ("roles.yaml", ROLES),
            (
                "extra_roles.yaml",
                r#"
                derived_roles:
                  name: extra_roles
                  definitions:
                    - name: reviewer
                      parent_roles: [editor]
                    - name: author
                      parent_roles: ["*"]
                      when: "true"
                "#,
            ),
            (
                "documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "1"
                  resource: document
                  import_derived_roles:
                    - document_roles
                    - extra_roles
                  rules:
                    - name: authors-edit
                      actions: [edit]
                      effect: allow
                      derived_roles: [author]
                "#,
            ),
        ]);
        let e = dir.error();
        assert_eq!(e.file, dir.file("documents.yaml"));
        let message = format!(
            r#"derived role "author" is defined by both imported sets "document_roles" ({}) and "extra_roles" ({}); rename one"#,
            dir.file("roles.yaml").display(),
            dir.file("extra_roles.yaml").display()
        );
        assert_error(
            &e,
            Some(7),
            "resource_policy.import_derived_roles[1]",
            &message,
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}:7: resource_policy.import_derived_roles[1]: {message}",
                dir.file("documents.yaml").display()
            )
        );

        // Importing one set twice is no clash: the names lead to the same roles.
        dir.write(
            "documents.yaml",
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              import_derived_roles: [document_roles, document_roles]
              rules:
                - name: authors-edit
                  actions: [edit]
                  effect: allow
                  derived_roles: [author]
            "#,
        );
        let set = dir.load();
        let d = decide(
            &set,
            &ask("bob", &[]).to("edit", "document").owned_by("alice"),
        );
        assert_no_rule_allows(&d, "edit", "document");
    }

    #[test]
    fn a_policy_id_used_by_two_files() {
        let policy = |version: &str| {
            let policy = r#"
                resource_policy:
                  id: documents
                  version: "VERSION"
                  resource: document
                  rules:
                    - name: everyone-views
                      actions: [view]
                      effect: allow
                      roles: ["*"]
                "#;
            dedent(policy).replace("VERSION", version)
        };
        let dir = PolicyDir::with(&[("a.yaml", &policy("1")), ("b.yaml", &policy("2"))]);
        let e = dir.error();
        assert_eq!(
            e.file,
            dir.file("b.yaml"),
            "the second file in load order is at fault"
        );
        assert_error(
            &e,
            Some(2),
            "resource_policy.id",
            &format!(
                r#"policy id "documents" is also used by {}"#,
                dir.file("a.yaml").display()
            ),
        );
    }

    #[test]
    fn a_rule_name_used_twice() {
        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: view
                  actions: [view]
                  effect: allow
                  roles: [editor]
                - name: edit
                  actions: [edit]
                  effect: allow
                  roles: [editor]
                - name: view
                  actions: [view]
                  effect: deny
                  roles: [guest]
            "#,
        );
        // The line is the second use, not the first.
        assert_error(
            &e,
            Some(14),
            "resource_policy.rules[2].name",
            r#"rule name "view" is used twice in this policy"#,
        );
    }

    #[test]
    fn a_rule_without_roles() {
        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-view
                  actions: [view]
                  effect: allow
                  roles: [editor]
                - name: nobody
                  actions: [edit]
                  effect: allow
                  roles: []
            "#,
        );
        assert_error(
            &e,
            Some(10),
            "resource_policy.rules[1].roles",
            r#"list roles or derived_roles (roles: ["*"] for everyone)"#,
        );
    }

    #[test]
    fn a_rule_with_no_actions() {
        let (_, e) = only_error(
            r#"
            resource_policy:
              id: documents
              version: "1"
              resource: document
              rules:
                - name: editors-view
                  actions: [view]
                  effect: allow
                  roles: [editor]
                - name: editors-nothing
                  effect: allow
                  roles: [editor]
                  actions: []
            "#,
        );
        assert_error(
            &e,
            Some(13),
            "resource_policy.rules[1].actions",
            r#"list at least one action ("*" for every action)"#,
        );
    }

    #[test]
    fn a_file_with_both_top_level_keys_or_neither() {
        let (_, e) = only_error(&format!("{}{}", dedent(ROLES), with_condition("true")));
        assert_error(
            &e,
            None,
            "",
            "a file holds either resource_policy or derived_roles, not both",
        );

        for empty in ["", "# nothing yet\n", "{}\n"] {
            let (_, e) = only_error(empty);
            assert_error(&e, None, "", "expected resource_policy or derived_roles");
        }
    }

    #[test]
    fn a_directory_without_policies() {
        let dir = PolicyDir::new();
        let e = dir.error();
        assert_eq!(e.file, dir.path());
        assert_error(
            &e,
            None,
            "",
            "no resource policies found (files ending in _test.yaml are tests, not policies)",
        );
        assert_eq!(
            e.to_string(),
            format!("{}: {}", dir.path().display(), e.message)
        );

        // Tests, hidden files, other files and derived roles alone are no policies either.
        dir.write("documents_test.yaml", "name: documents\ntests: []\n");
        dir.write(".documents.yaml", &with_condition("true"));
        dir.write("README.md", "# policies\n");
        dir.write("roles.yaml", ROLES);
        let e = dir.error();
        assert_eq!(e.file, dir.path());
        assert!(e.message.starts_with("no resource policies found"), "{e}");

        let missing = dir.file("missing");
        let Err(mut errors) = policy::load(&missing) else {
            panic!("loaded a directory that does not exist");
        };
        let e = errors.0.remove(0);
        assert_eq!(e.file, missing);
        assert!(
            e.message.starts_with("cannot read the policy directory"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_derived_roles_file_is_the_only_error_its_importers_cause() {
        let dir = PolicyDir::with(&[
            (
                "roles.yaml",
                r#"
                derived_roles:
                  name: document_roles
                  definitions:
                    - name: owner
                      parent_roles: ["*"]
                      when: resource.owner ==
                "#,
            ),
            (
                "documents.yaml",
                r#"
                resource_policy:
                  id: documents
                  version: "1"
                  resource: document
                  import_derived_roles: [document_roles]
                  rules:
                    - name: owners-edit
                      actions: [edit]
                      effect: allow
                      derived_roles: [owner]
                "#,
            ),
        ]);
        let errors = dir.errors();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].file.ends_with("roles.yaml"), "{errors:#?}");
        assert_eq!(errors[0].key_path, "derived_roles.definitions[0].when");
    }

    #[test]
    fn every_broken_file_is_reported() {
        let dir = PolicyDir::with(&[
            ("a.yaml", &with_condition("principal.sub ==")),
            ("b.yaml", "resource_policy:\n  id: b\n   version: \"1\"\n"),
            ("c.yaml", &with_condition("true").replace("documents", "c")),
            (
                "d.yaml",
                r#"
                resource_policy:
                  id: d
                  version: "1"
                  resource: document
                  rules:
                    - name: empty
                      actions: []
                      effect: allow
                      roles: []
                "#,
            ),
        ]);
        let errors = dir.errors();
        let found: Vec<_> = errors
            .iter()
            .map(|e| {
                let file = e.file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                (file, e.line, e.key_path.as_str())
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a.yaml", Some(10), "resource_policy.rules[0].when"),
                ("b.yaml", Some(3), ""),
                ("d.yaml", Some(7), "resource_policy.rules[0].actions"),
                ("d.yaml", Some(6), "resource_policy.rules[0].roles"),
            ],
            "{errors:#?}"
        );
        // One error per line in the combined message.
        let all = policy::load(dir.path()).err().expect("errors").to_string();
        assert_eq!(all.lines().count(), 4, "{all}");
    }
}

/// Which files the loader reads, and what the set says about them.
mod loading {
    use super::*;

    const DOCUMENTS: &str = r#"
        resource_policy:
          id: documents
          version: "2026-11-01"
          resource: document
          description: Editors view and edit.
          rules:
            - name: editors-view
              actions: [view]
              effect: allow
              roles: [editor]
            - name: editors-edit
              actions: [edit]
              effect: allow
              roles: [editor]
        "#;

    const GLOBAL: &str = r#"
        resource_policy:
          id: global
          version: "3"
          resource: "*"
          rules:
            - name: suspended
              actions: ["*"]
              effect: deny
              roles: [suspended]
        "#;

    #[test]
    fn policy_tests_hidden_files_and_other_files_are_ignored() {
        let dir = PolicyDir::with(&[("documents.yaml", DOCUMENTS)]);
        let broken = "resource_policy: [this is not a policy\n";
        dir.write("documents_test.yaml", broken);
        dir.write("more_test.yml", broken);
        dir.write(".documents.yaml.swp.yaml", broken);
        dir.write(".drafts/draft.yaml", broken);
        dir.write("NOTES.txt", broken);
        let set = dir.load();
        let files: Vec<_> = set.policies.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["documents.yaml"]);
        let d = decide(&set, &ask("bob", &["editor"]).to("view", "document"));
        assert_allowed(&d, "documents", "2026-11-01", "editors-view");
    }

    #[test]
    fn policies_lists_id_version_resource_and_file_in_load_order() {
        let dir = PolicyDir::with(&[
            ("shared/global.yml", GLOBAL),
            ("documents.yaml", DOCUMENTS),
            (
                "roles.yaml",
                r#"
                derived_roles:
                  name: document_roles
                  definitions:
                    - name: owner
                      parent_roles: ["*"]
                "#,
            ),
        ]);
        let set = dir.load();
        let listed: Vec<_> = set
            .policies
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.version.as_str(),
                    p.resource.as_str(),
                    p.file.as_str(),
                    p.rules,
                    p.description.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "documents",
                    "2026-11-01",
                    "document",
                    "documents.yaml",
                    2,
                    Some("Editors view and edit.")
                ),
                ("global", "3", "*", "shared/global.yml", 1, None),
            ]
        );
        assert_eq!(set.directory, dir.path());
    }

    #[test]
    fn the_hash_changes_with_the_files_and_only_with_them() {
        let dir = PolicyDir::with(&[("documents.yaml", DOCUMENTS), ("global.yaml", GLOBAL)]);
        let first = dir.load();
        assert_eq!(first.hash.len(), 64);
        assert!(
            first.hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{}",
            first.hash
        );
        assert_eq!(first.version(), &first.hash[..12]);
        let d = decide(&first, &ask("bob", &["editor"]).to("view", "document"));
        assert_eq!(
            d.explanation.as_ref().map(|e| e.policy_set.as_str()),
            Some(first.version())
        );

        // Stable: loading again, or the same files in another directory.
        assert_eq!(dir.load().hash, first.hash);
        let copy = PolicyDir::with(&[("documents.yaml", DOCUMENTS), ("global.yaml", GLOBAL)]);
        assert_eq!(copy.load().hash, first.hash);

        // Files the loader ignores do not count.
        dir.write("documents_test.yaml", "name: t\n");
        dir.write(".documents.yaml", "junk");
        dir.write("README.md", "junk");
        assert_eq!(dir.load().hash, first.hash);

        // A changed file changes it, even by one character; changing it back restores it.
        dir.write(
            "global.yaml",
            &GLOBAL.replace("version: \"3\"", "version: \"4\""),
        );
        let changed = dir.load().hash;
        assert_ne!(changed, first.hash);
        std::fs::write(dir.file("global.yaml"), format!("{}\n", dedent(GLOBAL))).expect("write");
        assert_ne!(
            dir.load().hash,
            first.hash,
            "a trailing newline is a change"
        );
        dir.write("global.yaml", GLOBAL);
        assert_eq!(dir.load().hash, first.hash);

        // So do a renamed file and an added one.
        dir.remove("global.yaml");
        dir.write("zz-global.yaml", GLOBAL);
        assert_ne!(dir.load().hash, first.hash);
        dir.remove("zz-global.yaml");
        dir.write("global.yaml", GLOBAL);
        dir.write("more.yaml", &DOCUMENTS.replace("id: documents", "id: more"));
        assert_ne!(dir.load().hash, first.hash);
    }
}
