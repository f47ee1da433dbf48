//! `gatehouse-authz test DIR`: the real binary, run against the shipped policies and against small
//! policy directories written for each scenario.

use std::path::Path;
use std::process::Command;

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn authz_test(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse-authz"))
        .arg("test")
        .arg(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gatehouse-authz: {e}"));
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// A policy directory holding `files`.
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    dir
}

const NOTES_POLICY: &str = r#"
resource_policy:
  id: notes
  version: "7"
  resource: note
  rules:
    - name: authors-edit
      actions: [edit]
      effect: allow
      roles: [author]
    - name: everyone-reads
      actions: [read]
      effect: allow
      roles: ["*"]
"#;

const NOTES_FIXTURES: &str = r#"
name: notes
now: "2026-11-23T10:00:00+01:00"
principals:
  ann: {sub: ann, roles: [author]}
  rex: {sub: rex, roles: [reader]}
resources:
  note: {type: note, id: n1}
"#;

/// A suite whose first test is right and whose second expects the opposite of what the policy
/// says for two checks.
fn notes_suite() -> String {
    format!(
        "{NOTES_FIXTURES}{}",
        r#"
tests:
  - name: authors edit, everyone reads
    input: {principals: [ann, rex], resources: [note], actions: [read, edit]}
    expected:
      - {principal: ann, resource: note, actions: {read: allow, edit: allow}}
      - {principal: rex, resource: note, actions: {read: allow}}
  - name: wrong expectations
    input: {principals: [ann, rex], resources: [note], actions: [edit]}
    expected:
      - {principal: ann, resource: note, actions: {edit: deny}}
      - {principal: rex, resource: note, actions: {edit: allow}}
"#
    )
}

#[test]
fn the_shipped_policies_pass_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let run = authz_test(&dir, &[]);
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout
            .contains("PASS documents/owners and admins edit and delete, editors and owners view"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
    let summary = run.stdout.lines().last().unwrap_or_default();
    let tests = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS "))
        .count();
    assert!(tests >= 5, "{}", run.stdout);
    assert_eq!(summary, format!("{tests} tests, {tests} passed, 0 failed"));
}

#[test]
fn a_wrong_expectation_fails_naming_the_check_and_the_deciding_rule() {
    let dir = policy_dir(&[
        ("notes.yaml", NOTES_POLICY),
        ("notes_test.yaml", &notes_suite()),
    ]);
    let run = authz_test(dir.path(), &[]);
    assert_eq!(run.code, 1, "{}", run.output());
    let out = &run.stdout;
    assert!(
        out.contains("PASS notes/authors edit, everyone reads (4 checks)"),
        "{out}"
    );
    assert!(
        out.contains("FAIL notes/wrong expectations (2 of 2 checks failed)"),
        "{out}"
    );
    // ann is allowed by a rule: the check names it, and the rule is reported as deciding.
    assert!(
        out.contains(
            "ann edit note: expected deny, got allow — allowed by rule \"authors-edit\" of policy \"notes\""
        ),
        "{out}"
    );
    assert!(
        out.contains("decided by policy notes (version 7), rule authors-edit"),
        "{out}"
    );
    // rex is denied because nothing allows him; the trace says why the rule did not apply.
    assert!(
        out.contains("rex edit note: expected allow, got deny"),
        "{out}"
    );
    assert!(out.contains("decided by no rule"), "{out}");
    assert!(
        out.contains("allow notes/authors-edit: no matching role"),
        "{out}"
    );
    assert!(out.ends_with("2 tests, 1 passed, 1 failed\n"), "{out}");
    // Passing checks are listed only with -v.
    assert!(!out.contains("as expected"), "{out}");
    let verbose = authz_test(dir.path(), &["-v"]);
    assert_eq!(verbose.code, 1);
    assert!(
        verbose
            .stdout
            .contains("rex read note: allow, as expected — allowed by rule \"everyone-reads\""),
        "{}",
        verbose.stdout
    );
}

#[test]
fn run_selects_tests_by_suite_and_test_name() {
    let dir = policy_dir(&[
        ("notes.yaml", NOTES_POLICY),
        ("notes_test.yaml", &notes_suite()),
    ]);
    let run = authz_test(dir.path(), &["--run", "^notes/authors"]);
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout.contains("PASS notes/authors edit"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wrong expectations"), "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with("1 tests, 1 passed, 0 failed (1 not matching --run)\n"),
        "{}",
        run.stdout
    );

    let run = authz_test(dir.path(), &["--run", "wrong"]);
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(!run.stdout.contains("authors edit"), "{}", run.stdout);

    let run = authz_test(dir.path(), &["--run", "no such test"]);
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("no test matches"), "{}", run.stderr);
}

#[test]
fn an_invalid_run_pattern_is_a_usage_error() {
    let dir = policy_dir(&[
        ("notes.yaml", NOTES_POLICY),
        ("notes_test.yaml", &notes_suite()),
    ]);
    let run = authz_test(dir.path(), &["--run", "(unclosed"]);
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr.contains("is not a valid regular expression"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("PASS"), "{}", run.stdout);
}

#[test]
fn a_suite_naming_an_unknown_fixture_is_not_run() {
    let suite = format!(
        "{NOTES_FIXTURES}{}",
        r#"
tests:
  - name: eve is nobody
    input: {principals: [ann, eve], resources: [note], actions: [read]}
    expected: []
"#
    );
    let dir = policy_dir(&[("notes.yaml", NOTES_POLICY), ("notes_test.yaml", &suite)]);
    let run = authz_test(dir.path(), &[]);
    assert_eq!(run.code, 2, "{}", run.output());
    let line = suite
        .lines()
        .position(|l| l.contains("principals: [ann, eve]"))
        .map_or(0, |i| i + 1);
    assert!(
        run.stderr.contains(&format!(
            "notes_test.yaml:{line}: tests[0].input.principals[1]: unknown principal \"eve\""
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("PASS"), "{}", run.stdout);
}

#[test]
fn a_broken_policy_is_reported_with_its_line_and_nothing_runs() {
    let broken =
        "resource_policy:\n  id: broken\n  version: \"1\"\n  resource: note\n  rulez: []\n";
    let dir = policy_dir(&[
        ("notes.yaml", NOTES_POLICY),
        ("broken.yaml", broken),
        ("notes_test.yaml", &notes_suite()),
    ]);
    let run = authz_test(dir.path(), &[]);
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(
        run.stderr
            .contains("broken.yaml:5: resource_policy: unknown field `rulez`"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("PASS"), "{}", run.stdout);
}

#[test]
fn a_directory_without_suites_is_an_error() {
    let dir = policy_dir(&[("notes.yaml", NOTES_POLICY)]);
    let run = authz_test(dir.path(), &[]);
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("no policy tests"), "{}", run.stderr);
}
