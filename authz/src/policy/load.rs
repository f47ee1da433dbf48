//! Reading a policy directory: every `*.yaml`/`*.yml` file except policy tests (`*_test.yaml`),
//! parsed, cross-checked and compiled. Any problem in any file rejects the whole set, and every
//! problem found is reported with its file, line and key path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::file::{DerivedRolesSpec, Effect, PolicyFile, ResourcePolicySpec};
use super::{DerivedRole, KindRules, PolicyInfo, PolicySet, Rule};
use crate::condition::root_context;
use crate::yaml::{FileError, Source};

/// A problem in a policy file.
pub type PolicyError = FileError;

/// Every problem found in one attempt to load a policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

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
pub fn load(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut errors = Vec::new();
    let dir_error = |message: String| PolicyErrors(vec![FileError::whole_file(dir, message)]);
    let files =
        yaml_files(dir).map_err(|e| dir_error(format!("cannot read the policy directory: {e}")))?;
    let mut hasher = Sha256::new();
    let mut policies: Vec<(Source, ResourcePolicySpec)> = Vec::new();
    let mut role_sets: BTreeMap<String, (Source, DerivedRolesSpec)> = BTreeMap::new();
    for path in files.into_iter().filter(|p| !is_test_file(p)) {
        let source = match Source::read(&path) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        hasher.update(relative.as_os_str().as_encoded_bytes());
        hasher.update((source.text.len() as u64).to_le_bytes());
        hasher.update(source.text.as_bytes());
        let parsed: PolicyFile = match source.parse() {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match (parsed.resource_policy, parsed.derived_roles) {
            (Some(p), None) => policies.push((source, p)),
            (None, Some(set)) => {
                if let Some((other, _)) = role_sets.get(&set.name) {
                    let line = source.line_of(&[&["name:"]]);
                    let msg = format!(
                        "a derived_roles set named {:?} is also defined in {}",
                        set.name,
                        other.path.display()
                    );
                    errors.push(source.error(line, "derived_roles.name", msg));
                } else {
                    role_sets.insert(set.name.clone(), (source, set));
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
    // A file that does not parse may define the derived roles others import: reporting their
    // references as unknown would only add errors that fixing that file removes.
    let check_references = errors.is_empty();

    let mut derived = Vec::new();
    let mut set_index: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for (set_name, (source, set)) in &role_sets {
        let mut names = HashMap::new();
        // Each definition is looked for after the previous one: a repeated name is reported
        // where it repeats.
        let mut after = source.line_of(&[&["definitions:"]]).unwrap_or(0);
        for (i, d) in set.definitions.iter().enumerate() {
            let key = format!("derived_roles.definitions[{i}]");
            let found = source.name_line(after + 1, &d.name);
            after = found.unwrap_or(after);
            let line = || found;
            if names.contains_key(&d.name) {
                errors.push(source.error(
                    line(),
                    format!("{key}.name"),
                    format!("derived role {:?} is defined twice", d.name),
                ));
                continue;
            }
            if d.parent_roles.is_empty() {
                errors.push(source.error(
                    line(),
                    format!("{key}.parent_roles"),
                    "list at least one role (\"*\" for any principal)",
                ));
            }
            names.insert(d.name.clone(), derived.len());
            derived.push(DerivedRole {
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
        set_index.insert(set_name.clone(), names);
    }

    let mut infos = Vec::new();
    let mut seen_ids: HashMap<String, PathBuf> = HashMap::new();
    let mut by_kind: BTreeMap<String, Vec<Arc<Rule>>> = BTreeMap::new();
    for (source, p) in &policies {
        if let Some(other) = seen_ids.get(&p.id) {
            let msg = format!("policy id {:?} is also used by {}", p.id, other.display());
            errors.push(source.error(source.line_of(&[&["id:"]]), "resource_policy.id", msg));
            continue;
        }
        seen_ids.insert(p.id.clone(), source.path.clone());
        for (field, value) in [
            ("id", &p.id),
            ("version", &p.version),
            ("resource", &p.resource),
        ] {
            if value.trim().is_empty() {
                errors.push(source.error(
                    source.line_of(&[&[&format!("{field}:")]]),
                    format!("resource_policy.{field}"),
                    "must not be empty",
                ));
            }
        }
        let mut imported: HashMap<&str, usize> = HashMap::new();
        for (i, set) in p.import_derived_roles.iter().enumerate() {
            match set_index.get(set) {
                Some(names) => imported.extend(names.iter().map(|(n, idx)| (n.as_str(), *idx))),
                None if !check_references => {}
                None => errors.push(source.error(
                    source.line_of(&[&["import_derived_roles"], &[set]]),
                    format!("resource_policy.import_derived_roles[{i}]"),
                    format!(
                        "no derived_roles set named {set:?} (known: {})",
                        known(role_sets.keys())
                    ),
                )),
            }
        }
        if p.rules.is_empty() {
            errors.push(source.error(
                source.line_of(&[&["rules:"]]),
                "resource_policy.rules",
                "lists no rules",
            ));
        }
        let policy_id: Arc<str> = p.id.as_str().into();
        let version: Arc<str> = p.version.as_str().into();
        let mut rule_names = HashSet::new();
        // Each rule is looked for after the previous one: a repeated name is reported where it
        // repeats.
        let mut after = source.line_of(&[&["rules:"]]).unwrap_or(0);
        for (i, r) in p.rules.iter().enumerate() {
            let key = format!("resource_policy.rules[{i}]");
            let rule_line = source.name_line(after + 1, &r.name);
            after = rule_line.unwrap_or(after);
            let line = |anchors: &[&[&str]]| match anchors {
                [] => rule_line,
                _ => source.line_from(rule_line?, anchors),
            };
            if !rule_names.insert(r.name.as_str()) {
                errors.push(source.error(
                    line(&[]),
                    format!("{key}.name"),
                    format!("rule name {:?} is used twice in this policy", r.name),
                ));
            }
            if r.actions.is_empty() {
                errors.push(source.error(
                    line(&[&["actions"]]),
                    format!("{key}.actions"),
                    "list at least one action (\"*\" for every action)",
                ));
            }
            if r.roles.is_empty() && r.derived_roles.is_empty() {
                errors.push(source.error(
                    line(&[]),
                    format!("{key}.roles"),
                    "list roles or derived_roles (roles: [\"*\"] for everyone)",
                ));
            }
            let mut derived_idx = Vec::new();
            for (j, name) in r.derived_roles.iter().enumerate() {
                match imported.get(name.as_str()) {
                    Some(idx) => derived_idx.push(*idx),
                    None if !check_references => {}
                    None => errors.push(source.error(
                        line(&[&["derived_roles"], &[name]]),
                        format!("{key}.derived_roles[{j}]"),
                        format!(
                            "unknown derived role {name:?} (imported: {})",
                            known(imported.keys())
                        ),
                    )),
                }
            }
            let rule = Arc::new(Rule {
                policy: policy_id.clone(),
                policy_version: version.clone(),
                name: r.name.as_str().into(),
                effect: r.effect,
                any_action: r.actions.iter().any(|a| a == "*"),
                actions: r.actions.clone(),
                any_role: r.roles.iter().any(|a| a == "*"),
                roles: r.roles.clone(),
                derived: derived_idx,
                condition: r.when.clone(),
            });
            by_kind.entry(p.resource.clone()).or_default().push(rule);
        }
        infos.push(PolicyInfo {
            id: p.id.clone(),
            version: p.version.clone(),
            resource: p.resource.clone(),
            file: source
                .path
                .strip_prefix(dir)
                .unwrap_or(&source.path)
                .display()
                .to_string(),
            rules: p.rules.len(),
            description: p.description.clone(),
        });
    }
    if policies.is_empty() && errors.is_empty() {
        return Err(dir_error(
            "no resource policies found (files ending in _test.yaml are tests, not policies)"
                .into(),
        ));
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }

    let wildcard = by_kind.remove("*").unwrap_or_default();
    let index = |rules: &[Arc<Rule>]| {
        let mut kind = KindRules::default();
        for r in rules.iter().chain(&wildcard) {
            match r.effect {
                Effect::Deny => kind.deny.push(r.clone()),
                Effect::Allow => kind.allow.push(r.clone()),
            }
        }
        kind
    };
    let any_kind = index(&[]);
    let by_kind = by_kind
        .iter()
        .map(|(k, rules)| (k.clone(), index(rules)))
        .collect();
    Ok(PolicySet {
        policies: infos,
        by_kind,
        any_kind,
        derived,
        root: root_context(),
        hash: hex::encode(hasher.finalize()),
        loaded_at: SystemTime::now(),
        directory: dir.to_path_buf(),
    })
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
