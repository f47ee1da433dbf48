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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Key path such as `resource_policy.rules[2].when`; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

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

struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn error(
        &self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError {
            file: self.path.clone(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The line of a semantic problem (serde has no spans for those): the first line holding
    /// each anchor in turn, e.g. `["rules:", "name: edit", "owner"]`.
    fn line_of(&self, anchors: &[&str]) -> Option<usize> {
        self.line_after(0, anchors)
    }

    /// As [`Source::line_of`], skipping the first `from` lines.
    fn line_after(&self, mut from: usize, anchors: &[&str]) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut found = None;
        for anchor in anchors {
            let at = lines[from..].iter().position(|l| l.contains(anchor))? + from;
            found = Some(at + 1);
            from = at;
        }
        found
    }
}

/// Loads and compiles every policy under `dir`.
pub fn load(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut errors = Vec::new();
    let dir_error = |message: String| {
        PolicyErrors(vec![PolicyError {
            file: dir.to_path_buf(),
            line: None,
            key: String::new(),
            message,
        }])
    };
    let files =
        yaml_files(dir).map_err(|e| dir_error(format!("cannot read the policy directory: {e}")))?;
    let mut hasher = Sha256::new();
    let mut policies: Vec<(Source, ResourcePolicySpec)> = Vec::new();
    let mut role_sets: BTreeMap<String, (Source, DerivedRolesSpec)> = BTreeMap::new();
    for path in files.into_iter().filter(|p| !is_test_file(p)) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(PolicyError {
                    file: path,
                    line: None,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        hasher.update(relative.as_os_str().as_encoded_bytes());
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
        let source = Source { path, text };
        let parsed: PolicyFile = match serde_yaml::from_str(&source.text) {
            Ok(p) => p,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                let message = e.to_string();
                // serde_yaml appends " at line L column C": the line is already in the prefix.
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                // ... and starts with the key path (`resource_policy.rules[0].when: ...`).
                let (key, message) = match message.split_once(": ") {
                    Some((path, rest)) if is_key_path(path) => (path.to_string(), rest.to_string()),
                    _ => (String::new(), message),
                };
                errors.push(source.error(line, key, message));
                continue;
            }
        };
        match (parsed.resource_policy, parsed.derived_roles) {
            (Some(p), None) => policies.push((source, p)),
            (None, Some(set)) => {
                if let Some((other, _)) = role_sets.get(&set.name) {
                    let line = source.line_of(&["name:"]);
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
        let mut after = source.line_of(&["definitions:"]).map_or(0, |l| l - 1);
        for (i, d) in set.definitions.iter().enumerate() {
            let key = format!("derived_roles.definitions[{i}]");
            let found = source.line_after(after, &[&format!("name: {}", d.name)]);
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
                source.line_of(&["definitions:"]),
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
            errors.push(source.error(source.line_of(&["id:"]), "resource_policy.id", msg));
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
                    source.line_of(&[&format!("{field}:")]),
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
                    source.line_of(&["import_derived_roles", set]),
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
                source.line_of(&["rules:"]),
                "resource_policy.rules",
                "lists no rules",
            ));
        }
        let policy_id: Arc<str> = p.id.as_str().into();
        let version: Arc<str> = p.version.as_str().into();
        let mut rule_names = HashSet::new();
        // Each rule is looked for after the previous one: a repeated name is reported where it
        // repeats.
        let mut after = source.line_of(&["rules:"]).map_or(0, |l| l - 1);
        for (i, r) in p.rules.iter().enumerate() {
            let key = format!("resource_policy.rules[{i}]");
            let rule_line = source.line_after(after, &[&format!("name: {}", r.name)]);
            after = rule_line.unwrap_or(after);
            let line = |anchors: &[&str]| match anchors {
                [] => rule_line,
                _ => source.line_after(rule_line? - 1, anchors),
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
                    line(&["actions"]),
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
                        line(&["derived_roles", name]),
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

/// Whether serde_yaml's message prefix is a key path such as `resource_policy.rules[0].when`.
fn is_key_path(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?'))
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
