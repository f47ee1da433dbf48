//! Policy tests: `*_test.yaml` suites kept beside the policies, run by `gatehouse-authz test DIR`.
//!
//! A suite names its fixtures once (principals, resources, contexts) and freezes the clock; each
//! test crosses some of them with actions and lists what it expects to be allowed. Any check a test
//! does not list is expected to be denied, so a rule that opens more than intended fails a test
//! instead of passing unnoticed. A failing check prints the decision's reason, the policy, version
//! and rule that decided, and a compact trace of the rules that were considered.
//!
//! As with policies, there are two shapes: what the author writes (`SuiteFile`, serde structs with
//! unknown keys rejected) and what the runner reads ([`Suite`]: every check planned, every name
//! resolved). [`Suite::parse`] is the only bridge and the only place suite errors are produced.
//!
//! Exit codes of [`run_cli`]: 0 every test passed, 1 some check failed, 2 nothing could be run
//! (a policy or suite does not load, `--run` is not a regular expression, no suites, no match).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, FixedOffset};
use gatehouse_service::{LocatedError, LocatedErrors};
use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::decision::{ConditionTrace, Decision, Explanation, Options};
use crate::policy::{self, PolicySet};
use crate::request::{Principal, Request, RequestContext, Resource};
use crate::yaml::Source;

// ---------------------------------------------------------------------------------------------
// What the author writes.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    /// Reported as the first half of `suite/test`; unique across the directory.
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// The frozen clock: `context.time` of every check whose context sets none.
    #[serde(default)]
    now: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    principals: Named<Principal>,
    #[serde(default)]
    resources: Named<Resource>,
    #[serde(default)]
    contexts: Named<RequestContext>,
    tests: Vec<TestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    input: InputSpec,
    /// What is allowed (or, for the reader's sake, explicitly denied); the rest must be denied.
    #[serde(default)]
    expected: Vec<ExpectedSpec>,
}

/// Fixture names, crossed: principals × resources × actions × contexts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    principals: Vec<String>,
    resources: Vec<String>,
    actions: Vec<String>,
    /// Absent: one context with nothing but the suite's `now`.
    #[serde(default)]
    contexts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedSpec {
    principal: String,
    resource: String,
    /// Absent: every context of the input. An entry naming a context wins over one that does not.
    #[serde(default)]
    context: Option<String>,
    actions: Named<Expect>,
}

/// The outcome a check expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    fn of(allow: bool) -> Self {
        if allow {
            Expect::Allow
        } else {
            Expect::Deny
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A YAML map of named values that rejects a name given twice (serde's maps keep the last one
/// silently, which would hide a copy-pasted fixture).
#[derive(Debug)]
struct Named<T>(BTreeMap<String, T>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(BTreeMap::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NamedVisitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.contains_key(&name) {
                        return Err(de::Error::custom(format!("{name:?} is given twice")));
                    }
                    let value = map.next_value()?;
                    out.insert(name, value);
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(NamedVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// What the runner reads.

/// A suite with every name resolved and every check planned.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub now: Option<DateTime<FixedOffset>>,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub description: Option<String>,
    pub checks: Vec<PlannedCheck>,
}

/// One request of the cross product and the outcome it must have.
#[derive(Debug, Clone)]
pub struct PlannedCheck {
    pub label: CheckLabel,
    pub request: Request,
    pub expected: Expect,
}

/// A check as the suite names it: fixture names, not their contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLabel {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub context: Option<String>,
}

impl fmt::Display for CheckLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.principal, self.action, self.resource)?;
        if let Some(context) = &self.context {
            write!(f, " [context {context}]")?;
        }
        Ok(())
    }
}

/// Why no test could be run.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("--run {pattern:?} is not a valid regular expression: {source}")]
    Filter {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("cannot read the policy directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no policy tests in {}: suites are files named *_test.yaml or *_test.yml",
        .0.display()
    )]
    NoSuites(PathBuf),
    #[error("no test matches --run {pattern:?} ({total} tests in the suites)")]
    NothingMatches { pattern: String, total: usize },
    /// Problems in the policies (first) and the suites.
    #[error("{}", invalid_message(.0))]
    Invalid(LocatedErrors),
}

fn invalid_message(errors: &LocatedErrors) -> String {
    let mut out = String::new();
    for e in &errors.0 {
        let _ = writeln!(out, "{e}");
    }
    let _ = write!(out, "{} problem(s) found; no test was run", errors.0.len());
    out
}

// ---------------------------------------------------------------------------------------------
// Reading a suite.

/// The line of `tests[i].name`, telling apart tests that share a name.
fn test_line(source: &Source, tests: &[TestSpec], i: usize) -> Option<usize> {
    let name = tests.get(i)?.name.as_str();
    let earlier = tests[..i].iter().filter(|t| t.name == name).count();
    let mut line = source.line_of(&[&["tests:"]])?;
    for _ in 0..=earlier {
        line = source.name_line(line + 1, name)?;
    }
    Some(line)
}

/// The names a test may use, for "unknown X" messages.
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none defined".into()
    } else {
        format!("defined: {}", v.join(", "))
    }
}

impl Suite {
    /// Parses and checks one suite file; every problem found is returned, each with its key path
    /// and, where it can be found, its line.
    pub fn parse(source: &Source) -> Result<Suite, Vec<LocatedError>> {
        let file: SuiteFile = source.parse().map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        if file.name.trim().is_empty() {
            errors.push(source.error(source.line_of(&[&["name:"]]), "name", "must not be empty"));
        }
        for (name, p) in &file.principals.0 {
            if let Err(e) = p.validate(&format!("principals.{name}")) {
                let line = source.line_of(&[&["principals:"], &[&format!("{name}:")]]);
                errors.push(source.error(line, e.field, e.message));
            }
        }
        for (name, r) in &file.resources.0 {
            if let Err(e) = r.validate(&format!("resources.{name}")) {
                let line = source.line_of(&[&["resources:"], &[&format!("{name}:")]]);
                errors.push(source.error(line, e.field, e.message));
            }
        }
        if file.tests.is_empty() {
            errors.push(source.error(source.line_of(&[&["tests:"]]), "tests", "lists no tests"));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut tests = Vec::new();
        for (i, spec) in file.tests.iter().enumerate() {
            if let Some(first) = names.insert(spec.name.as_str(), i) {
                errors.push(source.error(
                    test_line(source, &file.tests, i),
                    format!("tests[{i}].name"),
                    format!("test name {:?} is also used by tests[{first}]", spec.name),
                ));
            }
            if let Some(test) = compile_test(&file, spec, i, source, &mut errors) {
                tests.push(test);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Suite {
            name: file.name,
            description: file.description,
            file: source.path.clone(),
            now: file.now,
            tests,
        })
    }

    /// Runs the tests whose `suite/test` name matches `filter` (all without one).
    pub fn run(&self, set: &PolicySet, filter: Option<&Regex>) -> Vec<TestReport> {
        self.selected(filter)
            .map(|test| test.run(self, set))
            .collect()
    }

    fn selected<'s>(&'s self, filter: Option<&'s Regex>) -> impl Iterator<Item = &'s Test> + 's {
        self.tests.iter().filter(move |t| {
            filter.is_none_or(|re| re.is_match(&format!("{}/{}", self.name, t.name)))
        })
    }
}

/// Checks one test against the suite's fixtures and plans its checks. Problems go to `errors`;
/// `None` when there was any.
fn compile_test(
    file: &SuiteFile,
    spec: &TestSpec,
    i: usize,
    source: &Source,
    errors: &mut Vec<LocatedError>,
) -> Option<Test> {
    let before = errors.len();
    let test = TestSource {
        file,
        spec,
        at: format!("tests[{i}]"),
        line: test_line(source, &file.tests, i),
        source,
    };
    if spec.name.trim().is_empty() {
        errors.push(source.error(test.line, format!("{}.name", test.at), "must not be empty"));
    }
    test.check_input(errors);
    let expected = test.expectations(errors);
    if errors.len() > before {
        return None;
    }
    Some(Test {
        name: spec.name.clone(),
        description: spec.description.clone(),
        checks: test.plan(&expected)?,
    })
}

/// One check as `expected` names it: principal, resource, context (`None`: every one), action.
type ExpectationKey<'k> = (&'k str, &'k str, Option<&'k str>, &'k str);

/// A test being compiled, with what its error messages need.
struct TestSource<'a> {
    file: &'a SuiteFile,
    spec: &'a TestSpec,
    /// `tests[i]`, the start of its key paths.
    at: String,
    /// The line of its `name:`.
    line: Option<usize>,
    source: &'a Source,
}

impl<'a> TestSource<'a> {
    /// The line of `word` from line `from` on, else `from` itself.
    fn line_from(&self, from: Option<usize>, words: &[&[&str]]) -> Option<usize> {
        from.and_then(|l| self.source.line_from(l, words)).or(from)
    }

    /// The input: every name defined, none twice, no list empty but `contexts`.
    fn check_input(&self, errors: &mut Vec<LocatedError>) {
        let input = &self.spec.input;
        let file = self.file;
        let lists = [
            (
                "principals",
                &input.principals,
                Some(file.principals.0.keys().collect::<Vec<_>>()),
            ),
            (
                "resources",
                &input.resources,
                Some(file.resources.0.keys().collect::<Vec<_>>()),
            ),
            ("actions", &input.actions, None),
            (
                "contexts",
                &input.contexts,
                Some(file.contexts.0.keys().collect::<Vec<_>>()),
            ),
        ];
        for (field, names, defined) in &lists {
            let key = format!("{}.input.{field}", self.at);
            let list_line = self.line_from(self.line, &[&["input:"], &[&format!("{field}:")]]);
            if names.is_empty() && *field != "contexts" {
                errors.push(self.source.error(
                    list_line,
                    key.clone(),
                    format!("list at least one of the suite's {field}"),
                ));
            }
            let mut seen = HashSet::new();
            for (j, name) in names.iter().enumerate() {
                let line = self.line_from(self.line, &[&["input:"], &[name]]);
                if name.trim().is_empty() {
                    errors.push(self.source.error(
                        list_line,
                        format!("{key}[{j}]"),
                        "must not be empty",
                    ));
                }
                if !seen.insert(name) {
                    errors.push(self.source.error(
                        line,
                        format!("{key}[{j}]"),
                        format!("{name:?} is listed twice"),
                    ));
                }
                if let Some(defined) = defined {
                    if !defined.contains(&name) {
                        let singular = field.trim_end_matches('s');
                        errors.push(self.source.error(
                            line,
                            format!("{key}[{j}]"),
                            format!(
                                "unknown {singular} {name:?} ({})",
                                known(defined.iter().copied())
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The expectations, each with the index of its entry: every name part of the input, no
    /// check expected twice.
    fn expectations(
        &self,
        errors: &mut Vec<LocatedError>,
    ) -> HashMap<ExpectationKey<'a>, (Expect, usize)> {
        let input = &self.spec.input;
        let mut expected = HashMap::new();
        let section = self.line_from(self.line, &[&["expected:"]]);
        let mut entry_line = section;
        for (j, e) in self.spec.expected.iter().enumerate() {
            let key = format!("{}.expected[{j}]", self.at);
            // Each entry has one `principal:` key: the next one starts this entry.
            entry_line = entry_line
                .and_then(|l| self.source.line_from(l + 1, &[&["principal:"]]))
                .or(section);
            let line = |word: &str| self.line_from(entry_line, &[&[word]]);
            let in_input = [
                ("principal", &e.principal, &input.principals),
                ("resource", &e.resource, &input.resources),
            ];
            for (field, name, listed) in in_input {
                if !listed.contains(name) {
                    errors.push(self.source.error(
                        line(name),
                        format!("{key}.{field}"),
                        format!(
                            "{field} {name:?} is not in this test's input.{field}s ({})",
                            listed.join(", ")
                        ),
                    ));
                }
            }
            if let Some(context) = &e.context {
                if !input.contexts.contains(context) {
                    let listed = if input.contexts.is_empty() {
                        "it lists none".to_string()
                    } else {
                        input.contexts.join(", ")
                    };
                    errors.push(self.source.error(
                        line(context),
                        format!("{key}.context"),
                        format!(
                            "context {context:?} is not in this test's input.contexts ({listed})"
                        ),
                    ));
                }
            }
            if e.actions.0.is_empty() {
                errors.push(self.source.error(
                    line("actions"),
                    format!("{key}.actions"),
                    "lists no actions",
                ));
            }
            for (action, outcome) in &e.actions.0 {
                let action_line = line(&format!("{action}:"));
                if !input.actions.contains(action) {
                    errors.push(self.source.error(
                        action_line,
                        format!("{key}.actions.{action}"),
                        format!(
                            "action {action:?} is not in this test's input.actions ({})",
                            input.actions.join(", ")
                        ),
                    ));
                    continue;
                }
                let k = (
                    e.principal.as_str(),
                    e.resource.as_str(),
                    e.context.as_deref(),
                    action.as_str(),
                );
                if let Some((_, first)) = expected.insert(k, (*outcome, j)) {
                    let context = e
                        .context
                        .as_ref()
                        .map(|c| format!(" in context {c}"))
                        .unwrap_or_default();
                    errors.push(self.source.error(
                        action_line,
                        format!("{key}.actions.{action}"),
                        format!(
                            "{} {action} {}{context} is already expected by {}.expected[{first}]",
                            e.principal, e.resource, self.at
                        ),
                    ));
                }
            }
        }
        expected
    }

    /// The cross product principals × resources × actions × contexts, in that order. A check
    /// takes the entry naming its context, else the entry for every context, else deny. `None`
    /// if a name is undefined (reported by `check_input`).
    fn plan(
        &self,
        expected: &HashMap<ExpectationKey<'a>, (Expect, usize)>,
    ) -> Option<Vec<PlannedCheck>> {
        let input = &self.spec.input;
        let contexts: Vec<Option<&String>> = if input.contexts.is_empty() {
            vec![None]
        } else {
            input.contexts.iter().map(Some).collect()
        };
        let mut checks = Vec::new();
        for p in &input.principals {
            let principal = self.file.principals.0.get(p)?;
            for r in &input.resources {
                let resource = self.file.resources.0.get(r)?;
                for a in &input.actions {
                    for c in &contexts {
                        let context = match c {
                            Some(c) => self.file.contexts.0.get(*c)?.clone(),
                            None => RequestContext::default(),
                        };
                        let outcome = c
                            .and_then(|c| expected.get(&(p.as_str(), r.as_str(), Some(c), a)))
                            .or_else(|| expected.get(&(p.as_str(), r.as_str(), None, a)))
                            .map_or(Expect::Deny, |(o, _)| *o);
                        checks.push(PlannedCheck {
                            label: CheckLabel {
                                principal: p.clone(),
                                action: a.clone(),
                                resource: r.clone(),
                                context: c.cloned(),
                            },
                            request: Request {
                                principal: principal.clone(),
                                resource: resource.clone(),
                                action: a.clone(),
                                context,
                            },
                            expected: outcome,
                        });
                    }
                }
            }
        }
        Some(checks)
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

/// What one test did.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub suite: String,
    pub test: String,
    pub file: PathBuf,
    /// The clock checks saw when their context set no time.
    pub now: Option<DateTime<FixedOffset>>,
    pub checks: Vec<CheckOutcome>,
}

#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub label: CheckLabel,
    pub expected: Expect,
    /// With an explanation when the check failed.
    pub decision: Decision,
    /// The context's own `time` (else the test report's `now` applied) and `ip`, for the
    /// failure report.
    pub time: Option<DateTime<FixedOffset>>,
    pub ip: Option<std::net::IpAddr>,
}

impl CheckOutcome {
    pub fn got(&self) -> Expect {
        Expect::of(self.decision.allow)
    }

    pub fn passed(&self) -> bool {
        self.got() == self.expected
    }
}

impl TestReport {
    /// `suite/test`, what `--run` matches.
    pub fn id(&self) -> String {
        format!("{}/{}", self.suite, self.test)
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed()).count()
    }

    pub fn passed(&self) -> bool {
        self.failures() == 0
    }
}

impl Test {
    pub fn run(&self, suite: &Suite, set: &PolicySet) -> TestReport {
        let options = Options {
            explain: false,
            now: suite.now,
        };
        let checks = self
            .checks
            .iter()
            .map(|check| {
                let mut decision = set.evaluate(&check.request, options);
                if Expect::of(decision.allow) != check.expected {
                    // Evaluate again to explain: only failures pay for the trace.
                    decision = set.evaluate(
                        &check.request,
                        Options {
                            explain: true,
                            ..options
                        },
                    );
                }
                CheckOutcome {
                    label: check.label.clone(),
                    expected: check.expected,
                    decision,
                    time: check.request.context.time,
                    ip: check.request.context.ip,
                }
            })
            .collect();
        TestReport {
            suite: suite.name.clone(),
            test: self.name.clone(),
            file: suite.file.clone(),
            now: suite.now,
            checks,
        }
    }
}

/// Every test run, in suite-file order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub tests: Vec<TestReport>,
    /// Tests left out by `--run`.
    pub skipped: usize,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.tests.len() - self.passed()
    }

    /// `N tests, P passed, F failed`, and how many `--run` left out.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} tests, {} passed, {} failed",
            self.tests.len(),
            self.passed(),
            self.failed()
        );
        if self.skipped > 0 {
            let _ = write!(s, " ({} not matching --run)", self.skipped);
        }
        s
    }
}

/// Reads every suite under `dir`. Each file's problems are all reported; a suite name used by two
/// files is a problem too, since `suite/test` must name one test.
pub fn load_suites(dir: &Path) -> Result<Vec<Suite>, TestRunError> {
    let files = policy::yaml_files(dir).map_err(|source| TestRunError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| policy::is_test_file(p))
        .collect();
    if files.is_empty() {
        return Err(TestRunError::NoSuites(dir.to_path_buf()));
    }
    let mut suites: Vec<Suite> = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let source = match Source::read(&path) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match Suite::parse(&source) {
            Ok(suite) => {
                if let Some(other) = suites.iter().find(|s| s.name == suite.name) {
                    errors.push(source.error(
                        source.line_of(&[&["name:"]]),
                        "name",
                        format!(
                            "suite name {:?} is also used by {}",
                            suite.name,
                            other.file.display()
                        ),
                    ));
                } else {
                    suites.push(suite);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(TestRunError::Invalid(LocatedErrors(errors)));
    }
    Ok(suites)
}

/// Loads the policies and suites of `dir` and runs the tests `filter` selects.
pub fn run(dir: &Path, filter: Option<&str>) -> Result<Report, TestRunError> {
    let regex = filter
        .map(|pattern| {
            Regex::new(pattern).map_err(|source| TestRunError::Filter {
                pattern: pattern.to_string(),
                source,
            })
        })
        .transpose()?;
    let suites = load_suites(dir);
    // Both are loaded before either is reported, so one run shows every problem.
    let set = policy::load(dir);
    let (set, suites) = match (set, suites) {
        (Ok(set), Ok(suites)) => (set, suites),
        (Err(policies), Ok(_)) => return Err(TestRunError::Invalid(policies)),
        (set, Err(TestRunError::Invalid(suites))) => {
            let mut errors = set.err().unwrap_or_default();
            errors.0.extend(suites.0);
            return Err(TestRunError::Invalid(errors));
        }
        (_, Err(e)) => return Err(e),
    };
    let total: usize = suites.iter().map(|s| s.tests.len()).sum();
    let tests: Vec<TestReport> = suites
        .iter()
        .flat_map(|s| s.run(&set, regex.as_ref()))
        .collect();
    if tests.is_empty() {
        if let Some(pattern) = filter {
            return Err(TestRunError::NothingMatches {
                pattern: pattern.to_string(),
                total,
            });
        }
    }
    Ok(Report {
        skipped: total - tests.len(),
        tests,
    })
}

// ---------------------------------------------------------------------------------------------
// Printing.

/// `gatehouse-authz test DIR [--run REGEX] [-v]`: the report on stdout, problems on stderr.
pub fn run_cli(dir: &Path, filter: Option<&str>, verbose: bool) -> ExitCode {
    match run(dir, filter) {
        Ok(report) => {
            print!("{}", render(&report, verbose));
            if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("gatehouse-authz test: {e}");
            ExitCode::from(2)
        }
    }
}

/// The report as `run_cli` prints it: one line per test, the failing checks (and with `verbose`
/// the passing ones) under it, and the summary.
pub fn render(report: &Report, verbose: bool) -> String {
    let mut out = String::new();
    for test in &report.tests {
        let failures = test.failures();
        let n = test.checks.len();
        if failures == 0 {
            let _ = writeln!(out, "PASS {} ({n} checks)", test.id());
        } else {
            let _ = writeln!(out, "FAIL {} ({failures} of {n} checks failed)", test.id());
        }
        for check in &test.checks {
            if check.passed() {
                if verbose {
                    let _ = writeln!(
                        out,
                        "    {}: {}, as expected — {}",
                        check.label, check.expected, check.decision.reason
                    );
                }
            } else {
                render_failure(&mut out, check, test.now);
            }
        }
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

fn render_failure(out: &mut String, check: &CheckOutcome, now: Option<DateTime<FixedOffset>>) {
    let d = &check.decision;
    let _ = writeln!(
        out,
        "    {}: expected {}, got {} — {}",
        check.label,
        check.expected,
        check.got(),
        d.reason
    );
    let pad = "        ";
    match (&d.policy_id, &d.rule) {
        (Some(policy), Some(rule)) => {
            let version = d.policy_version.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "{pad}decided by policy {policy} (version {version}), rule {rule}"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "{pad}decided by no rule: nothing allowed it (default deny)"
            );
        }
    }
    let time = match (check.time, now) {
        (Some(t), _) => t.to_rfc3339(),
        (None, Some(now)) => format!("{} (the suite's now)", now.to_rfc3339()),
        (None, None) => "the real clock (the suite sets no now)".to_string(),
    };
    let ip = check
        .ip
        .map_or_else(|| "none".to_string(), |ip| ip.to_string());
    let _ = writeln!(out, "{pad}context: time {time}, ip {ip}");
    if let Some(explanation) = &d.explanation {
        render_explanation(out, explanation, pad);
    }
}

/// The rules that were considered for the action (rules for other actions are left out) and the
/// derived roles that were evaluated, one line each.
fn render_explanation(out: &mut String, e: &Explanation, pad: &str) {
    for rule in e.rules.iter().filter(|r| r.outcome != "action not listed") {
        let _ = write!(
            out,
            "{pad}{:<5} {}/{}",
            rule.effect.as_str(),
            rule.policy_id,
            rule.rule
        );
        if let Some(role) = &rule.role {
            let _ = write!(out, " [role {role}]");
        }
        let _ = write!(out, ": {}", rule.outcome);
        if let Some(c) = &rule.condition {
            let _ = write!(out, " — {}", condition(c));
        }
        out.push('\n');
    }
    for role in &e.derived_roles {
        let state = match role.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "error",
        };
        let _ = write!(out, "{pad}derived role {}: {state}", role.name);
        if let Some(c) = &role.condition {
            let _ = write!(out, " — {}", condition(c));
        }
        out.push('\n');
    }
}

/// `expr → true`, `expr → error (message)`, `none(a → false, b → true) → false`.
fn condition(c: &ConditionTrace) -> String {
    let result = match (c.result, &c.error) {
        (Some(b), _) => b.to_string(),
        (None, Some(e)) => format!("error ({e})"),
        (None, None) => "error".to_string(),
    };
    if c.of.is_empty() {
        format!("{} → {result}", c.expression)
    } else {
        let parts: Vec<String> = c.of.iter().map(condition).collect();
        format!("{}({}) → {result}", c.expression, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PolicySet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
        policy::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse(text: &str) -> Result<Suite, Vec<LocatedError>> {
        Suite::parse(&Source {
            path: "t_test.yaml".into(),
            text: text.to_string(),
        })
    }

    fn suite(text: &str) -> Suite {
        parse(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(text: &str) -> Vec<LocatedError> {
        match parse(text) {
            Ok(s) => panic!("accepted {s:?}"),
            Err(e) => e,
        }
    }

    const FIXTURES: &str = r#"
name: docs
now: "2026-11-23T10:00:00+01:00"
principals:
  alice: {sub: alice}
  bob: {sub: bob, roles: [editor]}
resources:
  doc: {type: document, id: d1, owner: alice}
contexts:
  night: {ip: 203.0.113.9, time: "2026-11-23T23:00:00+01:00"}
  office: {ip: 10.1.2.3}
"#;

    #[test]
    fn the_input_is_crossed_and_unlisted_checks_expect_deny() {
        let s = suite(&format!(
            "{FIXTURES}{}",
            r#"
tests:
  - name: t
    input:
      principals: [alice, bob]
      resources: [doc]
      actions: [view, edit]
      contexts: [office, night]
    expected:
      - principal: alice
        resource: doc
        actions: {view: allow, edit: allow}
      - principal: alice
        resource: doc
        context: night
        actions: {edit: deny}
      - principal: bob
        resource: doc
        context: office
        actions: {view: allow}
"#
        ));
        let planned: Vec<(String, Expect)> = s.tests[0]
            .checks
            .iter()
            .map(|c| (c.label.to_string(), c.expected))
            .collect();
        let want = [
            ("alice view doc [context office]", Expect::Allow),
            ("alice view doc [context night]", Expect::Allow),
            ("alice edit doc [context office]", Expect::Allow),
            // A context-specific entry wins over one for every context.
            ("alice edit doc [context night]", Expect::Deny),
            ("bob view doc [context office]", Expect::Allow),
            ("bob view doc [context night]", Expect::Deny),
            ("bob edit doc [context office]", Expect::Deny),
            ("bob edit doc [context night]", Expect::Deny),
        ];
        let want: Vec<(String, Expect)> = want.iter().map(|(l, e)| (l.to_string(), *e)).collect();
        assert_eq!(planned, want);

        // Against the shipped policies: alice's view at night is denied by working hours.
        let report = &s.run(&shipped(), None)[0];
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.label.to_string())
            .collect();
        assert_eq!(failed, ["alice view doc [context night]"]);
        let f = report.checks.iter().find(|c| !c.passed());
        let f = f.unwrap_or_else(|| panic!("no failure"));
        assert_eq!(
            f.decision.rule.as_deref(),
            Some("outside-hours-outside-office")
        );
        assert!(f.decision.explanation.is_some(), "failures are explained");
        let text = render(
            &Report {
                tests: vec![report.clone()],
                skipped: 0,
            },
            false,
        );
        assert!(
            text.contains("FAIL docs/t (1 of 8 checks failed)"),
            "{text}"
        );
        assert!(
            text.contains(
                "alice view doc [context night]: expected allow, got deny — denied by rule"
            ),
            "{text}"
        );
        assert!(
            text.contains("decided by policy working-hours (version 2026-11-23), rule outside-hours-outside-office"),
            "{text}"
        );
        assert!(text.ends_with("1 tests, 0 passed, 1 failed\n"), "{text}");
    }

    #[test]
    fn without_contexts_the_frozen_clock_decides() {
        let s = suite(&format!(
            "{FIXTURES}{}",
            r#"
tests:
  - name: office hours
    input: {principals: [alice, bob], resources: [doc], actions: [view, edit, delete]}
    expected:
      - {principal: alice, resource: doc, actions: {view: allow, edit: allow, delete: allow}}
      - {principal: bob, resource: doc, actions: {view: allow}}
"#
        ));
        let reports = s.run(&shipped(), None);
        assert_eq!(reports[0].checks.len(), 6);
        assert!(
            reports[0].passed(),
            "{}",
            render(
                &Report {
                    tests: reports.clone(),
                    skipped: 0
                },
                true
            )
        );
        assert!(reports[0]
            .checks
            .iter()
            .all(|c| c.decision.explanation.is_none()));
        let filter = Regex::new("^docs/night").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.run(&shipped(), Some(&filter)).is_empty());
    }

    #[test]
    fn names_are_checked_with_their_key_and_line() {
        let text = format!(
            "{FIXTURES}{}",
            r#"
tests:
  - name: t
    input:
      principals: [alice, eve]
      resources: [doc]
      actions: [view]
    expected:
      - principal: bob
        resource: doc
        actions: {view: allow, edit: allow}
  - name: t
    input: {principals: [alice], resources: [doc], actions: [view], contexts: [office]}
    expected:
      - {principal: alice, resource: doc, context: night, actions: {view: allow}}
      - {principal: alice, resource: doc, context: office, actions: {view: allow}}
      - {principal: alice, resource: doc, context: office, actions: {view: deny}}
"#
        );
        let e = errors(&text);
        let got: Vec<(String, String)> = e
            .iter()
            .map(|e| (e.key_path.clone(), e.message.clone()))
            .collect();
        let has = |key: &str, message: &str| {
            assert!(
                got.iter().any(|(k, m)| k == key && m.contains(message)),
                "{key}: {message} not in {got:#?}"
            )
        };
        has(
            "tests[0].input.principals[1]",
            "unknown principal \"eve\" (defined: alice, bob)",
        );
        has(
            "tests[0].expected[0].principal",
            "\"bob\" is not in this test's input.principals",
        );
        has(
            "tests[0].expected[0].actions.edit",
            "\"edit\" is not in this test's input.actions",
        );
        has("tests[1].name", "test name \"t\" is also used by tests[0]");
        has(
            "tests[1].expected[0].context",
            "\"night\" is not in this test's input.contexts",
        );
        has(
            "tests[1].expected[2].actions.view",
            "already expected by tests[1].expected[1]",
        );
        let eve = e.iter().find(|e| e.message.contains("eve"));
        let line = text.lines().position(|l| l.contains("eve")).map(|l| l + 1);
        assert_eq!(eve.and_then(|e| e.line), line);
        let dup = e
            .iter()
            .find(|e| e.key_path == "tests[1].name")
            .and_then(|e| e.line);
        let second = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("- name: t"))
            .nth(1)
            .map(|(i, _)| i + 1);
        assert_eq!(dup, second);
    }

    #[test]
    fn yaml_problems_carry_serde_lines() {
        let e = errors("name: x\ntests:\n  - name: t\n    inputs: {}\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(4), "{e:?}");
        assert!(e[0].message.contains("unknown field `inputs`"), "{}", e[0]);
        let e = errors("name: x\nprincipals:\n  a: {sub: a}\n  a: {sub: b}\ntests: []\n");
        assert!(e[0].message.contains("\"a\" is given twice"), "{}", e[0]);
        assert_eq!(e[0].key_path, "principals", "{}", e[0]);
        let e = errors(&format!(
            "{FIXTURES}tests:\n  - name: t\n    input: {{principals: [alice], resources: [doc], actions: [view]}}\n    expected:\n      - {{principal: alice, resource: doc, actions: {{view: allowed}}}}\n"
        ));
        assert!(
            e[0].message.starts_with("unknown variant `allowed`"),
            "{}",
            e[0]
        );
        assert_eq!(
            e[0].key_path, "tests[0].expected[0].actions.view",
            "{}",
            e[0]
        );
    }
}
