//! Reading a policy directory: every `*.yaml`/`*.yml` file except policy tests (`*_test.yaml`),
//! parsed, cross-checked and compiled. Any problem in any file rejects the whole set, and every
//! problem found is reported with its file, line and key path.

use super::context_reads::ContextReads;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use gatehouse_service::{LocatedError, LocatedErrors};
use sha2::{Digest, Sha256};

use super::file::{DerivedRolesSpec, Effect, PolicyFile, ResourcePolicySpec, RuleSpec};
use super::{DerivedRole, KindRules, PolicyInfo, PolicySet, Rule};
use crate::condition::root_context;
use crate::yaml::Source;

/// Whether `path` is a policy test suite rather than a policy.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.yaml") || n.ends_with("_test.yml"))
}

/// YAML files under `dir`, sorted, skipping hidden files (editor swap files) and directories.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and compiles every policy under `dir`.
///
/// Stages, in order: read the files (hashing them), parse them, number the roles of every
/// derived-role set, check and compile the resource policies, index their rules by resource type.
/// Each stage adds its problems to one list and the next stage still runs, so one attempt reports
/// every problem; only a set without any is indexed.
pub fn load(dir: &Path) -> Result<PolicySet, LocatedErrors> {
    let files = yaml_files(dir)
        .map_err(|e| dir_error(dir, format!("cannot read the policy directory: {e}")))?;
    let mut errors = Vec::new();
    let (sources, hash) = read_files(dir, files);
    let mut context_reads = ContextReads::default();
    for source in sources.iter().flatten() {
        context_reads.scan(&source.text);
    }
    let parsed = parse_files(sources, &mut errors);
    // A file that does not parse may define the derived roles others import: reporting their
    // references as unknown would only add errors that fixing that file removes.
    let check_references = errors.is_empty();
    let derived = number_derived_roles(&parsed.role_sets, &mut errors);
    let compiled = compile_policies(
        dir,
        &parsed.policies,
        &derived,
        check_references,
        &mut errors,
    );
    if parsed.policies.is_empty() && errors.is_empty() {
        return Err(dir_error(
            dir,
            "no resource policies found (files ending in _test.yaml are tests, not policies)",
        ));
    }
    if !errors.is_empty() {
        return Err(LocatedErrors(errors));
    }
    let (by_kind, any_kind) = index(compiled.rules);
    Ok(PolicySet {
        policies: compiled.infos,
        by_kind,
        any_kind,
        derived: derived.roles,
        root: root_context(),
        context_reads,
        hash,
        loaded_at: SystemTime::now(),
        directory: dir.to_path_buf(),
    })
}

fn dir_error(dir: &Path, message: impl Into<String>) -> LocatedErrors {
    LocatedError::whole_file(dir, message).into()
}

// ---------------------------------------------------------------------------------------------
// Stage 1: read.

/// Reads every policy file (tests excluded), in path order, and hashes the ones it could read:
/// the hash covers each file's path (relative to `dir`), length and text. A file that cannot be
/// read stays in its place as an error, so problems are reported in file order.
fn read_files(dir: &Path, files: Vec<PathBuf>) -> (Vec<Result<Source, LocatedError>>, String) {
    let mut hasher = Sha256::new();
    let sources = files
        .into_iter()
        .filter(|p| !is_test_file(p))
        .map(|path| {
            let source = Source::read(&path)?;
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            hasher.update(relative.as_os_str().as_encoded_bytes());
            hasher.update((source.text.len() as u64).to_le_bytes());
            hasher.update(source.text.as_bytes());
            Ok(source)
        })
        .collect();
    (sources, hex::encode(hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Stage 2: parse.

/// The files that parsed, by kind.
#[derive(Default)]
struct ParsedFiles {
    /// In load order.
    policies: Vec<(Source, ResourcePolicySpec)>,
    /// By set name: the order derived roles are numbered in.
    role_sets: BTreeMap<String, (Source, DerivedRolesSpec)>,
}

fn parse_files(
    sources: Vec<Result<Source, LocatedError>>,
    errors: &mut Vec<LocatedError>,
) -> ParsedFiles {
    let mut parsed = ParsedFiles::default();
    for source in sources {
        match source.and_then(|s| s.parse::<PolicyFile>().map(|file| (s, file))) {
            Ok((source, file)) => parsed.add(source, file, errors),
            Err(e) => errors.push(e),
        }
    }
    parsed
}

impl ParsedFiles {
    fn add(&mut self, source: Source, file: PolicyFile, errors: &mut Vec<LocatedError>) {
        match (file.resource_policy, file.derived_roles) {
            (Some(p), None) => self.policies.push((source, p)),
            (None, Some(set)) => {
                if let Some((other, _)) = self.role_sets.get(&set.name) {
                    let line = source.line_of(&[&["name:"]]);
                    let msg = format!(
                        "a derived_roles set named {:?} is also defined in {}",
                        set.name,
                        other.path.display()
                    );
                    errors.push(source.error(line, "derived_roles.name", msg));
                } else {
                    self.role_sets.insert(set.name.clone(), (source, set));
                }
            }
            (Some(_), Some(_)) => errors.push(source.error(
                None,
                "",
                "a file holds either resource_policy or derived_roles, not both",
            )),
            (None, None) => {
                errors.push(source.error(None, "", "expected resource_policy or derived_roles"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 3: derived-role sets.

/// Every set's derived roles, numbered in one list (rules refer to them by index).
struct DerivedRoles<'a> {
    roles: Vec<DerivedRole>,
    sets: BTreeMap<&'a str, RoleSet<'a>>,
}

/// What importing a set brings: its roles' names and indexes into [`DerivedRoles::roles`], in
/// the order they are defined, and the file defining them (for errors).
struct RoleSet<'a> {
    file: &'a Path,
    roles: Vec<(&'a str, usize)>,
}

fn number_derived_roles<'a>(
    role_sets: &'a BTreeMap<String, (Source, DerivedRolesSpec)>,
    errors: &mut Vec<LocatedError>,
) -> DerivedRoles<'a> {
    let mut derived = DerivedRoles {
        roles: Vec::new(),
        sets: BTreeMap::new(),
    };
    for (name, (source, set)) in role_sets {
        let roles = number_set(source, set, &mut derived.roles, errors);
        let file = source.path.as_path();
        derived.sets.insert(name.as_str(), RoleSet { file, roles });
    }
    derived
}

/// Checks one set and appends its roles to `all`; a role defined twice is kept once.
fn number_set<'a>(
    source: &Source,
    set: &'a DerivedRolesSpec,
    all: &mut Vec<DerivedRole>,
    errors: &mut Vec<LocatedError>,
) -> Vec<(&'a str, usize)> {
    let mut roles: Vec<(&str, usize)> = Vec::new();
    // Each definition is looked for after the previous one: a repeated name is reported where
    // it repeats.
    let mut after = source.line_of(&[&["definitions:"]]).unwrap_or(0);
    for (i, d) in set.definitions.iter().enumerate() {
        let key = format!("derived_roles.definitions[{i}]");
        let line = source.name_line(after + 1, &d.name);
        after = line.unwrap_or(after);
        if roles.iter().any(|(name, _)| *name == d.name) {
            let msg = format!("derived role {:?} is defined twice", d.name);
            errors.push(source.error(line, format!("{key}.name"), msg));
            continue;
        }
        if d.parent_roles.is_empty() {
            errors.push(source.error(
                line,
                format!("{key}.parent_roles"),
                "list at least one role (\"*\" for any principal)",
            ));
        }
        roles.push((d.name.as_str(), all.len()));
        all.push(DerivedRole {
            name: d.name.clone(),
            any_parent: d.parent_roles.iter().any(|r| r == "*"),
            parent_roles: d.parent_roles.clone(),
            condition: d.when.clone(),
        });
    }
    if set.definitions.is_empty() {
        errors.push(source.error(
            source.line_of(&[&["definitions:"]]),
            "derived_roles.definitions",
            "defines no roles",
        ));
    }
    roles
}

// ---------------------------------------------------------------------------------------------
// Stage 4: resource policies.

/// The resource policies that compiled: what `GET /policies` lists, and their rules by the
/// resource type they govern (`"*"` included), each type's in load order.
#[derive(Default)]
struct CompiledPolicies {
    infos: Vec<PolicyInfo>,
    rules: BTreeMap<String, Vec<Arc<Rule>>>,
}

fn compile_policies(
    dir: &Path,
    policies: &[(Source, ResourcePolicySpec)],
    derived: &DerivedRoles,
    check_references: bool,
    errors: &mut Vec<LocatedError>,
) -> CompiledPolicies {
    let mut out = CompiledPolicies::default();
    let mut seen_ids: HashMap<&str, &Path> = HashMap::new();
    for (source, policy) in policies {
        if let Some(other) = seen_ids.get(policy.id.as_str()) {
            let msg = format!(
                "policy id {:?} is also used by {}",
                policy.id,
                other.display()
            );
            errors.push(source.error(source.line_of(&[&["id:"]]), "resource_policy.id", msg));
            continue;
        }
        seen_ids.insert(&policy.id, &source.path);
        let mut compiler = PolicyCompiler {
            source,
            policy,
            check_references,
            errors: &mut *errors,
        };
        compiler.check_header();
        let imported = compiler.imports(derived);
        let rules = compiler.rules(&imported);
        out.rules
            .entry(policy.resource.clone())
            .or_default()
            .extend(rules);
        out.infos.push(PolicyInfo {
            id: policy.id.clone(),
            version: policy.version.clone(),
            resource: policy.resource.clone(),
            file: source
                .path
                .strip_prefix(dir)
                .unwrap_or(&source.path)
                .display()
                .to_string(),
            rules: policy.rules.len(),
            description: policy.description.clone(),
        });
    }
    out
}

/// One resource policy being checked and compiled, with where its problems are reported.
struct PolicyCompiler<'a, 'e> {
    source: &'a Source,
    policy: &'a ResourcePolicySpec,
    /// Whether unknown derived roles and sets are errors (see [`load`]).
    check_references: bool,
    errors: &'e mut Vec<LocatedError>,
}

impl<'a> PolicyCompiler<'a, '_> {
    fn report(&mut self, line: Option<usize>, key: String, message: impl Into<String>) {
        self.errors.push(self.source.error(line, key, message));
    }

    fn check_header(&mut self) {
        let p = self.policy;
        for (field, value) in [
            ("id", &p.id),
            ("version", &p.version),
            ("resource", &p.resource),
        ] {
            if value.trim().is_empty() {
                let line = self.source.line_of(&[&[&format!("{field}:")]]);
                self.report(
                    line,
                    format!("resource_policy.{field}"),
                    "must not be empty",
                );
            }
        }
    }

    /// The derived roles the policy's rules may name: those of the sets it imports.
    ///
    /// Two imported sets defining one name is an error: whichever set won, a rule naming the role
    /// would not mean what half of its readers think (an `owner` granted to anyone by the other
    /// set makes every principal an owner).
    fn imports(&mut self, derived: &DerivedRoles<'a>) -> HashMap<&'a str, usize> {
        // Role name -> its index, and the set it came from (name and definition) for errors.
        let mut imported: HashMap<&'a str, (usize, &'a str, &RoleSet)> = HashMap::new();
        for (i, set_name) in self.policy.import_derived_roles.iter().enumerate() {
            let key = format!("resource_policy.import_derived_roles[{i}]");
            let source = self.source;
            let line = || source.line_of(&[&["import_derived_roles"], &[set_name]]);
            let Some((&set_name, set)) = derived.sets.get_key_value(set_name.as_str()) else {
                if self.check_references {
                    let msg = format!(
                        "no derived_roles set named {set_name:?} (known: {})",
                        known(derived.sets.keys())
                    );
                    self.report(line(), key, msg);
                }
                continue;
            };
            for &(role, index) in &set.roles {
                match imported.entry(role) {
                    Entry::Vacant(slot) => {
                        slot.insert((index, set_name, set));
                    }
                    // The same set imported twice: the same role, no ambiguity.
                    Entry::Occupied(first) if first.get().0 == index => {}
                    Entry::Occupied(first) => {
                        let (_, first_name, first_set) = first.get();
                        let msg = format!(
                            "derived role {role:?} is defined by both imported sets {first_name:?} \
                             ({}) and {set_name:?} ({}); rename one",
                            first_set.file.display(),
                            set.file.display()
                        );
                        self.report(line(), key.clone(), msg);
                    }
                }
            }
        }
        imported
            .into_iter()
            .map(|(role, (index, ..))| (role, index))
            .collect()
    }

    fn rules(&mut self, imported: &HashMap<&str, usize>) -> Vec<Arc<Rule>> {
        let source = self.source;
        if self.policy.rules.is_empty() {
            let line = source.line_of(&[&["rules:"]]);
            self.report(line, "resource_policy.rules".into(), "lists no rules");
        }
        let ids = (
            Arc::<str>::from(self.policy.id.as_str()),
            Arc::<str>::from(self.policy.version.as_str()),
        );
        let mut names = HashSet::new();
        // Each rule is looked for after the previous one: a repeated name is reported where it
        // repeats.
        let mut after = source.line_of(&[&["rules:"]]).unwrap_or(0);
        let mut rules = Vec::with_capacity(self.policy.rules.len());
        for (i, r) in self.policy.rules.iter().enumerate() {
            let at = RuleAt {
                key: format!("resource_policy.rules[{i}]"),
                line: source.name_line(after + 1, &r.name),
            };
            after = at.line.unwrap_or(after);
            if !names.insert(r.name.as_str()) {
                let msg = format!("rule name {:?} is used twice in this policy", r.name);
                self.report(at.line, format!("{}.name", at.key), msg);
            }
            rules.push(Arc::new(self.rule(&at, r, imported, &ids)));
        }
        rules
    }

    fn rule(
        &mut self,
        at: &RuleAt,
        r: &RuleSpec,
        imported: &HashMap<&str, usize>,
        (policy, version): &(Arc<str>, Arc<str>),
    ) -> Rule {
        if r.actions.is_empty() {
            self.report(
                at.line_of(self.source, &[&["actions"]]),
                format!("{}.actions", at.key),
                "list at least one action (\"*\" for every action)",
            );
        }
        if r.roles.is_empty() && r.derived_roles.is_empty() {
            self.report(
                at.line,
                format!("{}.roles", at.key),
                "list roles or derived_roles (roles: [\"*\"] for everyone)",
            );
        }
        Rule {
            policy: policy.clone(),
            policy_version: version.clone(),
            name: r.name.as_str().into(),
            effect: r.effect,
            any_action: r.actions.iter().any(|a| a == "*"),
            actions: r.actions.clone(),
            any_role: r.roles.iter().any(|a| a == "*"),
            roles: r.roles.clone(),
            derived: self.derived_indexes(at, r, imported),
            condition: r.when.clone(),
            reason: crate::decision::rule_reason(r.effect, &r.name, policy).into(),
        }
    }

    /// The indexes of the derived roles a rule names, each imported by the policy.
    fn derived_indexes(
        &mut self,
        at: &RuleAt,
        r: &RuleSpec,
        imported: &HashMap<&str, usize>,
    ) -> Vec<usize> {
        let mut indexes = Vec::with_capacity(r.derived_roles.len());
        for (j, name) in r.derived_roles.iter().enumerate() {
            match imported.get(name.as_str()) {
                Some(idx) => indexes.push(*idx),
                None if !self.check_references => {}
                None => {
                    let line = at.line_of(self.source, &[&["derived_roles"], &[name]]);
                    let msg = format!(
                        "unknown derived role {name:?} (imported: {})",
                        known(imported.keys())
                    );
                    self.report(line, format!("{}.derived_roles[{j}]", at.key), msg);
                }
            }
        }
        indexes
    }
}

/// Where a rule is: its key path and the line of its `name:`.
struct RuleAt {
    key: String,
    line: Option<usize>,
}

impl RuleAt {
    /// The line of `anchors` within the rule (searched from its `name:` on).
    fn line_of(&self, source: &Source, anchors: &[&[&str]]) -> Option<usize> {
        source.line_from(self.line?, anchors)
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 5: index.

/// Rules by resource type as the evaluator reads them: deny rules apart from allow rules, each
/// list holding the type's own policies' rules first, then the `"*"` policies' rules, each group
/// in load order. Types no policy names get the `"*"` rules alone.
fn index(mut rules: BTreeMap<String, Vec<Arc<Rule>>>) -> (HashMap<String, KindRules>, KindRules) {
    let wildcard = rules.remove("*").unwrap_or_default();
    let split = |own: &[Arc<Rule>]| {
        let mut kind = KindRules::default();
        for r in own.iter().chain(&wildcard) {
            match r.effect {
                Effect::Deny => kind.deny.push(r.clone()),
                Effect::Allow => kind.allow.push(r.clone()),
            }
        }
        kind
    };
    let by_kind = rules
        .iter()
        .map(|(kind, own)| (kind.clone(), split(own)))
        .collect();
    (by_kind, split(&[]))
}

fn known<'a>(names: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let mut v: Vec<String> = names.map(|n| n.as_ref().to_string()).collect();
    v.sort();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
